"""Ingestion of image files: ``zslr index DIR... / --file-list F`` -> an index folder.

    index_images(IndexConfig(inputs=[Path("photos")], name="pets"))   # zslr index photos --name pets

The use case decides *what* to commit (new or changed files, removed paths), has an executor
(``distributed``: this process or Ray actors) decode and encode them, and drives an
:class:`~zslretrieval.index.writer.IndexWriter`, which owns the transactions. Crash safety
(kill -9 at any point), from the writer's order of writes:
1. a chunk's features go to a new shard file (atomic rename) *before* its catalog transaction;
2. the catalog transaction (image rows, index entries, shard row, manifest counters) is the
   commit point: an unlisted shard is debris and is deleted when the index is next written;
3. the FAISS file is derived and brought in line last (``index/sync.py``).
A re-run therefore skips every committed file (same path, size, mtime) and redoes at most the
chunk that was in flight, with no duplicates (paths are unique, entries are per image).

Sync: the catalog mirrors what the walked folders hold now. Catalog files under a folder given
again that are gone, or that the run's ``--exclude`` / hidden rule no longer takes, are marked
removed and lose their entries in one transaction before anything is encoded (the FAISS file
drops their ids at the sync that ends the run); files elsewhere that vanished are only reported,
and removed with ``--prune``. Files inside a folder the walk could not read are never counted as
gone. Each image's date taken and size (``features.images.image_info``, header only) are stored
with its row, and filled in for unchanged rows a schema-2 catalog holds without them.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from ..features import DEFAULT_BACKBONE
from ..features.discovery import ImageSource, Selection, WalkStats, scan
from ..features.images import image_info
from ..index.autotune import auto_options
from ..index.layout import index_folder
from ..index.writer import ChunkItem, IndexWriter
from ..limits import MAX_BATCH_SIZE, MAX_WORKERS, require_at_most
from .session import choose_index_type, open_writer


@dataclass
class IndexConfig:
    """Options of ``zslr index DIR... / --file-list F``; see :func:`index_images`."""

    inputs: list[Path] = field(default_factory=list)
    file_list: Path | None = None
    name: str = "default"
    root: Path | None = None
    db: str | None = None
    backbone: str | None = None          # None: the index's backbone, else DEFAULT_BACKBONE
    weights: Path | None = None
    model: Path | None = None            # embedding model checkpoint; None keeps the index's
    no_model: bool = False               # drop the embedding model: index raw features
    index_type: str | None = None        # FAISS factory string or "auto"; None keeps the index's (new: Flat)
    search_params: str | None = None     # e.g. "nprobe=32"; None keeps the index's
    max_memory: str | int | None = None  # index_type "auto": RAM budget of the FAISS index ("512M", bytes)
    max_query_ms: float | None = None    # index_type "auto": single-query latency budget
    recall_target: float | None = None   # index_type "auto": recall@10 to reach (None: 0.95)
    device: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    chunk_size: int = 256                # images per catalog transaction (a crash loses at most one)
    prune: bool = False                  # also remove vanished files outside the folders given
    exclude: list[str] = field(default_factory=list)   # globs of files / folders not to index (features.discovery.Selection)
    include_hidden: bool = False         # walk dot-named files and folders too
    rehash: bool = False                 # hash every file, not only those whose size/mtime changed
    retry_failed: bool = False
    rebuild: bool = False                # rebuild the FAISS file from the store
    executor: str = "local"              # who decodes + encodes: "local" (this process) or "ray"
    ray_address: str | None = None       # Ray cluster to join (None: start a local one)
    ray_actors: int | None = None        # Ray encoder actors (None: one per GPU, else per CPU)
    ray_max_restarts: int = 2            # restarts of a dead Ray actor (its partition is retried)
    progress: bool = False
    log: Callable[[str], None] | None = None


@dataclass
class IndexReport:
    name: str
    folder: Path
    scanned: int = 0
    added: int = 0
    replaced: int = 0
    touched: int = 0
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)   # gone files outside the folders walked (removed with prune)
    pruned: int = 0
    gone: list[str] = field(default_factory=list)       # files under the folders walked that are gone: removed
    deselected: list[str] = field(default_factory=list) # indexed files now excluded or hidden: removed
    walks: list[WalkStats] = field(default_factory=list)  # per folder: what was found and passed over
    empty_roots: list[str] = field(default_factory=list)  # folders found empty: their indexed files kept (unmounted?)
    dates_filled: int = 0                # unchanged rows given their date and size (catalog from schema 2)
    n_ok: int = 0
    n_failed: int = 0
    n_entries: int = 0
    index_file: str = ""
    index_rebuilt: bool = False
    index_choice: Any = None             # autotune.IndexChoice when --index-type auto chose the type
    debris_removed: list[str] = field(default_factory=list)
    encode_seconds: float = 0.0          # decode + encode + commit, without executor start-up
    startup_seconds: float = 0.0         # e.g. Ray cluster + actors + backbone loads
    executor: str = "local"
    seconds: float = 0.0
    encoded: int = 0

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


def index_images(cfg: IndexConfig) -> IndexReport:
    """Index image files (new or changed only), optionally prune vanished ones, update FAISS.

    With no inputs it re-indexes the stored features (``--model`` / ``--rebuild`` /
    ``--index-type``) without decoding any image.
    """
    from ..features.backbones import canonical_backbone, load_backbone, resolve_cpu_forward
    from ..features.pipeline import resolve_device

    t0 = time.perf_counter()
    log = cfg.log or (lambda msg: None)
    if cfg.chunk_size < 1:
        raise InvalidInputError(f"--chunk-size {cfg.chunk_size}; expected >= 1")
    require_at_most("--batch-size", cfg.batch_size, MAX_BATCH_SIZE, "images")  # before anything is written
    if cfg.workers is not None:
        require_at_most("--workers", cfg.workers, MAX_WORKERS, "processes")
    if cfg.model and cfg.no_model:
        raise InvalidInputError("--model and --no-model contradict each other; give one")
    auto = auto_options(cfg.index_type, cfg.search_params, cfg.max_memory, cfg.max_query_ms, cfg.recall_target)
    has_inputs = bool(cfg.inputs) or cfg.file_list is not None
    if has_inputs:
        resolve_cpu_forward()  # the encoders read $ZSLR_CPU_FORWARD only once the index folder exists
    # auto: the entries are written under the index's type (a new index: Flat), chosen once they are all in
    index_type = None if auto else cfg.index_type
    folder = index_folder(cfg.name, cfg.root)
    selection = Selection(tuple(cfg.exclude), cfg.include_hidden)
    disc = scan(cfg.inputs, cfg.file_list, selection) if has_inputs else None
    sources = disc.sources if disc else []
    if has_inputs:
        from ..distributed import make_executor

        executor = make_executor(cfg.executor, address=cfg.ray_address, actors=cfg.ray_actors,
                                 max_restarts=cfg.ray_max_restarts, log=log)
    report = IndexReport(cfg.name, folder, scanned=len(sources), walks=disc.walks if disc else [])
    for ws in report.walks:
        for path, why in ws.skipped:
            log(f"not walked: {path}: {why}")
    with open_writer(folder, cfg.name, cfg.db, create=has_inputs, resume=f"zslr index ... --name {cfg.name}") as w:
        report.debris_removed = w.removed_debris
        m = w.manifest()
        if m is None and not has_inputs:
            raise DataNotFoundError(f"index {cfg.name!r} has no manifest yet; give image folders to index first")
        backbone = None
        if has_inputs:
            name = canonical_backbone(cfg.backbone) if cfg.backbone else (m.backbone if m else DEFAULT_BACKBONE)
            if m is not None and m.source != "images":
                raise IncompatibleError(f"index {cfg.name!r} holds {m.source} features, not images; use another --name")
            # with a remote executor the driver's backbone only names dim and weights: keep it on the CPU
            device = resolve_device(cfg.device) if cfg.executor == "local" else "cpu"
            backbone = load_backbone(name, cfg.weights, device=device)
            w.init_manifest(source="images", backbone=backbone.name, backbone_weights=backbone.weights_id,
                            feature_dim=backbone.dim, index_type=index_type, search_params=cfg.search_params)
        else:
            w.init_manifest(source=m.source, backbone=m.backbone, backbone_weights=None, feature_dim=m.feature_dim,
                            index_type=index_type, search_params=cfg.search_params)
        if cfg.model:
            w.set_model(cfg.model)
        elif cfg.no_model:
            w.clear_model()

        if has_inputs:
            existing = w.existing()
            _sync_removals(w, existing, sources, disc, selection, cfg, report, log)
            todo: list[ImageSource] = []
            for src in sources:
                row = existing.get(src.path)
                if row is None or row[0] == "removed" or cfg.rehash or (cfg.retry_failed and row[0] == "failed"):
                    todo.append(src)
                    continue
                try:
                    st = os.stat(src.path)
                    same = (st.st_size, st.st_mtime_ns) == (row[1], row[2])
                except OSError:
                    same = False  # vanished since the walk: let the reader record why
                if same:
                    report.unchanged += 1
                else:
                    todo.append(src)
            _fill_missing_info(w, todo, sources, report, log)
            if todo:
                _encode_and_commit(w, todo, backbone, executor, cfg, report, log)
        if auto:
            report.index_choice = choose_index_type(w, auto, cfg.name, log)
            log(f"auto index: {report.index_choice.describe()}")
        report.index_file, report.index_rebuilt, report.n_entries = w.sync_index(rebuild=cfg.rebuild)
        mm = w.manifest()
        report.n_ok, report.n_failed = mm.n_ok, mm.n_failed
    if has_inputs:
        _prepare_text_queries(log)
    report.seconds = time.perf_counter() - t0
    return report


def _prepare_text_queries(log: Callable[[str], None]) -> None:
    """Export the sentence encoder's ONNX graph now (once per weight file), while torch is loaded for
    the backbone anyway: the first ``zslr query --text`` then starts in about a second instead of
    importing torch and transformers to export it. A missing encoder only leaves text queries to say so."""
    from ..errors import ZslrError
    from ..text.encoder import prepare_encoder

    t = time.perf_counter()
    try:
        prepare_encoder()
    except (ZslrError, ImportError, OSError) as e:
        log(f"text queries not prepared: {e}")
        return
    if time.perf_counter() - t > 1.0:
        log(f"prepared the text encoder for queries in {time.perf_counter() - t:.1f} s (once)")


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _sync_removals(w: IndexWriter, existing: dict, sources: list[ImageSource], disc, selection: Selection,
                   cfg: IndexConfig, report: IndexReport, log) -> None:
    """Remove (one transaction) the catalog files under the walked folders that are gone or no longer
    selected; report vanished files elsewhere, removing them too with ``cfg.prune``."""
    seen = {s.path for s in sources}
    # a folder that now holds no image at all (an unmounted drive's empty mount point) is not taken
    # as "every file deleted": its files are removed only with --prune
    report.empty_roots = [ws.root for ws in disc.walks if os.path.isdir(ws.root)
                          and not (ws.images or ws.excluded or ws.hidden or ws.skipped)]
    roots = [ws.root for ws in disc.walks if os.path.isdir(ws.root) and (cfg.prune or ws.root not in report.empty_roots)]
    if cfg.prune:
        report.empty_roots = []
    unwalked = [p for ws in disc.walks for p, _ in ws.skipped]
    for p, row in existing.items():
        if row[0] == "removed" or p in seen:
            continue
        root = next((r for r in roots if _under(p, r)), None)
        if root is None:
            if not os.path.lexists(p):
                report.vanished.append(p)
            continue
        if any(_under(p, u) for u in unwalked):
            continue  # in a folder this walk could not enter: unknown, not gone
        if not os.path.lexists(p):
            report.gone.append(p)
        elif selection.reason(os.path.relpath(p, root).replace(os.sep, "/"), root):
            report.deselected.append(p)
    for found in (report.gone, report.deselected, report.vanished):
        found.sort()
    drop = report.gone + report.deselected + (report.vanished if cfg.prune else [])
    if drop:
        w.mark_removed(drop)
        for p in drop:   # the rows as they are now: a removed file that comes back is added again
            existing[p] = ("removed",) + tuple(existing[p][1:])
        log(f"removed {len(report.gone)} gone, {len(report.deselected)} excluded or hidden"
            + (f", {len(report.vanished)} vanished elsewhere" if cfg.prune else "") + " file(s) from the catalog")
    if cfg.prune:
        report.pruned = len(report.vanished)


def _fill_missing_info(w: IndexWriter, todo: list[ImageSource], sources: list[ImageSource], report: IndexReport,
                       log) -> None:
    """Date and size of unchanged ok rows that have none (written before schema 3): header reads only."""
    missing = w.missing_info()
    if not missing:
        return
    redo = {s.path for s in todo}
    infos = {s.path: image_info(s.path) for s in sources if s.path in missing and s.path not in redo}
    if infos:
        w.set_info(infos)
        report.dates_filled = len(infos)
        log(f"stored the date taken and size of {len(infos)} image(s) indexed before schema 3")


def _encode_and_commit(w: IndexWriter, todo: list[ImageSource], backbone, executor, cfg: IndexConfig, report: IndexReport,
                       log) -> None:
    """Encode ``todo`` with ``executor`` and commit each partition it yields, in order."""
    from ..distributed import EncodeOptions

    paths = [s.path for s in todo]
    opts = EncodeOptions(weights=None if cfg.weights is None else str(cfg.weights), device=cfg.device,
                         batch_size=cfg.batch_size, workers=cfg.workers, chunk_size=cfg.chunk_size,
                         stage_dir=w.store.folder, progress=cfg.progress, desc=f"indexing {cfg.name}")
    t0 = time.perf_counter()
    for part in executor.run(paths, backbone, opts):
        # date taken + size from the header (a second, small read of a file just read: page cache)
        ok = [ChunkItem(paths[i], todo[i].label, m, image_info(paths[i], m.mtime_ns if m else None))
              for i in part.positions for m in (part.meta.get(int(i)),)]
        failed = [(ChunkItem(paths[i], todo[i].label, part.meta.get(i)), why) for i, why in part.failures]
        st = w.commit_chunk(ok, part.load_features(backbone.dim), failed, staged=part.staged)
        for k in ("added", "replaced", "touched"):
            setattr(report, k, getattr(report, k) + st[k])
        report.failures += [(it.path, why) for it, why in failed]
        report.encoded += len(ok)
        log(f"committed {len(ok)} ok + {len(failed)} failed ({part.stop}/{len(paths)})")
    report.startup_seconds = getattr(executor, "startup_seconds", 0.0)
    report.encode_seconds = time.perf_counter() - t0 - report.startup_seconds
    report.executor = executor.describe()
