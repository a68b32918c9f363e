"""Sharded search: vectors split by id over several searchers, searched in parallel, merged exactly.

A vector with id ``i`` lives in shard ``i % n_shards``. A query asks every shard for its own
top-k and :func:`merge_topk` keeps the k best of the ``n_shards * k`` candidates. The global
top-k is contained in the union of the per-shard top-k lists, so with exact shards the result
is the unsharded result: the same scores, and ties broken by ascending id as in
:class:`~zslretrieval.scoring.NumpySearcher` (the float64 reference).

``ShardedSearcher`` runs the shards in threads of this process (FAISS and torch release the
GIL while they search); ``ray_sharded.RayShardedSearcher`` holds each shard in a Ray
actor, so shards can live in the memory of different machines.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...errors import InvalidInputError
from ...scoring import Searcher

_NO_ID = np.iinfo(np.int64).max   # sorts padding (-1) after every real id among -inf scores


def shard_of(ids: np.ndarray, n_shards: int) -> np.ndarray:
    """Shard number of each id: ``id % n_shards``."""
    return np.asarray(ids, np.int64) % n_shards


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact merge of per-shard results [(D (nq, k_s), I (nq, k_s))] into the best ``k`` per query.

    Sorted by score descending, then id ascending; ``-1`` / ``-inf`` pad where all shards together
    hold fewer than k vectors. Returns D (nq, k) float32, I (nq, k) int64.
    """
    if not parts:
        raise InvalidInputError("merge_topk needs the results of at least one shard")
    D = np.concatenate([np.asarray(d, np.float32) for d, _ in parts], axis=1)
    I = np.concatenate([np.asarray(i, np.int64) for _, i in parts], axis=1)
    D = np.where(I < 0, -np.inf, D).astype(np.float32)
    order = np.lexsort((np.where(I < 0, _NO_ID, I), -D), axis=-1)[:, :k]
    Dk, Ik = np.take_along_axis(D, order, 1), np.take_along_axis(I, order, 1)
    if Dk.shape[1] < k:  # fewer candidates than k in total
        pad = k - Dk.shape[1]
        Dk = np.concatenate([Dk, np.full((len(D), pad), -np.inf, np.float32)], 1)
        Ik = np.concatenate([Ik, np.full((len(I), pad), -1, np.int64)], 1)
    return Dk, Ik


class ShardedSearcher(Searcher):
    """``n_shards`` searchers of one backend (``inner``), searched by a thread pool.

    Args:
        dim, metric: see :class:`~.base.Searcher`.
        shards: number of shards (>= 1).
        inner: backend name for each shard (``"faiss"``, ``"numpy"``, ``"torch"``); other keyword
            arguments (``index_type``, ``device``, ...) go to each shard's constructor.
        threads: parallel searches (default: one per shard).
    """

    def __init__(self, dim: int, metric: str = "ip", *, shards: int = 4, inner: str = "faiss",
                 threads: int | None = None, **inner_kwargs):
        super().__init__(dim, metric)
        from . import make_searcher

        if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
            raise InvalidInputError(f"shards={shards!r}; expected an integer >= 1")
        if inner.lower() == "sharded":
            raise InvalidInputError("inner='sharded' would nest shards; accepted: faiss, numpy, torch")
        self.shards = [make_searcher(inner, dim, metric, **inner_kwargs) for _ in range(int(shards))]
        self.max_k = None if any(s.max_k is None for s in self.shards) else min(s.max_k for s in self.shards)
        self._pool = ThreadPoolExecutor(max_workers=threads or len(self.shards), thread_name_prefix="shard")

    @property
    def ntotal(self) -> int:
        return sum(s.ntotal for s in self.shards)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = self._check(xb, "xb")
        ids = self._check_ids(ids, len(xb))
        where = shard_of(ids, len(self.shards))
        for j, s in enumerate(self.shards):
            sel = np.flatnonzero(where == j)
            if len(sel):
                s.add(xb[sel], ids[sel])

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        k = self._check_k(k)
        live = [s for s in self.shards if s.ntotal]
        if not live:
            return np.full((len(xq), k), -np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
        return merge_topk(list(self._pool.map(lambda s: s.search(xq, min(k, s.ntotal)), live)), k)

    def rank_all(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        live = [s for s in self.shards if s.ntotal]
        if not live:
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        return merge_topk(list(self._pool.map(lambda s: s.rank_all(xq), live)), self.ntotal)

    def close(self) -> None:
        self._pool.shutdown(wait=False)
