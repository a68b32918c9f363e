"""Every entry of an index in its search space, read once, for the searches that score a chosen set.

Relevance feedback needs the marked images' vectors, a filtered search scores exactly the
allowed images, and the relevance scale needs the collection's score moments: all read the
index-space vectors (``index.space.to_index_space`` of the stored features, the same vectors the
FAISS file holds) through one :class:`Gallery`, built on first use and kept per open index.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

from ..errors import InvalidInputError
from .protocols import SearchableIndex

# id(index) -> (weak reference to it, its gallery): by identity, so unhashable index objects work too;
# an entry goes when its index is collected
_CACHE: dict[int, tuple[weakref.ref, "Gallery"]] = {}
_LOCK = threading.Lock()


class Gallery:
    """Image ids (n,) ascending, their vectors (n, E) float32 in index space, and the metric."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, metric: str):
        order = np.argsort(ids, kind="stable")
        self.ids = np.asarray(ids, np.int64)[order]
        self.vectors = np.ascontiguousarray(np.asarray(vectors, np.float32)[order])
        self.metric = metric

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self, ids, what: str = "image id") -> np.ndarray:
        """Positions of catalog image ``ids`` in the gallery; InvalidInputError naming any id it lacks."""
        want = np.asarray(list(ids), np.int64).ravel()
        pos = np.clip(np.searchsorted(self.ids, want), 0, max(len(self.ids) - 1, 0))
        ok = (pos < len(self.ids)) & (self.ids[pos] == want) if len(self.ids) else np.zeros(len(want), bool)
        if not ok.all():
            bad = [int(i) for i in want[~ok][:5]]
            raise InvalidInputError(f"{what}(s) {bad} are not entries of this index; give catalog ids of its "
                                    "results (the 'id' of each hit)")
        return pos

    def scores(self, xq: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """(Q, E) queries x the gallery (or its ``rows``) -> (Q, m) float64 raw scores: inner product
        for "ip", negative squared distance for "l2" (what ``OpenIndex.search`` returns)."""
        x = self.vectors if rows is None else self.vectors[rows]
        q = np.asarray(xq, np.float64)
        s = q @ x.T.astype(np.float64)
        if self.metric == "l2":
            s = 2.0 * s - np.square(x.astype(np.float64)).sum(1)[None, :] - np.square(q).sum(1)[:, None]
        return s


def gallery_of(index: SearchableIndex) -> Gallery:
    """The :class:`Gallery` of ``index``, built once per open index object (thread-safe)."""
    key = id(index)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0]() is index:
        return hit[1]
    from ..index.space import to_index_space

    ids, raw = index.raw_features()
    loaded = index.model()
    x = to_index_space(np.asarray(raw, np.float32), loaded[0] if loaded is not None else None, index.manifest.metric)
    g = Gallery(np.asarray(ids, np.int64), x, index.manifest.metric)
    with _LOCK:
        _CACHE[key] = (weakref.ref(index, lambda _r, key=key: _CACHE.pop(key, None)), g)
    return g
