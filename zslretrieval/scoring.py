"""Exact similarity scoring and the searcher contract: what the metrics and the index both rank with.

``exact_scores`` and :class:`NumpySearcher` (the float64 brute-force reference) are the exact
ranking every fast path is tested against; :class:`Searcher` is the one interface of exact and
approximate nearest-neighbour search, implemented by the backends of ``index.searchers``. They sit
in this leaf (numpy only) so that ``metrics`` ranks without importing the index layer.

Short names (after faiss): ``xb`` (n, d) database vectors, ``xq`` (nq, d) queries, ``k``
neighbours, ``D`` (nq, k) scores, ``I`` (nq, k) int64 ids (-1 pads). Scores are similarities,
higher is better, for both metrics: ``"ip"`` inner product (callers L2-normalise for cosine) and
``"l2"`` *negative* squared Euclidean distance -- so that every consumer can sort descending
without knowing the metric.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .errors import InvalidInputError

METRICS = ("ip", "l2")


class Searcher(ABC):
    """Holds vectors with explicit int64 ids and answers k-NN queries."""

    #: largest k one ``search`` call can return (FAISS GPU: 2048); None = unlimited
    max_k: int | None = None

    def __init__(self, dim: int, metric: str = "ip"):
        if metric not in METRICS:
            raise InvalidInputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
        self.dim, self.metric = int(dim), metric

    @property
    @abstractmethod
    def ntotal(self) -> int: ...

    @abstractmethod
    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        """Add (n, d) float32 vectors under explicit (n,) int64 ids."""

    @abstractmethod
    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(nq, d) -> D (nq, k) float32 scores (desc), I (nq, k) int64 ids (-1 where fewer)."""

    def rank_all(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact full ranking of every stored vector: D, I of shape (nq, ntotal).

        Backends with a k cap must override this with an exact method; the default only works
        when ``search`` can return ``ntotal`` results.
        """
        if self.max_k is not None and self.ntotal > self.max_k:
            raise NotImplementedError(f"{type(self).__name__} caps k at {self.max_k} < ntotal={self.ntotal}")
        return self.search(xq, self.ntotal)

    def _check(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"{what} shape {x.shape}; expected (n, {self.dim})")
        if not np.isfinite(x).all():
            raise InvalidInputError(f"{what} contains NaN or inf; only finite vectors can be searched")
        return x

    def _check_ids(self, ids: np.ndarray, n: int) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.shape != (n,) or (n and not np.issubdtype(ids.dtype, np.integer)):
            raise InvalidInputError(f"ids shape {ids.shape} dtype {ids.dtype}; expected ({n},) integers")
        ids = ids.astype(np.int64, copy=False)
        if n and ids.min() < 0:
            raise InvalidInputError(f"negative id {int(ids.min())}; ids must be >= 0 (-1 marks padding)")
        return ids

    @staticmethod
    def _check_k(k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k={k!r}; expected an integer >= 1")
        return int(k)


def exact_scores(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """(nq, n) float64 similarity: inner product, or negative squared L2."""
    xq, xb = np.asarray(xq, np.float64), np.asarray(xb, np.float64)
    if metric == "ip":
        return xq @ xb.T
    return -(np.square(xq).sum(1)[:, None] - 2 * xq @ xb.T + np.square(xb).sum(1)[None, :])


class NumpySearcher(Searcher):
    """Exact brute force in float64 numpy: the reference every fast path is tested against.

    Ties are broken by ascending id, so its order is fully deterministic.
    """

    def __init__(self, dim: int, metric: str = "ip", *, index_type: str = "Flat", device: str | None = None):
        super().__init__(dim, metric)
        if index_type.lower() != "flat":
            raise InvalidInputError(f"numpy searcher is exact only: index_type {index_type!r}; accepted: 'Flat'")
        if device not in (None, "cpu", "auto"):
            raise InvalidInputError(f"numpy searcher runs on the CPU: device {device!r}; accepted: 'cpu'")
        self._xb = np.zeros((0, self.dim), np.float32)
        self._ids = np.zeros(0, np.int64)

    @property
    def ntotal(self) -> int:
        return len(self._ids)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = self._check(xb, "xb")
        ids = self._check_ids(ids, len(xb))
        self._xb = np.concatenate([self._xb, xb])
        self._ids = np.concatenate([self._ids, ids])

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        k = self._check_k(k)
        S = exact_scores(xq, self._xb, self.metric)
        # sort by (-score, id): lexsort's last key is primary
        order = np.stack([np.lexsort((np.broadcast_to(self._ids, row.shape), -row)) for row in S]) if len(S) else np.zeros((0, self.ntotal), np.int64)
        order = order[:, :k]
        D = np.full((len(xq), k), -np.inf, np.float32)
        I = np.full((len(xq), k), -1, np.int64)
        n = order.shape[1]
        D[:, :n] = np.take_along_axis(S, order, 1)
        I[:, :n] = self._ids[order]
        return D, I
