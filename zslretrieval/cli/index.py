"""``zslr index`` (images or benchmark features -> FAISS + catalog) and ``zslr check``."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConsistencyError, InvalidInputError
from ..features import DEFAULT_BACKBONE

MAX_LISTED = 50


def _echo_err(msg: str) -> None:
    import sys

    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)  # keeps the progress bar intact


@click.command("index")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--file-list", type=click.Path(path_type=Path), help="Text file of image paths (one per line, optional TAB label).")
@click.option("--name", default="default", show_default=True, help="Index name (folder under the index root) or a folder path.")
@click.option("--index-root", type=click.Path(path_type=Path), help="Where indexes live [default: $ZSLR_INDEXES or ./indexes].")
@click.option("--db", help="SQLAlchemy URL of the catalog [default: sqlite file catalog.sqlite in the index folder].")
@click.option("--backbone", help=f"Feature extractor (efficientnet-lite0, resnet101) [default: the index's, else {DEFAULT_BACKBONE}].")
@click.option("--weights", type=click.Path(path_type=Path), help="Backbone weight file instead of the default offline weights.")
@click.option("--model", type=click.Path(path_type=Path), help="Embedding model checkpoint (zslr train): index its embeddings.")
@click.option("--no-model", is_flag=True, help="Drop the embedding model and index raw backbone features.")
@click.option("--index-type", help="FAISS factory string: Flat (exact, default), IVF256,Flat, IVF256,PQ32, HNSW32 ..., "
              "or auto: chosen for the collection size and the budgets below, tuned on held-out vectors.")
@click.option("--search-params", help="FAISS search parameters, e.g. nprobe=32 or efSearch=128 (rerank=100: re-score "
              "100 candidates exactly from the stored features).")
@click.option("--max-memory", help="With --index-type auto: RAM the FAISS index may take, e.g. 512M, 2G [default: no limit].")
@click.option("--max-query-ms", type=float, help="With --index-type auto: single-query latency budget in ms [default: none].")
@click.option("--recall-target", type=float, help="With --index-type auto: recall@10 to reach on held-out queries [default: 0.95].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--workers", type=int, help="Decoder processes [default: CUDA: cores - 1; CPU: cores // 4; at most 8].")
@click.option("--chunk-size", default=256, show_default=True, type=int, help="Images per catalog commit (a crash loses at most one chunk).")
@click.option("--prune", is_flag=True, help="Also remove catalog images outside the given folders whose files vanished "
              "(those under the given folders are removed on every run).")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB", help="Skip files and folders matching GLOB "
              "(repeatable): a name ('*.png', thumbs) or a path under the folder ('2019/*/raw'); indexed ones are removed.")
@click.option("--include-hidden", is_flag=True, help="Also index dot-named (hidden) files and folders.")
@click.option("--rehash", is_flag=True, help="Hash every file, not only those whose size or mtime changed.")
@click.option("--retry-failed", is_flag=True, help="Try files that failed before again even if unchanged.")
@click.option("--rebuild", is_flag=True, help="Rebuild the FAISS index from the stored features (no decoding).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Who decodes + encodes: this process, or a pool of Ray actors (pip install 'zslretrieval[ray]').")
@click.option("--ray-address", help="Ray cluster to join, e.g. ray://head:10001 or auto [default: start a local one].")
@click.option("--ray-actors", type=int, help="Ray encoder actors [default: one per GPU of the cluster, else one per CPU].")
@click.option("--features", "features_file", type=click.Path(path_type=Path), help="Add precomputed features made "
              "elsewhere: .npy (with --file-list), .npz (features, paths[, labels, backbone]) or .parquet (path, "
              "features[, label]; needs pyarrow); backbone and dimension must be the index's.")
@click.option("--dataset", help="Index a benchmark's features instead of images (e.g. awa1-lampert, AWA2).")
@click.option("--split", default="test", show_default=True, help="Benchmark rows: test (seen+unseen), test_unseen, test_seen, trainval, all.")
@click.option("--data-root", type=click.Path(path_type=Path), help="Benchmark data root [default: $ZSLR_DATA].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-chunk messages.")
def index_cmd(inputs, file_list, name, index_root, db, backbone, weights, model, no_model, index_type, search_params,
              max_memory, max_query_ms, recall_target, device, batch_size, workers, chunk_size, prune, exclude, include_hidden, rehash, retry_failed, rebuild, executor, ray_address,
              ray_actors, features_file, dataset, split, data_root, seed, quiet):
    """Index images (folders, recursively, or --file-list) or a benchmark's features (--dataset).

    Re-runs add only new or changed files and remove the catalog rows and vectors of files under the
    given folders that are gone (or now excluded); --prune also removes vanished files indexed from
    elsewhere. Symlinked folders are followed (each real folder once). With no input,
    re-indexes the stored features (e.g. --model CKPT, --index-type, --rebuild).
    """
    from ..ingest import DatasetIndexConfig, IndexConfig, index_dataset, index_images

    if features_file is not None:
        if inputs or dataset:
            raise InvalidInputError("--features adds a file of precomputed features; do not also give image folders "
                                    "or --dataset")
        from ..ingest import FeaturesIndexConfig, index_features_file

        rep = index_features_file(FeaturesIndexConfig(
            features=features_file, name=name, file_list=file_list, root=index_root, db=db, backbone=backbone,
            model=model, index_type=index_type, search_params=search_params))
        click.echo(f"added {rep.rows} precomputed {rep.feature_dim}-d {rep.backbone} feature rows to {rep.folder}: "
                   f"{rep.n_ok} image(s) ok, {rep.n_entries} vector(s)")
        return
    if dataset:
        if inputs or file_list:
            raise InvalidInputError("--dataset indexes benchmark features; do not also give image folders or --file-list")
        cfg = DatasetIndexConfig(dataset=dataset, split=split, name=name, root=index_root, db=db, data_root=data_root,
                                 model=model, index_type=index_type or "Flat", search_params=search_params,
                                 max_memory=max_memory, max_query_ms=max_query_ms, recall_target=recall_target, seed=seed)
        ix = index_dataset(cfg)
        m = ix.manifest
        click.echo(f"indexed {m.n_ok} {dataset} {split} feature rows into {m.folder} "
                   f"({m.dim}-d {m.metric}, {m.index_type}{', model ' + m.model_checkpoint if m.model_checkpoint else ''})")
        if index_type and index_type.strip().lower() == "auto":
            _echo_choice(m.folder)
        ix.close()
        return
    cfg = IndexConfig(inputs=list(inputs), file_list=file_list, name=name, root=index_root, db=db, backbone=backbone,
                      weights=weights, model=model, no_model=no_model, index_type=index_type, search_params=search_params,
                      max_memory=max_memory, max_query_ms=max_query_ms, recall_target=recall_target, device=device, batch_size=batch_size, workers=workers, chunk_size=chunk_size, prune=prune,
                      exclude=list(exclude), include_hidden=include_hidden,
                      rehash=rehash, retry_failed=retry_failed, rebuild=rebuild, executor=executor,
                      ray_address=ray_address, ray_actors=ray_actors, progress=not quiet,
                      log=None if quiet else _echo_err)
    r = index_images(cfg)
    if r.debris_removed:
        click.echo(f"removed {len(r.debris_removed)} uncommitted shard file(s) left by an interrupted run")
    for ws in r.walks:
        for path, why in ws.skipped[:MAX_LISTED]:
            click.echo(f"not walked: {path}: {why}")
        if len(ws.skipped) > MAX_LISTED:
            click.echo(f"  ... and {len(ws.skipped) - MAX_LISTED} more folder(s) not walked under {ws.root}")
        if not ws.images:
            click.echo(f"warning: {ws.why_empty()}")
    if r.scanned:
        click.echo(f"scanned {r.scanned} file(s): {r.added} added, {r.replaced} replaced, {r.touched} touched (same content), "
                   f"{r.unchanged} unchanged, {len(r.failures)} failed")
    if r.failures:
        click.echo(f"skipped {len(r.failures)} file(s) that could not be decoded:")
        for path, why in r.failures[:MAX_LISTED]:
            click.echo(f"  {path}: {why}")
        if len(r.failures) > MAX_LISTED:
            click.echo(f"  ... and {len(r.failures) - MAX_LISTED} more (status 'failed' in the catalog)")
    if r.gone or r.walks:
        click.echo(f"{len(r.gone)} removed (gone)" + (f", {len(r.deselected)} removed (excluded or hidden)" if r.deselected else ""))
    for path in (r.gone + r.deselected)[:MAX_LISTED]:
        click.echo(f"  removed: {path}")
    if r.vanished:
        verb = "removed" if r.pruned else "kept (use --prune to remove)"
        click.echo(f"{len(r.vanished)} indexed file(s) no longer exist outside the folders synced: {verb}")
    for root in r.empty_roots:
        click.echo(f"note: {root} holds no image now (an unmounted drive?): its indexed files were kept; "
                   f"--prune removes them")
    if r.encoded:
        startup = f" after {r.startup_seconds:.1f} s start-up" if r.startup_seconds else ""
        click.echo(f"encoded {r.encoded} image(s) in {r.encode_seconds:.1f} s ({r.images_per_s:.1f} img/s, "
                   f"{r.executor}){startup}")
    click.echo(f"index {r.name!r} at {r.folder}: {r.n_ok} image(s) ok, {r.n_failed} failed, {r.n_entries} vector(s) "
               f"in {r.index_file}{' (rebuilt)' if r.index_rebuilt else ''}")
    if r.index_choice is not None:
        _echo_choice(r.folder)


def _echo_choice(folder: Path) -> None:
    """What --index-type auto chose and measured (the record it left in the index folder), if it ran."""
    import json

    from ..index.autotune import CHOICE_FILE

    path = Path(folder) / CHOICE_FILE
    if not path.is_file():
        return
    rec = json.loads(path.read_text())
    c, b = rec["chosen"], rec["budgets"]
    recall = "exact" if c["index_type"] == "Flat" and not c["trials"] else f"recall@10 {c['recall_at_10']:.3f} on held-out vectors"
    ms = f", {c['query_ms']:.2f} ms/query" if c["query_ms"] is not None else ""
    mem = _size(b["max_memory_bytes"]) if b["max_memory_bytes"] else "none"
    latency = f"{b['max_query_ms']:g} ms" if b["max_query_ms"] else "none"
    click.echo(f"auto index type: {c['index_type']}{' ' + c['search_params'] if c['search_params'] else ''} for "
               f"{rec['n_vectors']:,} vectors: {recall}{ms}, ~{_size(c['memory_bytes'])} "
               f"(budgets: memory {mem}, query {latency}, recall target {b['recall_target']}); recorded in {path}")


def _size(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 1024:,.1f} KiB"


@click.command("check")
@click.option("--name", default="default", show_default=True, help="Index name or folder path.")
@click.option("--index-root", type=click.Path(path_type=Path), help="Where indexes live [default: $ZSLR_INDEXES or ./indexes].")
@click.option("--db", help="SQLAlchemy URL of the catalog, if not the one recorded in the index folder.")
@click.option("--repair", is_flag=True, help="Rebuild derived state (FAISS file, crash debris) now instead of at the next open.")
def check_cmd(name, index_root, db, repair):
    """Verify catalog, feature store and FAISS index agree.

    Exit 0 when they do, or when only derived state lags (the FAISS file is rebuilt from the
    feature store at the next open; --repair does it now); exit 3 listing real inconsistencies.
    """
    from ..index.check import check_index, repair_index

    rep = check_index(name, index_root, db=db)
    if repair and not rep.problems and (rep.repairable or rep.notes):
        rep = repair_index(name, index_root, db=db)
        for r in rep.summary.get("repaired", []):
            click.echo(f"repaired: {r}")
    for note in rep.notes:
        click.echo(f"note: {note}")
    for r in rep.repairable:
        click.echo(f"repairable: {r}")
    if not rep.ok:
        for p in rep.problems:
            click.echo(f"problem: {p}")
        if repair:
            click.echo("not repairing: catalog and feature store disagree; rebuilding the FAISS file from them would hide it")
        raise ConsistencyError(f"index {rep.name!r} at {rep.folder}: {len(rep.problems)} consistency problem(s)")
    s = rep.summary
    vectors = f"{s['ntotal']} vectors" if s["ntotal"] is not None else "no FAISS file yet"
    click.echo(f"ok: index {rep.name!r} at {rep.folder}: {s['n_ok']} image(s) ok ({s['n_failed']} failed, "
               f"{s['n_removed']} removed), {s['n_entries']} entries = {vectors}, "
               f"{s['feature_dim']}-d {s['backbone']} features -> {s['dim']}-d {s['metric']} {s['index_type']}")
    if rep.repairable:
        click.echo(f"the FAISS file lags the catalog (derived state): the next open or `zslr index --name {rep.name}` "
                   f"rebuilds it; `zslr check --name {rep.name} --repair` does it now")

