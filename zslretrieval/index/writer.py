"""Building and updating an index: images or precomputed features -> store + catalog + FAISS.

Crash safety (kill -9 at any point):
1. a chunk's features go to a new shard file (atomic rename) *before* its catalog transaction;
2. the catalog transaction (image rows, index entries, shard row, manifest counters) is the
   commit point: an unlisted shard is debris and is deleted when the index is next written;
3. the FAISS file is derived: it is named by a fingerprint of its settings and holds its own
   id list (IDMap2), so :meth:`IndexWriter.sync_index` compares it with the entries, removes
   stale ids and adds missing ones (or rebuilds it from the store when the type cannot remove,
   needs training or the settings changed), then replaces the file atomically.
A re-run therefore skips every committed file (same path, size, mtime) and redoes at most the
chunk that was in flight, with no duplicates (paths are unique, entries are per image).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from sqlalchemy import delete, select, update

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from ..features.images import ImageSource, discover
from ..features.pipeline import FileMeta
from ..fileio import file_digest
from .catalog import Base, Catalog, FeatureShard, ImageRow, IndexEntry, Manifest, chunked, entries_table, refresh_counts, utcnow
from .faiss_index import (fingerprint, index_file_name, index_ids, new_index, normalize_index_type, read_index,
                          train_index, write_index)
from .layout import FEATURES_DIR, LOCATION_FILE, WriteLock, catalog_url, index_folder, read_location, write_location
from .space import embed_dim, to_index_space
from .store import FeatureStore, atomic_write

TRAIN_SAMPLE = 200_000   # vectors used to train IVF/PQ quantizers (FAISS subsamples beyond 256/centroid anyway)
ADD_BATCH = 100_000      # vectors embedded + added per step, bounding memory on big rebuilds


def model_file_name(sha256: str) -> str:
    # named by content so a crash between copying and committing the manifest can't mismatch them
    return f"model-{sha256[:16]}.pt"


@dataclass
class ChunkItem:
    """One image or feature row to commit: where it came from and what was read."""

    path: str
    label: str | None
    meta: FileMeta | None


class IndexWriter:
    """Exclusive write access to one index folder (flock), its catalog, store and FAISS file."""

    def __init__(self, folder: Path, name: str | None = None, db: str | None = None, *, create: bool = True):
        self.folder, self.name = Path(folder), name or Path(folder).name
        if not create and not (self.folder / LOCATION_FILE).is_file():
            raise DataNotFoundError(f"index {self.name!r} not found in {self.folder.absolute()}; "
                                    f"create it with `zslr index DIR --name {self.name}`")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = WriteLock(self.folder)
        self.lock.acquire()
        try:
            loc = read_location(self.folder)
            if db and loc is not None and loc.get("db") != db:
                raise IncompatibleError(f"index {self.name!r} uses catalog {loc.get('db') or 'catalog.sqlite (default)'}; "
                                        f"--db {db!r} would point its feature store at another catalog")
            self.catalog = Catalog(catalog_url(self.folder, db), create=True)
            if loc is None:
                write_location(self.folder, db)
            self.store = FeatureStore(self.folder / FEATURES_DIR)
            self.removed_debris = self.cleanup()
            self._model_cache: tuple[str, object] | None = None
        except BaseException:
            self.lock.release()
            raise

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.catalog.close()
        self.lock.release()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cleanup(self) -> list[str]:
        """Delete shard files no committed transaction lists (the chunk in flight at a crash)."""
        with self.catalog.session() as s:
            listed = set(s.scalars(select(FeatureShard.file)))
        return self.store.remove_unlisted(listed)

    # ------------------------------------------------------------------ manifest
    def manifest(self) -> Manifest | None:
        return self.catalog.manifest()

    def init_manifest(self, *, source: str, backbone: str | None, backbone_weights: str | None, feature_dim: int,
                      index_type: str | None, search_params: str | None, replace_derived: bool = False,
                      expected_n: int = 0) -> Manifest:
        """Create the manifest, or check the existing one is compatible and apply new index settings."""
        m = self.manifest()
        if m is not None and replace_derived and m.source != "images" and (
                m.feature_dim != feature_dim or m.backbone != backbone):
            self.reset()  # a benchmark gallery is derived data: re-create rather than refuse
            m = None
        if m is None:
            spec = normalize_index_type(index_type)
            _check_trainable(spec, feature_dim, "ip", expected_n)  # fail before anything is written
            with self.catalog.Session.begin() as s:
                s.add(Manifest(id=1, source=source, backbone=backbone, backbone_weights=backbone_weights,
                               feature_dim=int(feature_dim), dim=int(feature_dim), metric="ip", index_type=spec,
                               search_params=search_params, created=utcnow(), updated=utcnow()))
            return self.manifest()
        if m.feature_dim != feature_dim or (backbone and m.backbone and m.backbone != backbone):
            raise IncompatibleError(
                f"index {self.name!r} holds {m.feature_dim}-d features of {m.backbone!r}; adding {feature_dim}-d "
                f"features of {backbone!r} would mix feature spaces; use another --name")
        if backbone_weights and m.backbone_weights and m.backbone_weights != backbone_weights:
            raise IncompatibleError(f"index {self.name!r} was built with {m.backbone} weights {m.backbone_weights!r}, "
                                    f"not {backbone_weights!r}; use the same --weights or another --name")
        with self.catalog.Session.begin() as s:
            mm = s.get(Manifest, 1)
            if index_type is not None:
                spec = normalize_index_type(index_type)
                _check_trainable(spec, mm.dim, mm.metric, mm.n_entries)
                mm.index_type = spec
            if search_params is not None:
                mm.search_params = search_params or None
            if replace_derived:
                mm.source = source
        return self.manifest()

    def reset(self) -> None:
        """Drop every table and derived file: an empty index folder (benchmark galleries only)."""
        Base.metadata.drop_all(self.catalog.engine)
        self.catalog.close()
        self.catalog = Catalog(self.catalog.url, create=True)
        self.store.remove_unlisted(set())
        for p in self.folder.glob("index-*.faiss"):
            p.unlink()

    # ------------------------------------------------------------------ model
    def set_model(self, checkpoint: str | os.PathLike) -> None:
        """Index ``model.embed_images(features)`` from now on (copied into the folder; FAISS rebuilt at sync)."""
        from ..models.checkpoint import load_checkpoint

        checkpoint = Path(checkpoint).expanduser()
        model, card, _ = load_checkpoint(checkpoint)
        m = self.manifest()
        if model.feature_dim != m.feature_dim:
            raise IncompatibleError(f"model {checkpoint} expects {model.feature_dim}-d features "
                                    f"({card.feature_source or card.dataset}); index {self.name!r} holds "
                                    f"{m.feature_dim}-d {m.backbone} features")
        sha = file_digest(checkpoint)
        target = self.folder / model_file_name(sha)
        if not target.is_file():
            atomic_write(target, lambda f: f.write(checkpoint.read_bytes()))
        dim = embed_dim(model, m.feature_dim)
        with self.catalog.Session.begin() as s:
            mm = s.get(Manifest, 1)
            mm.model_checkpoint, mm.model_sha256, mm.model_card = str(checkpoint.absolute()), sha, card.to_json()
            mm.metric, mm.dim = model.metric, dim
        self._remove_stale_models(keep=target.name)

    def clear_model(self) -> None:
        with self.catalog.Session.begin() as s:
            mm = s.get(Manifest, 1)
            mm.model_checkpoint = mm.model_sha256 = mm.model_card = None
            mm.metric, mm.dim = "ip", mm.feature_dim
        self._remove_stale_models(keep=None)

    def _remove_stale_models(self, keep: str | None) -> None:
        for p in self.folder.glob("model-*.pt"):
            if p.name != keep:
                p.unlink(missing_ok=True)

    def model(self):
        """The embedding model of the manifest (loaded from the folder's copy), or None."""
        m = self.manifest()
        if not m.model_sha256:
            return None
        if self._model_cache is None or self._model_cache[0] != m.model_sha256:
            self._model_cache = (m.model_sha256, load_index_model(self.folder, m)[0])
        return self._model_cache[1]

    # ------------------------------------------------------------------ catalog updates
    def existing(self) -> dict[str, tuple[str, int | None, int | None, str | None]]:
        """path -> (status, size, mtime_ns, sha256) of every catalog row."""
        with self.catalog.session() as s:
            rows = s.execute(select(ImageRow.path, ImageRow.status, ImageRow.size, ImageRow.mtime_ns, ImageRow.sha256))
            return {p: (st, sz, mt, h) for p, st, sz, mt, h in rows}

    def commit_chunk(self, ok: Sequence[ChunkItem], features: np.ndarray, failed: Sequence[tuple[ChunkItem, str]]) -> dict[str, int]:
        """One transaction: new/changed images with their feature rows, failures, counters.

        ``features`` (len(ok), feature_dim). An ok item whose content hash equals the committed
        one only has its size/mtime refreshed (a touched file is not re-added).
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(features) != len(ok):
            raise ValueError(f"{len(ok)} items but {len(features)} feature rows")
        stats = {"added": 0, "replaced": 0, "touched": 0, "failed": len(failed)}
        shard_path = None
        try:
            with self.catalog.Session.begin() as s:
                m = s.get(Manifest, 1)
                if features.size and features.shape[1] != m.feature_dim:
                    raise IncompatibleError(f"features are {features.shape[1]}-d; index {self.name!r} holds {m.feature_dim}-d")
                paths = [it.path for it in ok] + [it.path for it, _ in failed]
                rows: dict[str, ImageRow] = {}
                for part in chunked(paths):
                    rows.update({r.path: r for r in s.scalars(select(ImageRow).where(ImageRow.path.in_(part)))})
                keep = []
                for j, it in enumerate(ok):
                    r = rows.get(it.path)
                    if r is not None and r.status == "ok" and it.meta and r.sha256 == it.meta.sha256:
                        r.size, r.mtime_ns, r.label = it.meta.size, it.meta.mtime_ns, it.label or r.label
                        stats["touched"] += 1
                        continue
                    stats["replaced" if r is not None and r.status == "ok" else "added"] += 1
                    if r is None:
                        r = rows[it.path] = ImageRow(path=it.path, created=utcnow())
                        s.add(r)
                    r.status, r.error, r.label = "ok", None, it.label if it.label is not None else r.label
                    if it.meta:
                        r.sha256, r.size, r.mtime_ns = it.meta.sha256, it.meta.size, it.meta.mtime_ns
                    keep.append(j)
                for it, why in failed:
                    r = rows.get(it.path)
                    if r is None:
                        r = rows[it.path] = ImageRow(path=it.path, created=utcnow())
                        s.add(r)
                    r.status, r.error, r.label = "failed", why, it.label if it.label is not None else r.label
                    if it.meta:
                        r.sha256, r.size, r.mtime_ns = it.meta.sha256, it.meta.size, it.meta.mtime_ns
                    else:
                        r.sha256 = r.size = r.mtime_ns = None
                s.flush()  # assigns image ids
                # Old entries go first (Core DELETE runs now), so the new ones never clash on image_id.
                # (touched images keep theirs)
                stale = [rows[ok[j].path].id for j in keep] + [rows[it.path].id for it, _ in failed]
                for part in chunked(stale):
                    s.execute(delete(IndexEntry).where(IndexEntry.image_id.in_(part)))
                if keep:
                    shard_id = m.next_shard_id
                    shard_path = self.store.path(shard_id)
                    fname = self.store.write(shard_id, features[keep])
                    s.add(FeatureShard(id=shard_id, file=fname, rows=len(keep), created=utcnow()))
                    s.flush()
                    base = int(m.next_faiss_id)
                    s.add_all(IndexEntry(faiss_id=base + k, image_id=rows[ok[j].path].id, shard_id=shard_id, row=k)
                              for k, j in enumerate(keep))
                    m.next_faiss_id, m.next_shard_id = base + len(keep), shard_id + 1
                s.flush()
                refresh_counts(s, m)
        except BaseException:
            if shard_path is not None:
                shard_path.unlink(missing_ok=True)  # the transaction rolled back: the shard is debris
            raise
        return stats

    def mark_removed(self, paths: Sequence[str]) -> int:
        """Status "removed" and no index entry for ``paths`` (one transaction)."""
        if not paths:
            return 0
        with self.catalog.Session.begin() as s:
            for part in chunked(paths):
                ids = list(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(part))))
                s.execute(delete(IndexEntry).where(IndexEntry.image_id.in_(ids)))
                s.execute(update(ImageRow).where(ImageRow.id.in_(ids))
                          .values(status="removed", error=None, updated=utcnow()))
            refresh_counts(s, s.get(Manifest, 1))
        return len(paths)

    # ------------------------------------------------------------------ FAISS
    def index_path(self, m: Manifest | None = None) -> Path:
        m = m or self.manifest()
        return self.folder / index_file_name(fingerprint(m.index_type, m.dim, m.metric, m.model_sha256, m.backbone_weights))

    def sync_index(self, rebuild: bool = False, seed: int = 0) -> tuple[str, bool, int]:
        """Bring the FAISS file in line with the catalog entries: remove/add ids in place, or rebuild.

        Returns (file name, rebuilt?, ntotal). Stale files of other settings are deleted.
        """
        m = self.manifest()
        path = self.index_path(m)
        fids, _, shard_ids, rows = (np.asarray(a, np.int64) for a in entries_table(self.catalog.session()))
        index = None
        if path.is_file() and not rebuild:
            try:
                index = read_index(path)
            except RuntimeError:
                index = None  # unreadable (should not happen with atomic writes): rebuild
        changed, rebuilt = False, False
        if index is not None:
            have = index_ids(index)
            extra = np.setdiff1d(have, fids)
            if extra.size and index.d == m.dim and len(np.unique(have)) == len(have):
                # removed/replaced images: drop their vectors in place where the type allows it
                try:
                    if index.remove_ids(faiss.IDSelectorBatch(extra)) == extra.size:
                        have, extra, changed = index_ids(index), extra[:0], True
                except RuntimeError:  # e.g. HNSW cannot remove: rebuild below
                    pass
            if (index.d != m.dim or len(np.unique(have)) != len(have) or extra.size
                    or (not index.is_trained and len(fids))):
                index = None
            else:
                missing = ~np.isin(fids, have)
                if missing.any():
                    self._add_from_store(index, fids[missing], shard_ids[missing], rows[missing], m)
                    changed = True
        if index is None:
            index = self._build_from_store(m, fids, shard_ids, rows, seed)
            changed = rebuilt = True
        if changed or not path.is_file():
            write_index(index, path)
        for p in self.folder.glob("index-*.faiss"):
            if p.name != path.name:
                p.unlink(missing_ok=True)
        for p in self.folder.glob(".index-*.tmp"):
            p.unlink(missing_ok=True)
        return path.name, rebuilt, int(index.ntotal)

    def _vectors(self, shard_ids, rows, m: Manifest) -> np.ndarray:
        raw = self.store.gather(shard_ids, rows, m.feature_dim)
        return to_index_space(raw, self.model(), m.metric)

    def _add_from_store(self, index, fids, shard_ids, rows, m: Manifest) -> None:
        for i in range(0, len(fids), ADD_BATCH):
            sl = slice(i, i + ADD_BATCH)
            index.add_with_ids(self._vectors(shard_ids[sl], rows[sl], m), fids[sl])

    def _build_from_store(self, m: Manifest, fids, shard_ids, rows, seed: int):
        index = new_index(m.index_type, m.dim, m.metric)
        if not index.is_trained and len(fids):
            rng = np.random.default_rng(seed)
            sel = np.sort(rng.choice(len(fids), min(len(fids), TRAIN_SAMPLE), replace=False))
            train_index(index, m.index_type, self._vectors(shard_ids[sel], rows[sel], m), seed=seed)
        self._add_from_store(index, fids, shard_ids, rows, m)
        return index


def _check_trainable(spec: str, dim: int, metric: str, n: int) -> None:
    """Refuse a factory string that is invalid, or needs more training vectors than ``n`` (> 0)."""
    from .faiss_index import _min_train

    new_index(spec, dim, metric)
    if 0 < n < _min_train(spec):
        raise InvalidInputError(f"--index-type {spec!r} needs at least {_min_train(spec)} vectors to train, the index has "
                                f"{n}; use fewer lists/centroids (e.g. IVF{max(1, n // 39)},Flat) or the exact Flat")


def load_index_model(folder: Path, m: Manifest):
    """(model, card, class_semantics) from the folder's checkpoint copy named in the manifest."""
    from ..errors import ConsistencyError
    from ..models.checkpoint import load_checkpoint

    path = folder / model_file_name(m.model_sha256)
    if not path.is_file():
        raise ConsistencyError(f"index model copy missing: {path} (manifest names checkpoint {m.model_checkpoint}); "
                               f"re-run `zslr index --name {folder.name} --model {m.model_checkpoint}`")
    return load_checkpoint(path)


# ====================================================================== public API

@dataclass
class IndexConfig:
    """Options of ``zslr index DIR... / --file-list F``; see :func:`index_images`."""

    inputs: list[Path] = field(default_factory=list)
    file_list: Path | None = None
    name: str = "default"
    root: Path | None = None
    db: str | None = None
    backbone: str | None = None          # None: the index's backbone, else efficientnet-lite0
    weights: Path | None = None
    model: Path | None = None            # embedding model checkpoint; None keeps the index's
    no_model: bool = False               # drop the embedding model: index raw features
    index_type: str | None = None        # FAISS factory string; None keeps the index's (new: Flat)
    search_params: str | None = None     # e.g. "nprobe=32"; None keeps the index's
    device: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    chunk_size: int = 256                # images per catalog transaction (a crash loses at most one)
    prune: bool = False
    rehash: bool = False                 # hash every file, not only those whose size/mtime changed
    retry_failed: bool = False
    rebuild: bool = False                # rebuild the FAISS file from the store
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
    vanished: list[str] = field(default_factory=list)
    pruned: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_entries: int = 0
    index_file: str = ""
    index_rebuilt: bool = False
    debris_removed: list[str] = field(default_factory=list)
    encode_seconds: float = 0.0
    seconds: float = 0.0
    encoded: int = 0

    @property
    def images_per_s(self) -> float:
        return self.encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


DEFAULT_BACKBONE = "efficientnet-lite0"


def index_images(cfg: IndexConfig) -> IndexReport:
    """Index image files (new or changed only), optionally prune vanished ones, update FAISS.

    With no inputs it re-indexes the stored features (``--model`` / ``--rebuild`` /
    ``--index-type``) without decoding any image.
    """
    from ..features.backbones import canonical_backbone, load_backbone
    from ..features.pipeline import resolve_device

    t0 = time.perf_counter()
    log = cfg.log or (lambda msg: None)
    if cfg.chunk_size < 1:
        raise InvalidInputError(f"--chunk-size {cfg.chunk_size}; expected >= 1")
    if cfg.model and cfg.no_model:
        raise InvalidInputError("--model and --no-model contradict each other; give one")
    folder = index_folder(cfg.name, cfg.root)
    has_inputs = bool(cfg.inputs) or cfg.file_list is not None
    sources = discover(cfg.inputs, cfg.file_list) if has_inputs else []
    report = IndexReport(cfg.name, folder, scanned=len(sources))
    with IndexWriter(folder, cfg.name, cfg.db, create=has_inputs) as w:
        report.debris_removed = w.removed_debris
        m = w.manifest()
        if m is None and not has_inputs:
            raise DataNotFoundError(f"index {cfg.name!r} has no manifest yet; give image folders to index first")
        backbone = None
        if has_inputs:
            name = canonical_backbone(cfg.backbone) if cfg.backbone else (m.backbone if m else DEFAULT_BACKBONE)
            if m is not None and m.source != "images":
                raise IncompatibleError(f"index {cfg.name!r} holds {m.source} features, not images; use another --name")
            device = resolve_device(cfg.device)
            backbone = load_backbone(name, cfg.weights, device=device)
            w.init_manifest(source="images", backbone=backbone.name, backbone_weights=backbone.weights_id,
                            feature_dim=backbone.dim, index_type=cfg.index_type, search_params=cfg.search_params)
        else:
            w.init_manifest(source=m.source, backbone=m.backbone, backbone_weights=None, feature_dim=m.feature_dim,
                            index_type=cfg.index_type, search_params=cfg.search_params)
        if cfg.model:
            w.set_model(cfg.model)
        elif cfg.no_model:
            w.clear_model()

        if has_inputs:
            existing = w.existing()
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
            seen = {s.path for s in sources}
            report.vanished = sorted(p for p, row in existing.items()
                                     if row[0] != "removed" and p not in seen and not os.path.lexists(p))
            if todo:
                _encode_and_commit(w, todo, backbone, cfg, report, log)
            if cfg.prune and report.vanished:
                report.pruned = w.mark_removed(report.vanished)
                log(f"pruned {report.pruned} vanished file(s)")
        report.index_file, report.index_rebuilt, report.n_entries = w.sync_index(rebuild=cfg.rebuild)
        mm = w.manifest()
        report.n_ok, report.n_failed = mm.n_ok, mm.n_failed
    report.seconds = time.perf_counter() - t0
    return report


def _encode_and_commit(w: IndexWriter, todo: list[ImageSource], backbone, cfg: IndexConfig, report: IndexReport, log) -> None:
    from ..features.pipeline import iter_feature_batches

    paths = [s.path for s in todo]
    ok_items: list[ChunkItem] = []
    ok_feats: list[np.ndarray] = []
    failed: list[tuple[ChunkItem, str]] = []
    done = 0
    t0 = time.perf_counter()

    def commit() -> None:
        nonlocal ok_items, ok_feats, failed
        if not ok_items and not failed:
            return
        x = np.concatenate(ok_feats) if ok_feats else np.zeros((0, backbone.dim), np.float32)
        st = w.commit_chunk(ok_items, x, failed)
        for k in ("added", "replaced", "touched"):
            setattr(report, k, getattr(report, k) + st[k])
        report.failures += [(it.path, why) for it, why in failed]
        log(f"committed {len(ok_items)} ok + {len(failed)} failed ({done}/{len(paths)})")
        ok_items, ok_feats, failed = [], [], []

    for fb in iter_feature_batches(paths, backbone, batch_size=cfg.batch_size, device=cfg.device,
                                   workers=cfg.workers, progress=cfg.progress, desc=f"indexing {cfg.name}"):
        ok_items += [ChunkItem(paths[i], todo[i].label, fb.meta.get(int(i))) for i in fb.positions]
        ok_feats.append(fb.features)
        failed += [(ChunkItem(paths[i], todo[i].label, fb.meta.get(i)), why) for i, why in fb.failures]
        done += len(fb.positions) + len(fb.failures)
        report.encoded += len(fb.positions)
        if len(ok_items) + len(failed) >= cfg.chunk_size:
            commit()
    commit()
    report.encode_seconds = time.perf_counter() - t0


def index_features(name: str, features: np.ndarray, paths: Sequence[str], labels: Sequence[str | None], *,
                   model_checkpoint: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                   index_type: str = "Flat", backbone: str | None = None, db: str | None = None,
                   search_params: str | None = None, source: str = "features", chunk_size: int = 65536):
    """Make index ``name`` hold exactly these precomputed features (benchmark galleries).

    features (N, D) float32; ``paths`` N unique catalog paths (e.g. ``awa1-lampert/test/17``);
    ``labels`` N known class names or None. Rows already indexed with identical features are
    kept, others added or replaced; catalog rows not in ``paths`` are marked removed. With
    ``model_checkpoint`` the index holds ``model.embed_images(features)`` in the model's metric.
    Returns the :class:`OpenIndex`.
    """
    from .reader import open_index

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidInputError(f"features shape {x.shape}; expected (N, D)")
    paths, labels = [str(p) for p in paths], list(labels)
    if len(paths) != len(x) or len(labels) != len(x):
        raise InvalidInputError(f"{len(x)} feature rows but {len(paths)} paths and {len(labels)} labels")
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise InvalidInputError(f"duplicate catalog path {dup!r}; paths must be unique")
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size {chunk_size}; expected >= 1")
    _check_trainable(normalize_index_type(index_type), x.shape[1], "ip", len(x))  # before anything is written
    folder = index_folder(name, root)
    with IndexWriter(folder, name, db, create=True) as w:
        w.init_manifest(source=source, backbone=backbone or source, backbone_weights=None, feature_dim=x.shape[1],
                        index_type=index_type, search_params=search_params, replace_derived=True, expected_n=len(x))
        if model_checkpoint is not None:
            w.set_model(model_checkpoint)
        else:
            w.clear_model()
        existing = w.existing()
        hashes = [hashlib.sha256(row.tobytes()).hexdigest() for row in x]
        todo = [i for i, (p, h) in enumerate(zip(paths, hashes)) if existing.get(p, ("", None, None, None))[0] != "ok"
                or existing[p][3] != h]
        for part in range(0, len(todo), chunk_size):
            sel = todo[part:part + chunk_size]
            items = [ChunkItem(paths[i], labels[i], FileMeta(hashes[i], int(x[i].nbytes), 0)) for i in sel]
            w.commit_chunk(items, x[sel], [])
        # labels may change without the features changing
        with w.catalog.Session.begin() as s:
            current = dict(s.execute(select(ImageRow.path, ImageRow.label)).all())
            for p, lab in zip(paths, labels):
                if current.get(p, lab) != lab:
                    s.execute(update(ImageRow).where(ImageRow.path == p).values(label=lab))
        keep = set(paths)
        w.mark_removed([p for p, row in existing.items() if row[0] != "removed" and p not in keep])
        w.sync_index()
    return open_index(folder)


@dataclass
class DatasetIndexConfig:
    """Options of ``zslr index --dataset D``."""

    dataset: str
    split: str = "test"
    name: str | None = None              # default: "<dataset>-<split>"
    root: Path | None = None
    db: str | None = None
    data_root: Path | None = None
    model: Path | None = None
    index_type: str = "Flat"
    search_params: str | None = None
    seed: int = 0


DATASET_SPLITS = ("test", "test_unseen", "test_seen", "trainval", "all")


def dataset_rows(ds, split: str) -> np.ndarray:
    """Row indices of a benchmark split; "test" = test_seen + test_unseen (the GZSL gallery)."""
    if split == "all":
        return np.arange(len(ds.features))
    if split == "test":
        return np.sort(np.concatenate([ds.split_indices("test_seen"), ds.split_indices("test_unseen")]))
    if split not in DATASET_SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; valid: {', '.join(DATASET_SPLITS)}")
    return np.sort(np.asarray(ds.split_indices(split)))


def index_dataset(cfg: DatasetIndexConfig):
    """Index a benchmark's features (no images): catalog paths ``<dataset>/<split>/<row>``, label = class."""
    from ..data import load_dataset

    if cfg.split not in DATASET_SPLITS:
        raise InvalidInputError(f"unknown split {cfg.split!r}; valid: {', '.join(DATASET_SPLITS)}")
    ds = load_dataset(cfg.dataset, cfg.data_root, seed=cfg.seed)
    rows = dataset_rows(ds, cfg.split)
    paths = [f"{ds.name}/{cfg.split}/{int(r)}" for r in rows]
    labels = [ds.class_names[int(ds.labels[r])] for r in rows]
    return index_features(cfg.name or f"{ds.name}-{cfg.split}", ds.features[rows], paths, labels,
                          model_checkpoint=cfg.model, root=cfg.root, index_type=cfg.index_type, db=cfg.db,
                          search_params=cfg.search_params, backbone=f"dataset:{ds.name}",
                          source=f"dataset:{ds.name}/{cfg.split}")


def remove_index(name_or_path: str, root: str | os.PathLike | None = None) -> None:
    """Delete an index folder (catalog too when it is the default SQLite file)."""
    folder = index_folder(name_or_path, root)
    if folder.is_dir():
        shutil.rmtree(folder)
