"""``zslr query``: describe what you are looking for, get ranked images from an index."""
from __future__ import annotations

import click

_EPILOG = """\b
Examples:
  zslr index ./photos && zslr query --text "a striped animal in the water"   # no training needed
  zslr query --class okapi                        # any name, on an index of raw features
  zslr query --index awa1 --attributes stripes,water
  zslr query --index awa1 --attributes "black=0.5, white, -domestic" --top-k 20
  zslr query --index awa1 --class zebra --json
  zslr query --index photos --image cat.jpg --html out.html
  zslr query --index awa1 --batch queries.txt      # lines like 'class: zebra', 'attributes: stripes'
  zslr query --index mine --class zebra --general-weight 0.3   # model + general model, fused
  zslr query --class zebra --more-like 12,40 --less-like 7    # one round of relevance feedback
  zslr query --text "a dog on a beach" --folder ~/photos/2024 --after 2024-06-01 --min-score 0.5
  zslr query --class zebra --top-k 100 --format csv > zebra.csv   # also json, jsonl

Attribute names ignore case, spaces and _ - +; 'name=0.7' sets a weight, '-name' asks for
its absence (a negative weight). Unknown names exit with status 2 and suggestions.
On an index of raw features (`zslr index DIR` without --model) --text, --attributes and
--class take any words: the general model (built once from the backbone's ImageNet
classifier, offline) maps them into the image feature space; each result says what the
query was understood as.
"""


@click.command("query", epilog=_EPILOG)
@click.option("--text", "text", metavar="TEXT",
              help="Free text, e.g. 'a striped animal in the water' (raw-feature index or a text model).")
@click.option("--attributes", "attributes", metavar="LIST",
              help="Comma-separated attribute names: name, name=0.7, -name.")
@click.option("--class", "class_name", metavar="NAME", help="A class of the model's dataset, e.g. zebra.")
@click.option("--attribute-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="A descriptor: one number per line, CSV or a JSON list, one value per attribute.")
@click.option("--image", type=click.Path(dir_okay=False), metavar="PATH", help="Query by example image.")
@click.option("--batch", type=click.Path(dir_okay=False), metavar="FILE",
              help="Several queries, one per line: 'text: ...', 'attributes: ...', 'class: ...', 'image: ...'.")
@click.option("--index", "index", default="default", show_default=True, help="Index name or folder.")
@click.option("--index-root", type=click.Path(file_okay=False), default=None,
              help="Folder holding named indexes (default $ZSLR_INDEXES or ./indexes).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Backbone weight file, for --image on an index built with `zslr index --weights`.")
@click.option("--top-k", "top_k", type=int, default=10, show_default=True, help="Results per query.")
@click.option("--raw-scores", is_flag=True,
              help="Rank by the model's raw scores, without the per-image score correction (seen-class "
                   "bias, hubness) chosen on validation classes and recorded in the model card.")
@click.option("--general-weight", "general_weight", type=float, default=None, metavar="W",
              help="On an index with a model of its own: rank --text/--class/--attributes by "
                   "(1-W) x z(model score) + W x z(general-model score), z over the collection (0 < W <= 1). "
                   "Needs images indexed with an ImageNet backbone (efficientnet-lite0).")
@click.option("--more-like", "more_like", metavar="IDS", default=None,
              help="Relevance feedback: catalog ids of results that are right (e.g. 12,40); the query moves "
                   "toward them in the index's space (weights chosen on validation classes).")
@click.option("--less-like", "less_like", metavar="IDS", default=None,
              help="Relevance feedback: catalog ids of results that are wrong; the query moves away from them.")
@click.option("--path-glob", "path_glob", metavar="GLOB", default=None,
              help="Only images whose full path matches this pattern ('*' also crosses '/'), e.g. '*/2024/*.jpg'.")
@click.option("--folder", "folder", metavar="DIR", default=None, help="Only images under this folder.")
@click.option("--min-bytes", "min_bytes", metavar="SIZE", default=None,
              help="Only image files of at least this size in bytes (200k, 1.5M: powers of 1024).")
@click.option("--min-side", "min_side", type=int, metavar="PX", default=None,
              help="Only images whose shorter side has at least this many pixels.")
@click.option("--after", "taken_after", metavar="DATE", default=None,
              help="Only photos taken on or after this date (2024-05-01; EXIF date, else file time).")
@click.option("--before", "taken_before", metavar="DATE", default=None,
              help="Only photos taken on or before this date (a bare day includes the whole day).")
@click.option("--min-score", "min_score", type=float, metavar="P", default=None,
              help="Only results whose relevance (a calibrated value in [0, 1], comparable across queries: "
                   "the score's z over the collection through a logistic fitted on validation classes) is >= P.")
@click.option("--relevance", "relevance", is_flag=True,
              help="Add each result's relevance (as for --min-score) to the output.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "jsonl", "csv"]), default=None,
              help="Output: a table (default), one JSON object, JSON lines or CSV (one row per result).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table (= --format json).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML gallery to this file.")
def query_cmd(text, attributes, class_name, attribute_file, image, batch, index, index_root, weights, top_k, raw_scores,
              general_weight, more_like, less_like, path_glob, folder, min_bytes, min_side, taken_after, taken_before,
              min_score, relevance, fmt, as_json, html_path):
    """Rank the images of an index by a description, a class name or an example image."""
    from ..query import QueryConfig, QuerySpec, read_batch_file, run_query, write_html
    from ..query.feedback import parse_ids
    from ..query.filters import SearchFilter, parse_size
    from ..query.output import format_results

    specs: list[QuerySpec] = []
    if text is not None:
        specs.append(QuerySpec("text", text, "--text"))
    if attributes is not None:
        specs.append(QuerySpec("attributes", attributes, "--attributes"))
    if class_name is not None:
        specs.append(QuerySpec("class", class_name, "--class"))
    if attribute_file is not None:
        specs.append(QuerySpec("attribute-file", attribute_file, "--attribute-file"))
    if image is not None:
        specs.append(QuerySpec("image", image, "--image"))
    if batch is not None:
        specs.extend(read_batch_file(batch))
    where = SearchFilter(path_glob=path_glob, folder=folder, min_bytes=parse_size(min_bytes), min_side=min_side,
                         taken_after=taken_after, taken_before=taken_before)
    run = run_query(QueryConfig(specs=specs, index=index, index_root=index_root, top_k=top_k, weights=weights,
                                raw_scores=raw_scores, general_weight=general_weight,
                                more_like=parse_ids(more_like, "more-like"), less_like=parse_ids(less_like, "less-like"),
                                filter=where if where.active else None, min_score=min_score, relevance=relevance))
    many = batch is not None or len(specs) > 1
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} disagree; give one of them")
    click.echo(format_results(run.results, "json" if as_json else fmt or "table", index=run.index,
                              metric=run.metric, batch=many))
    if html_path:
        p = write_html(run.results, html_path, index=run.index, metric=run.metric)
        click.echo(f"wrote {p}", err=True)
