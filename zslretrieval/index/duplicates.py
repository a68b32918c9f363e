"""Near-duplicate images of one index: ``zslr duplicates`` and ``GET /api/duplicates``.

Two images are near duplicates when the cosine similarity of their stored raw backbone features
(the feature store, not the embedding model's space: a zero-shot model maps whole classes
together, the backbone keeps the look of one photo) is at least ``threshold``. The search is
exact: the L2-normalised features go into a FAISS flat inner-product index, filled shard block by
shard block, and queried in blocks with ``range_search``, so memory is the n x feature_dim
float32 vectors plus one block of queries and the pairs found. Pairs are joined into groups by
connected components (a union-find: a resized copy of a cropped copy lands in the original's
group). A threshold so low that the pairs explode is refused instead of filling memory.

``DEFAULT_THRESHOLD`` was chosen with ``scripts/bench_duplicates.py`` on planted resized (50 %),
recompressed (JPEG quality 30) and cropped (85 % of each side) copies of 300 photos of the full
CUB-200-2011 folder (same-species birds: hard negatives), best F1, and checked unchanged on the
awa2, cub and sun photo folders (numbers in the script's docstring). It is a cosine of
efficientnet-lite0 features; another backbone may want another ``--threshold``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import select

from ..errors import InvalidInputError
from .catalog import ImageRow, chunked, entries_table
from .layout import FEATURES_DIR
from .store import FeatureStore

#: cosine of raw efficientnet-lite0 features; see the module docstring for how it was chosen
DEFAULT_THRESHOLD = 0.85
BLOCK = 4096                 # query vectors per range search (and vectors per add)
MAX_PAIRS = 20_000_000       # pairs above the threshold before the search is refused (~240 MB of pairs)


@dataclass(frozen=True)
class DuplicateMember:
    """One image of a group: catalog id, path, its best similarity to another member, pixel size."""

    id: int
    path: str
    similarity: float
    width: int | None = None
    height: int | None = None
    size: int | None = None      # bytes


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are near duplicates of each other; ``keep`` is the id of the one with the most
    pixels (then the largest file, then the lowest id): the likely original."""

    members: tuple[DuplicateMember, ...]
    keep: int

    def to_dict(self) -> dict:
        return {"keep": self.keep, "size": len(self.members),
                "members": [{"id": m.id, "path": m.path, "similarity": round(m.similarity, 6), "width": m.width,
                             "height": m.height, "bytes": m.size} for m in self.members]}


@dataclass
class DuplicateReport:
    """Every group of near duplicates among ``n_images`` entries, largest group first."""

    threshold: float
    n_images: int
    n_pairs: int
    groups: list[DuplicateGroup] = field(default_factory=list)

    @property
    def n_duplicates(self) -> int:
        """Images beyond the first of each group (what deleting all but ``keep`` would remove)."""
        return sum(len(g.members) - 1 for g in self.groups)

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "images": self.n_images, "pairs": self.n_pairs,
                "groups": [g.to_dict() for g in self.groups]}


@dataclass
class DuplicatesConfig:
    """Options of ``zslr duplicates``; see :func:`find_duplicates`."""

    index: str = "default"                # index name or folder
    root: str | os.PathLike | None = None
    db: str | None = None
    threshold: float = DEFAULT_THRESHOLD


def duplicates_from_config(cfg: DuplicatesConfig) -> DuplicateReport:
    """``zslr duplicates``: :func:`find_duplicates` with the options of ``cfg``."""
    return find_duplicates(cfg.index, cfg.root, threshold=cfg.threshold, db=cfg.db)


def check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not (0.0 < t <= 1.0) or not np.isfinite(t):
        raise InvalidInputError(f"--threshold {threshold!r}; expected a cosine similarity in (0, 1], "
                                f"e.g. {DEFAULT_THRESHOLD} (higher: only closer copies)")
    return t


def _normalized(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def duplicate_pairs(x_blocks, n: int, dim: int, threshold: float, *, block: int = BLOCK,
                    max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact pairs (i < j) of rows with cosine >= ``threshold``.

    ``x_blocks``: an iterable of (rows, dim) float32 blocks, n rows in all (normalised here).
    Returns (i (p,), j (p,), similarity (p,)) as int64, int64, float32, positions in row order.
    """
    from .searchers.faiss_files import faiss_module

    faiss = faiss_module()
    threshold = check_threshold(threshold)
    index = faiss.IndexFlatIP(dim)
    for xb in x_blocks:
        index.add(_normalized(xb))
    if index.ntotal != n:
        raise ValueError(f"{index.ntotal} vectors added, expected {n}")
    # float32 rounding: an exact copy scores 1 - 1e-7, so ask FAISS for a hair below the threshold
    radius = np.float32(threshold) - np.float32(1e-6)
    out_i, out_j, out_s, total = [], [], [], 0
    for start in range(0, n, block):
        q = index.reconstruct_n(start, min(block, n - start))
        lims, D, I = index.range_search(q, float(radius))
        rows = np.repeat(np.arange(start, start + len(q), dtype=np.int64), np.diff(lims).astype(np.int64))
        keep = (I > rows) & (D >= radius)       # each pair once; a row never pairs with itself
        total += int(keep.sum())
        if total > max_pairs:
            raise InvalidInputError(f"--threshold {threshold}: more than {max_pairs:,} pairs of images are that "
                                    f"similar (at row {start + len(q):,} of {n:,}); these are not near duplicates "
                                    f"but neighbours: raise --threshold (default {DEFAULT_THRESHOLD})")
        out_i.append(rows[keep])
        out_j.append(I[keep].astype(np.int64))
        out_s.append(np.minimum(D[keep], 1.0).astype(np.float32))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def group_pairs(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Connected components of the pair graph with more than one member: positions, each sorted."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(i) == 0:
        return []
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return [g for g in np.split(order, cuts) if len(g) > 1]


def find_duplicates(index, root: str | os.PathLike | None = None, *, threshold: float = DEFAULT_THRESHOLD,
                    db: str | None = None, block: int = BLOCK) -> DuplicateReport:
    """Groups of near-duplicate images of an index (a name, a folder, or an open ``OpenIndex``).

    Reads the raw features shard by shard from the feature store (see the module docstring).
    """
    from .reader import OpenIndex, open_index

    threshold = check_threshold(threshold)
    own = not isinstance(index, OpenIndex)
    ix = open_index(index, root, db=db, repair=False) if own else index  # reads the store only: never writes
    try:
        with ix.catalog.session() as s:
            _, img, shards, rows = (np.asarray(a, np.int64) for a in entries_table(s))
        # read shard by shard (each shard file once), in entry order within it
        order = np.lexsort((rows, shards))
        img, shards, rows = img[order], shards[order], rows[order]
        store, dim, n = FeatureStore(ix.folder / FEATURES_DIR), ix.manifest.feature_dim, len(img)
        blocks = (store.gather(shards[a:a + block], rows[a:a + block], dim) for a in range(0, n, block))
        pi, pj, sim = duplicate_pairs(blocks, n, dim, threshold, block=block)
        groups = group_pairs(n, pi, pj)
        best = np.zeros(n, np.float32)
        np.maximum.at(best, pi, sim)
        np.maximum.at(best, pj, sim)
        info = _image_rows(ix, [int(img[p]) for g in groups for p in g])
        out = []
        for g in groups:
            members = tuple(DuplicateMember(int(img[p]), *info[int(img[p])][:1], float(best[p]), *info[int(img[p])][1:])
                            for p in sorted(g, key=lambda p: img[p]))
            keep = max(members, key=lambda m: ((m.width or 0) * (m.height or 0), m.size or 0, -m.id)).id
            out.append(DuplicateGroup(members, keep))
        out.sort(key=lambda g: (-len(g.members), g.members[0].id))
        return DuplicateReport(threshold, n, int(len(pi)), out)
    finally:
        if own:
            ix.close()


def _image_rows(ix, ids: list[int]) -> dict[int, tuple]:
    """id -> (path, width, height, size) from the catalog."""
    out: dict[int, tuple] = {}
    with ix.catalog.session() as s:
        for part in chunked(sorted(set(ids))):
            q = select(ImageRow.id, ImageRow.path, ImageRow.width, ImageRow.height, ImageRow.size).where(ImageRow.id.in_(part))
            out.update({r[0]: tuple(r[1:]) for r in s.execute(q)})
    return out
