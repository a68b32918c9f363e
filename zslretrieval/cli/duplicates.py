"""``zslr duplicates``: groups of near-duplicate images in an index (``index.duplicates``)."""
from __future__ import annotations

from pathlib import Path

import click

FORMATS = ("text", "json", "jsonl", "csv")
CSV_COLUMNS = ("group", "id", "path", "similarity", "keep", "width", "height", "bytes")
# the default threshold lives in index/duplicates.py (numpy, FAISS); repeated here so --help stays light,
# and tests/index/test_duplicates.py checks the two agree
DEFAULT_THRESHOLD = 0.85

_EPILOG = """\b
Examples:
  zslr duplicates --index photos                 # groups, the likely original of each marked keep
  zslr duplicates --index photos --threshold 0.95 --format csv > dups.csv
  zslr duplicates --index photos --format jsonl   # one group per line
"""


@click.command("duplicates", epilog=_EPILOG)
@click.option("--index", "index", default="default", show_default=True, help="Index name or folder.")
@click.option("--index-root", type=click.Path(path_type=Path), help="Where indexes live [default: $ZSLR_INDEXES or ./indexes].")
@click.option("--db", help="SQLAlchemy URL of the catalog, if not the one recorded in the index folder.")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="Cosine similarity of the raw backbone features at or above which two images are near "
                   "duplicates (resized, recompressed, slightly cropped copies); higher: only closer copies.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text for reading; json (one object), jsonl (one group per line) or csv (one image per row).")
def duplicates_cmd(index, index_root, db, threshold, fmt):
    """Find groups of near-duplicate images (exact search over the stored features).

    In each group the image with the most pixels (then the largest file) is marked keep.
    """
    from ..index.duplicates import DuplicatesConfig, duplicates_from_config

    rep = duplicates_from_config(DuplicatesConfig(index=index, root=index_root, db=db, threshold=threshold))
    _write(rep, fmt)


def _write(rep, fmt: str) -> None:
    import json

    if fmt == "json":
        click.echo(json.dumps(rep.to_dict(), indent=1))
    elif fmt == "jsonl":
        for k, g in enumerate(rep.groups, 1):
            click.echo(json.dumps({"group": k, **g.to_dict()}))
    elif fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for k, g in enumerate(rep.groups, 1):
            for m in g.members:
                w.writerow((k, m.id, m.path, f"{m.similarity:.6f}", int(m.id == g.keep), m.width or "", m.height or "",
                            m.size if m.size is not None else ""))
        click.echo(buf.getvalue(), nl=False)
    else:
        for k, g in enumerate(rep.groups, 1):
            click.echo(f"group {k}: {len(g.members)} images")
            for m in g.members:
                size = f" {m.width}x{m.height}" if m.width else ""
                click.echo(f"  {'keep' if m.id == g.keep else '    '} #{m.id:<7} {m.similarity:.3f}{size}  {m.path}")
        click.echo(f"{len(rep.groups)} group(s) of near duplicates, {rep.n_duplicates} image(s) beyond the one to keep, "
                   f"among {rep.n_images} image(s) (cosine >= {rep.threshold:g} on the raw backbone features)")
