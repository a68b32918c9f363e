"""Keeping the FAISS file in line with the catalog: the one place that reads, patches or rebuilds it.

The FAISS file is derived data: named by the manifest's settings (``layout.index_file_name``) and
holding its own id list (IDMap2). :func:`faiss_is_current` compares those ids with the catalog's
entries (the reader asks before it serves a possibly stale file); :func:`sync_faiss` removes stale
ids and adds missing ones in place, or rebuilds the file from the feature store when the type
cannot remove, needs training or the settings changed, then replaces it atomically (the writer
calls it at the end of every write).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import Manifest
from .layout import INDEX_FILE_GLOB, INDEX_TEMP_GLOB
from .searchers.faiss_files import faiss_module, index_ids, new_index, read_index, train_index, write_index

TRAIN_SAMPLE = 200_000   # vectors used to train IVF/PQ quantizers (FAISS subsamples beyond 256/centroid anyway)
ADD_BATCH = 100_000      # vectors embedded + added per step, bounding memory on big rebuilds

# (shard_ids (n,), rows (n,)) -> (n, dim) float32 vectors in index space, read from the feature store.
VectorSource = Callable[[np.ndarray, np.ndarray], np.ndarray]


def faiss_is_current(path: Path, fids: np.ndarray) -> bool:
    """True when ``path`` exists, reads, and holds exactly the (sorted, unique) faiss ids ``fids``."""
    if not path.is_file():
        return False
    try:
        have = index_ids(read_index(path, mmap=True))
    except RuntimeError:
        return False
    return len(have) == len(fids) and np.array_equal(np.sort(have), fids)


def sync_faiss(path: Path, m: Manifest, fids: np.ndarray, shard_ids: np.ndarray, rows: np.ndarray,
               vectors: VectorSource, *, rebuild: bool = False, seed: int = 0, built: Any = None) -> tuple[bool, int]:
    """Make ``path`` hold exactly the entries ``fids`` (with their store locations); returns (rebuilt?, ntotal).

    ``built``: an index of the manifest's type already built from these entries (``--index-type
    auto`` tuned it: :func:`build_index_from` with ``seed`` over all but its held-out queries, which
    were added after), written instead of a second build when one is due and it holds exactly
    ``fids``. FAISS files of other settings and temp files in the folder are deleted afterwards.
    """
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
                if index.remove_ids(faiss_module().IDSelectorBatch(extra)) == extra.size:
                    have, extra, changed = index_ids(index), extra[:0], True
            except RuntimeError:  # e.g. HNSW cannot remove: rebuild below
                pass
        if (index.d != m.dim or len(np.unique(have)) != len(have) or extra.size
                or (not index.is_trained and len(fids))):
            index = None
        else:
            missing = ~np.isin(fids, have)
            if missing.any():
                _add_from_store(index, fids[missing], shard_ids[missing], rows[missing], vectors)
                changed = True
    if index is None:
        if built is not None and built.d == m.dim and np.array_equal(np.sort(index_ids(built)), fids):
            index = built
        else:
            index = _build_from_store(m, fids, shard_ids, rows, vectors, seed)
        changed = rebuilt = True
    if changed or not path.is_file():
        write_index(index, path)
    for p in path.parent.glob(INDEX_FILE_GLOB):
        if p.name != path.name:
            p.unlink(missing_ok=True)
    for p in path.parent.glob(INDEX_TEMP_GLOB):
        p.unlink(missing_ok=True)
    return rebuilt, int(index.ntotal)


def _add_from_store(index, fids: np.ndarray, shard_ids: np.ndarray, rows: np.ndarray, vectors: VectorSource) -> None:
    for i in range(0, len(fids), ADD_BATCH):
        sl = slice(i, i + ADD_BATCH)
        index.add_with_ids(vectors(shard_ids[sl], rows[sl]), fids[sl])


def _build_from_store(m: Manifest, fids: np.ndarray, shard_ids: np.ndarray, rows: np.ndarray, vectors: VectorSource,
                      seed: int):
    return build_index_from(m.index_type, m.dim, m.metric, fids, lambda at: vectors(shard_ids[at], rows[at]), seed=seed)


def build_index_from(spec: str, dim: int, metric: str, ids: np.ndarray, vectors_at: Callable[[Any], np.ndarray], *,
                     seed: int = 0) -> Any:
    """An index of ``spec`` holding n = len(ids) vectors, ``vectors_at(positions or slice)`` giving those
    at positions of ``ids``: trained on a seeded sample of at most TRAIN_SAMPLE of them, filled in
    ADD_BATCH steps. The one build procedure of FAISS files, also used by ``--index-type auto``'s
    tuning: the index it tunes is then the one the file holds, and need not be built again."""
    index = new_index(spec, dim, metric)
    n = len(ids)
    if not index.is_trained and n:
        rng = np.random.default_rng(seed)
        sel = np.sort(rng.choice(n, min(n, TRAIN_SAMPLE), replace=False))
        train_index(index, spec, vectors_at(sel), seed=seed)
    for i in range(0, n, ADD_BATCH):
        sl = slice(i, i + ADD_BATCH)
        index.add_with_ids(vectors_at(sl), ids[sl])
    return index
