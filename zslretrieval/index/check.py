"""``zslr check``: verify that catalog, feature store and FAISS index agree (read-only)."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from ..errors import DataNotFoundError
from .catalog import Catalog, FeatureShard, ImageRow, IndexEntry, count_status
from .layout import (FEATURES_DIR, INDEX_FILE_GLOB, catalog_url, index_file_name, index_folder, model_file_name,
                     require_index)
from .searchers.faiss_searcher import index_ids, read_index
from .store import FeatureStore


@dataclass
class CheckReport:
    name: str
    folder: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


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
            shards = {sid: (f, rows) for sid, f, rows in s.execute(select(FeatureShard.id, FeatureShard.file, FeatureShard.rows))}
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
    bad_rows, missing_shards = 0, set()
    by_shard: dict[int, list[int]] = {}
    for _, _, sid, row in entries:
        by_shard.setdefault(sid, []).append(row)
    for sid, rows in by_shard.items():
        if sid not in shards:
            P(f"entries reference shard {sid}, which the catalog does not list")
            continue
        fname, nrows = shards[sid]
        p = store.folder / fname
        if not p.is_file():
            missing_shards.add(fname)
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
    debris = sorted(store.files() - {f for f, _ in shards.values()})
    if debris:
        rep.notes.append(f"{len(debris)} uncommitted shard file(s) (crash debris, removed by the next `zslr index`): {debris[:3]}")

    # entries <-> FAISS
    ipath = folder / index_file_name(m)
    ntotal = None
    if not ipath.is_file():
        P(f"FAISS index file {ipath.name} for the manifest's settings is missing (run `zslr index --name {name}` to rebuild)")
    else:
        try:
            index = read_index(ipath)
        except RuntimeError as e:
            P(f"FAISS index {ipath.name} unreadable ({str(e).strip().splitlines()[-1]})")
            index = None
        if index is not None:
            ntotal = int(index.ntotal)
            if index.d != m.dim:
                P(f"FAISS index dim {index.d} != manifest dim {m.dim}")
            have = index_ids(index)
            want = np.asarray([f for f, _, _, _ in entries], np.int64)
            if ntotal != len(entries):
                P(f"FAISS index holds {ntotal} vectors; catalog has {len(entries)} entries")
            if len(np.unique(have)) != len(have):
                P(f"FAISS index holds {len(have) - len(np.unique(have))} duplicate id(s)")
            extra, lacking = np.setdiff1d(have, want), np.setdiff1d(want, have)
            if extra.size:
                P(f"FAISS index holds {extra.size} id(s) with no catalog entry (e.g. {extra[:5].tolist()})")
            if lacking.size:
                P(f"{lacking.size} catalog entr(y/ies) missing from the FAISS index (e.g. {lacking[:5].tolist()})")
    others = sorted(p.name for p in folder.glob(INDEX_FILE_GLOB) if p != ipath)
    if others:
        rep.notes.append(f"stale FAISS file(s) of other settings: {others}")
    if m.model_sha256 and not (folder / model_file_name(m.model_sha256)).is_file():
        P(f"model checkpoint copy {model_file_name(m.model_sha256)} missing (manifest names {m.model_checkpoint})")

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
