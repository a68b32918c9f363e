"""``zslr check``: verify that catalog, feature store and FAISS index agree.

Three kinds of findings:
  problems    real inconsistencies of the source of truth (catalog rows without features, entries
              pointing nowhere, shard checksum mismatches, counters off): exit 3;
  repairable  derived state behind the catalog (the FAISS file missing, stale, unreadable): the
              next open or ``zslr index`` rebuilds it from the feature store, ``--repair`` now;
  notes       harmless leftovers (crash debris, FAISS files of other settings, unverified shards).
Checking is read-only; :func:`repair_index` is the one writer.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from ..errors import ConsistencyError, DataNotFoundError
from ..fileio import file_digest
from .catalog import Catalog, FeatureShard, ImageRow, IndexEntry, count_status
from .layout import (FEATURES_DIR, INDEX_FILE_GLOB, catalog_url, index_file_name, index_folder, model_file_name,
                     require_index)
from .searchers.faiss_files import index_ids, read_index
from .store import FeatureStore


@dataclass
class CheckReport:
    name: str
    folder: Path
    problems: list[str] = field(default_factory=list)
    repairable: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No real inconsistency (derived state may still lag: see ``repairable``)."""
        return not self.problems

    @property
    def current(self) -> bool:
        """Nothing to repair either: catalog, store and FAISS file agree exactly."""
        return not self.problems and not self.repairable


def check_index(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, *, db: str | None = None) -> CheckReport:
    """Every ok image has exactly one entry, feature row and FAISS vector; no dangling ids; counts and dims match."""
    folder = index_folder(name_or_path, root)
    name = folder.name
    if not folder.is_dir():
        raise DataNotFoundError(f"index {str(name_or_path)!r} not found: {folder.absolute()} does not exist")
    require_index(folder, name)
    rep = CheckReport(name, folder)
    P = rep.problems.append
    cat = Catalog(catalog_url(folder, db), create=False)
    try:
        with cat.session() as s:
            m = cat.manifest(s)
            if m is None:
                P("catalog has no manifest row")
                return rep
            counts = count_status(s)
            ok_ids = set(s.scalars(select(ImageRow.id).where(ImageRow.status == "ok")))
            entries = s.execute(select(IndexEntry.faiss_id, IndexEntry.image_id, IndexEntry.shard_id, IndexEntry.row)).all()
            shards = {sid: (f, rows, sha) for sid, f, rows, sha in
                      s.execute(select(FeatureShard.id, FeatureShard.file, FeatureShard.rows, FeatureShard.sha256))}
            max_fid = s.scalar(select(func.max(IndexEntry.faiss_id)))
            max_shard = s.scalar(select(func.max(FeatureShard.id)))
    finally:
        cat.close()

    # catalog <-> entries
    per_image = Counter(img for _, img, _, _ in entries)
    no_entry = sorted(ok_ids - set(per_image))
    if no_entry:
        P(f"{len(no_entry)} ok image(s) without an index entry (ids {no_entry[:5]})")
    multi = sorted(i for i, c in per_image.items() if c > 1)
    if multi:
        P(f"{len(multi)} image(s) with more than one index entry (ids {multi[:5]})")
    dangling = sorted(set(per_image) - ok_ids)
    if dangling:
        P(f"{len(dangling)} index entr(y/ies) pointing at images that are not ok or do not exist (image ids {dangling[:5]})")
    if max_fid is not None and max_fid >= m.next_faiss_id:
        P(f"faiss id {max_fid} >= manifest next_faiss_id {m.next_faiss_id} (ids could be reused)")
    if max_shard is not None and max_shard >= m.next_shard_id:
        P(f"shard id {max_shard} >= manifest next_shard_id {m.next_shard_id}")

    # entries <-> feature store
    store = FeatureStore(folder / FEATURES_DIR)
    bad_rows, missing_shards, unverified = 0, set(), 0
    by_shard: dict[int, list[int]] = {}
    for _, _, sid, row in entries:
        by_shard.setdefault(sid, []).append(row)
    for sid, rows in by_shard.items():
        if sid not in shards:
            P(f"entries reference shard {sid}, which the catalog does not list")
            continue
        fname, nrows, sha = shards[sid]
        p = store.folder / fname
        if not p.is_file():
            missing_shards.add(fname)
            continue
        if sha is None:
            unverified += 1
        elif file_digest(p) != sha:
            P(f"feature shard {fname}: sha256 {file_digest(p)[:12]}... differs from the catalog's {sha[:12]}... "
              f"(the file changed after it was committed)")
            continue
        try:
            data = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            P(f"feature shard {fname} unreadable ({e})")
            continue
        if data.ndim != 2 or data.shape != (nrows, m.feature_dim):
            P(f"feature shard {fname} has shape {data.shape}; catalog says ({nrows}, {m.feature_dim})")
        bad_rows += sum(1 for r in rows if not 0 <= r < len(data))
        if len(rows) != len(set(rows)):
            P(f"feature shard {fname}: a row is referenced by several entries")
    if missing_shards:
        P(f"{len(missing_shards)} feature shard file(s) listed in the catalog are missing: {sorted(missing_shards)[:3]}")
    if bad_rows:
        P(f"{bad_rows} entr(y/ies) point past the end of their feature shard")
    if unverified:
        rep.notes.append(f"{unverified} feature shard(s) written before schema version 2 have no checksum (not verified)")
    debris = sorted(store.files() - {f for f, _, _ in shards.values()})
    if debris:
        rep.notes.append(f"{len(debris)} uncommitted shard file(s) (crash debris, removed by the next `zslr index`): {debris[:3]}")

    # entries <-> FAISS: the FAISS file is derived from entries + store, so whatever is wrong with
    # it is repairable (sync_index rebuilds it), never a loss of data
    R = rep.repairable.append
    ipath = folder / index_file_name(m)
    ntotal = None
    if not ipath.is_file():
        R(f"FAISS index file {ipath.name} for the manifest's settings is missing (derived: rebuilt from the feature store)")
    else:
        try:
            index = read_index(ipath, mmap=True)
        except RuntimeError as e:
            R(f"FAISS index {ipath.name} unreadable ({str(e).strip().splitlines()[-1]}); rebuilt from the feature store")
            index = None
        if index is not None:
            ntotal = int(index.ntotal)
            if index.d != m.dim:
                R(f"FAISS index dim {index.d} != manifest dim {m.dim}")
            have = index_ids(index)
            want = np.asarray([f for f, _, _, _ in entries], np.int64)
            if len(np.unique(have)) != len(have):
                R(f"FAISS index holds {len(have) - len(np.unique(have))} duplicate id(s)")
            extra, lacking = np.setdiff1d(have, want), np.setdiff1d(want, have)
            if extra.size:
                R(f"FAISS index still holds {extra.size} id(s) of removed or replaced images (e.g. {extra[:5].tolist()})")
            if lacking.size:
                R(f"FAISS index is behind the catalog: {lacking.size} entr(y/ies) not added yet (e.g. {lacking[:5].tolist()})")
    others = sorted(p.name for p in folder.glob(INDEX_FILE_GLOB) if p != ipath)
    if others:
        rep.notes.append(f"stale FAISS file(s) of other settings: {others}")
    mpath = folder / model_file_name(m.model_sha256) if m.model_sha256 else None
    if mpath is not None and not mpath.is_file():
        P(f"model checkpoint copy {mpath.name} missing (manifest names {m.model_checkpoint})")
    elif mpath is not None and file_digest(mpath) != m.model_sha256:
        P(f"model checkpoint copy {mpath.name}: sha256 differs from the manifest's {m.model_sha256[:12]}... (the file changed)")

    # manifest counters
    actual = {"n_ok": counts["ok"], "n_failed": counts["failed"], "n_removed": counts["removed"],
              "n_images": sum(counts.values()), "n_entries": len(entries)}
    for k, v in actual.items():
        if getattr(m, k) != v:
            P(f"manifest {k}={getattr(m, k)} but the catalog has {v}")
    rep.summary = {**actual, "ntotal": ntotal, "feature_dim": m.feature_dim, "dim": m.dim, "metric": m.metric,
                   "index_type": m.index_type, "backbone": m.backbone, "model": m.model_checkpoint,
                   "shards": len(shards), "index_file": ipath.name}
    return rep


def repair_index(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, *, db: str | None = None) -> CheckReport:
    """Rebuild derived state (FAISS file, crash debris) when :func:`check_index` finds only that; returns the check after.

    Refuses (:class:`ConsistencyError`) when there are real problems: rebuilding FAISS from a
    store that disagrees with the catalog would hide them.
    """
    from .writer import IndexWriter

    before = check_index(name_or_path, root, db=db)
    if before.problems:
        raise ConsistencyError(f"index {before.name!r}: {len(before.problems)} consistency problem(s), not repairing: "
                               + "; ".join(before.problems[:3]))
    with IndexWriter(before.folder, before.name, db, create=False) as w:  # removes crash debris on open
        w.sync_index()
    after = check_index(name_or_path, root, db=db)
    after.summary["repaired"] = before.repairable
    return after
