"""Catalog and store transactions of one index folder: :class:`IndexWriter` (the use cases that
drive it -- indexing images or benchmark features -- are the ``zslretrieval.ingest`` package).

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

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import delete, select, update

from ..errors import DataNotFoundError, IncompatibleError
from ..features.images import ImageInfo
from ..features.pipeline import FileMeta
from ..fileio import atomic_write, file_digest
from .catalog import Base, Catalog, FeatureShard, ImageRow, IndexEntry, Manifest, chunked, entries_table, refresh_counts, utcnow
from .layout import (FEATURES_DIR, INDEX_FILE_GLOB, LOCATION_FILE, MODEL_FILE_GLOB, WriteLock, catalog_url,
                     index_file_name, load_index_model, model_file_name, read_location, write_location)
from .searchers.faiss_files import check_trainable, normalize_index_type, relabel_ids
from .space import embed_dim, to_index_space
from .store import FeatureStore
from .sync import sync_faiss

# (backbone, backbone weights id) -> the general model of that backbone if it is built, else None
GeneralModelOf = Callable[[str | None, str | None], object | None]


@dataclass
class ChunkItem:
    """One image or feature row to commit: where it came from and what was read."""

    path: str
    label: str | None
    meta: FileMeta | None
    info: ImageInfo | None = None   # date taken + size (image files); None leaves the row's as they are


class IndexWriter:
    """Exclusive write access to one index folder (flock), its catalog, store and FAISS file.

    ``general_model``: how to find the general model (``text.general.cached_general_model``) whose
    hubness-correction terms a raw-feature index stores; handed in by the ingestion use cases, which
    sit above ``text`` (the index layer imports no text model). Without it -- a repair on open or by
    ``zslr check --repair`` -- a raw-feature index's terms file is left as it is: the reader uses it
    only when it matches the entries and the general model, else computes the terms in memory.
    """

    def __init__(self, folder: Path, name: str | None = None, db: str | None = None, *, create: bool = True,
                 general_model: GeneralModelOf | None = None):
        self.folder, self.name = Path(folder), name or Path(folder).name
        self.general_model = general_model
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
            # (index type, seed, FAISS index) that choose_index_type built and tuned, for sync_index to write
            self._tuned: tuple[str, int, object] | None = None
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
        if index_type is not None:
            # a type set by hand (or re-chosen): an earlier --index-type auto record no longer describes the index
            from .autotune import CHOICE_FILE
            (self.folder / CHOICE_FILE).unlink(missing_ok=True)
        m = self.manifest()
        if m is not None and replace_derived and m.source != "images" and (
                m.feature_dim != feature_dim or m.backbone != backbone):
            self.reset()  # a benchmark gallery is derived data: re-create rather than refuse
            m = None
        if m is None:
            spec = normalize_index_type(index_type)
            check_trainable(spec, feature_dim, "ip", expected_n)  # fail before anything is written
            with self.catalog.write() as s:
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
        with self.catalog.write() as s:
            mm = s.get(Manifest, 1)
            if index_type is not None:
                spec = normalize_index_type(index_type)
                check_trainable(spec, mm.dim, mm.metric, mm.n_entries)
                if spec != mm.index_type and search_params is None:
                    mm.search_params = None  # the old type's nprobe / efSearch may not apply: new type's defaults
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
        for p in self.folder.glob(INDEX_FILE_GLOB):
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
        with self.catalog.write() as s:
            mm = s.get(Manifest, 1)
            mm.model_checkpoint, mm.model_sha256, mm.model_card = str(checkpoint.absolute()), sha, card.to_json()
            mm.metric, mm.dim = model.metric, dim
        self._remove_stale_models(keep=target.name)

    def clear_model(self) -> None:
        with self.catalog.write() as s:
            mm = s.get(Manifest, 1)
            mm.model_checkpoint = mm.model_sha256 = mm.model_card = None
            mm.metric, mm.dim = "ip", mm.feature_dim
        self._remove_stale_models(keep=None)

    def _remove_stale_models(self, keep: str | None) -> None:
        for p in self.folder.glob(MODEL_FILE_GLOB):
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

    def commit_chunk(self, ok: Sequence[ChunkItem], features: np.ndarray, failed: Sequence[tuple[ChunkItem, str]],
                     staged: Path | None = None) -> dict[str, int]:
        """One transaction: new/changed images with their feature rows, failures, counters.

        ``features`` (len(ok), feature_dim). An ok item whose content hash equals the committed
        one only has its size/mtime refreshed (a touched file is not re-added). ``staged``: a
        file in the store a worker already wrote ``features`` to; it becomes the shard (renamed)
        when every row is kept, and is deleted in any case.
        """
        features = np.ascontiguousarray(features, dtype=np.float32)
        if len(features) != len(ok):
            raise ValueError(f"{len(ok)} items but {len(features)} feature rows")
        stats = {"added": 0, "replaced": 0, "touched": 0, "failed": len(failed)}
        shard_path = None
        try:
            with self.catalog.write() as s:
                m = s.get(Manifest, 1)
                if features.size and features.shape[1] != m.feature_dim:
                    raise IncompatibleError(f"features are {features.shape[1]}-d; index {self.name!r} holds {m.feature_dim}-d")
                paths = [it.path for it in ok] + [it.path for it, _ in failed]
                rows: dict[str, ImageRow] = {}
                for part in chunked(paths):
                    rows.update({r.path: r for r in s.scalars(select(ImageRow).where(ImageRow.path.in_(part)))})
                # the counters change only through the rows of this chunk: their statuses before and after
                # give the exact change, where a recount of every row per commit made a run O(n^2 / chunk)
                before = Counter(r.status for r in rows.values())
                entries_delta = 0
                keep = []
                for j, it in enumerate(ok):
                    r = rows.get(it.path)
                    if r is not None and r.status == "ok" and it.meta and r.sha256 == it.meta.sha256:
                        r.size, r.mtime_ns, r.label = it.meta.size, it.meta.mtime_ns, it.label or r.label
                        _set_info(r, it.info)   # a new mtime may be the date when there is no EXIF one
                        stats["touched"] += 1
                        continue
                    stats["replaced" if r is not None and r.status == "ok" else "added"] += 1
                    if r is None:
                        r = rows[it.path] = ImageRow(path=it.path, created=utcnow())
                        s.add(r)
                    r.status, r.error, r.label = "ok", None, it.label if it.label is not None else r.label
                    if it.meta:
                        r.sha256, r.size, r.mtime_ns = it.meta.sha256, it.meta.size, it.meta.mtime_ns
                    _set_info(r, it.info)
                    keep.append(j)
                for it, why in failed:
                    r = rows.get(it.path)
                    if r is None:
                        r = rows[it.path] = ImageRow(path=it.path, created=utcnow())
                        s.add(r)
                    r.status, r.error, r.label = "failed", why, it.label if it.label is not None else r.label
                    r.taken_at = r.taken_at_source = r.width = r.height = None
                    if it.meta:
                        r.sha256, r.size, r.mtime_ns = it.meta.sha256, it.meta.size, it.meta.mtime_ns
                    else:
                        r.sha256 = r.size = r.mtime_ns = None
                s.flush()  # assigns image ids
                # Old entries go first (Core DELETE runs now), so the new ones never clash on image_id.
                # (touched images keep theirs)
                stale = [rows[ok[j].path].id for j in keep] + [rows[it.path].id for it, _ in failed]
                for part in chunked(stale):
                    entries_delta -= s.execute(delete(IndexEntry).where(IndexEntry.image_id.in_(part))).rowcount
                if keep:
                    shard_id = m.next_shard_id
                    shard_path = self.store.path(shard_id)
                    if staged is not None and len(keep) == len(ok):
                        fname, digest = self.store.adopt(staged, shard_id)
                    else:
                        fname, digest = self.store.write(shard_id, features[keep])
                    s.add(FeatureShard(id=shard_id, file=fname, rows=len(keep), sha256=digest, created=utcnow()))
                    s.flush()
                    base = int(m.next_faiss_id)
                    s.add_all(IndexEntry(faiss_id=base + k, image_id=rows[ok[j].path].id, shard_id=shard_id, row=k)
                              for k, j in enumerate(keep))
                    m.next_faiss_id, m.next_shard_id = base + len(keep), shard_id + 1
                    entries_delta += len(keep)
                s.flush()
                if None in (m.n_ok, m.n_failed, m.n_removed, m.n_entries):
                    refresh_counts(s, m)   # a manifest without counters yet: count once
                else:
                    change = Counter(r.status for r in rows.values())
                    change.subtract(before)
                    m.n_ok, m.n_failed = m.n_ok + change["ok"], m.n_failed + change["failed"]
                    m.n_removed += change["removed"]
                    m.n_images = m.n_ok + m.n_failed + m.n_removed
                    m.n_entries += entries_delta
                    m.updated = utcnow()
        except BaseException:
            if shard_path is not None:
                shard_path.unlink(missing_ok=True)  # the transaction rolled back: the shard is debris
            raise
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        return stats

    def set_labels(self, paths: Sequence[str], labels: Sequence[str | None]) -> None:
        """Give catalog rows at ``paths`` these labels (one transaction; unknown paths are ignored)."""
        with self.catalog.write() as s:
            current = dict(s.execute(select(ImageRow.path, ImageRow.label)).all())
            for p, lab in zip(paths, labels):
                if current.get(p, lab) != lab:
                    s.execute(update(ImageRow).where(ImageRow.path == p).values(label=lab))

    def missing_info(self) -> set[str]:
        """Paths of "ok" image rows without a date (rows a schema-2 zslr wrote), for :meth:`set_info`."""
        with self.catalog.session() as s:
            return set(s.scalars(select(ImageRow.path).where(ImageRow.status == "ok", ImageRow.taken_at_source.is_(None))))

    def set_info(self, infos: dict[str, ImageInfo]) -> None:
        """Store date taken and size of these catalog paths (one transaction; unknown paths ignored)."""
        with self.catalog.write() as s:
            for part in chunked(list(infos)):
                for r in s.scalars(select(ImageRow).where(ImageRow.path.in_(part))):
                    _set_info(r, infos[r.path])

    def mark_removed(self, paths: Sequence[str]) -> int:
        """Status "removed" and no index entry for ``paths`` (one transaction)."""
        if not paths:
            return 0
        with self.catalog.write() as s:
            for part in chunked(paths):
                ids = list(s.scalars(select(ImageRow.id).where(ImageRow.path.in_(part))))
                s.execute(delete(IndexEntry).where(IndexEntry.image_id.in_(ids)))
                s.execute(update(ImageRow).where(ImageRow.id.in_(ids))
                          .values(status="removed", error=None, updated=utcnow()))
            refresh_counts(s, s.get(Manifest, 1))
        return len(paths)

    # ------------------------------------------------------------------ FAISS
    def index_path(self, m: Manifest | None = None) -> Path:
        return self.folder / index_file_name(m or self.manifest())

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every index entry as int64 arrays (faiss_id, image_id, shard_id, row), sorted by faiss_id."""
        with self.catalog.session() as s:
            return tuple(np.asarray(a, np.int64) for a in entries_table(s))

    def sync_index(self, rebuild: bool = False, seed: int = 0) -> tuple[str, bool, int]:
        """Bring the FAISS file in line with the catalog entries (``sync.sync_faiss``).

        Returns (file name, rebuilt?, ntotal). Stale files of other settings are deleted.
        """
        m = self.manifest()
        path = self.index_path(m)
        fids, _, shard_ids, rows = self.entries()
        tuned, self._tuned = self._tuned, None
        built = tuned[2] if tuned is not None and tuned[:2] == (m.index_type, seed) else None
        rebuilt, ntotal = sync_faiss(path, m, fids, shard_ids, rows, lambda sh, r: self._vectors(sh, r, m),
                                     rebuild=rebuild, seed=seed, built=built)
        # Per-image correction terms: derived like the FAISS file, written after it (index/terms_file.py).
        from ..models.checkpoint import ModelCard
        from .terms_file import sync_terms
        general, raw = None, not m.model_sha256
        if raw and self.general_model is not None:   # the general model's terms, if that model is built already
            general = self.general_model(m.backbone, m.backbone_weights)
        sync_terms(self.folder, path.name, fids, lambda pos: self._vectors(shard_ids[pos], rows[pos], m),
                   ModelCard.from_json(m.model_card) if m.model_sha256 and m.model_card else None,
                   (lambda: load_index_model(self.folder, m)) if m.model_sha256 else None, m.metric, m.model_sha256,
                   general=general, keep_general=raw and self.general_model is None)
        return path.name, rebuilt, ntotal

    def choose_index_type(self, opts, *, seed: int = 0, log=None):
        """``--index-type auto``: choose and tune a FAISS type for the stored entries under the budgets of
        ``opts`` (``autotune.AutoIndexOptions``), make it the manifest's type and search parameters, and
        record the choice in :data:`autotune.CHOICE_FILE`. Call before :meth:`sync_index`, which writes
        the index tuned here (or builds it, should the entries have changed in between).

        Returns the ``autotune.IndexChoice``; InvalidInputError (nothing changed) when no type fits.
        """
        import json

        from .autotune import CHOICE_FILE, choose_index

        m = self.manifest()
        fids, _, shard_ids, rows = self.entries()
        x = self._vectors(shard_ids, rows, m) if len(rows) else np.zeros((0, m.dim), np.float32)
        choice = choose_index(x, m.metric, max_memory=opts.max_memory, max_query_ms=opts.max_query_ms,
                              recall_target=opts.recall_target, seed=seed, log=log)
        check_trainable(choice.index_type, m.dim, m.metric, len(x))
        with self.catalog.write() as s:
            mm = s.get(Manifest, 1)
            mm.index_type = normalize_index_type(choice.index_type)
            mm.search_params = choice.search_params or None
        built, choice.index = choice.index, None   # held here until written, not by the caller's report
        if built is not None:
            relabel_ids(built, fids)   # tuned under row numbers; x's rows are the entries in fids order
            self._tuned = (normalize_index_type(choice.index_type), seed, built)
        record = {"chosen": choice.to_dict(), "n_vectors": int(len(x)), "dim": int(m.dim), "metric": m.metric,
                  "budgets": {"max_memory_bytes": opts.max_memory, "max_query_ms": opts.max_query_ms,
                              "recall_target": opts.recall_target},
                  "chosen_at": utcnow().isoformat(timespec="seconds")}
        # a record of what was measured, not state: the manifest (committed above) is what search uses
        atomic_write(self.folder / CHOICE_FILE, lambda f: f.write(json.dumps(record, indent=1).encode()))
        return choice

    def _vectors(self, shard_ids, rows, m: Manifest) -> np.ndarray:
        raw = self.store.gather(shard_ids, rows, m.feature_dim)
        return to_index_space(raw, self.model(), m.metric)


def _set_info(r: ImageRow, info: ImageInfo | None) -> None:
    if info is not None:
        r.taken_at, r.taken_at_source, r.width, r.height = info.taken_at, info.taken_at_source, info.width, info.height
