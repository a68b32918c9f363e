"""Sharded search on Ray: each shard (vectors with ``id % n == j``) is held by one Ray actor.

Same contract and merge as :class:`~.sharded.ShardedSearcher`: every actor returns its own
top-k, the caller keeps the k best (score desc, id asc), which equals the unsharded exact result.
Shard actors can sit on different machines, so an index larger than one machine's memory can be
searched; the queries go out once per search (object store), the answers are (nq, k) per shard.
Ray is imported only when a searcher is made (``pip install 'zslretrieval[ray]'``).
"""
from __future__ import annotations

import numpy as np

from ...errors import IncompatibleError, InvalidInputError
from ...scoring import Searcher
from .sharded import merge_topk, shard_of


def import_ray():
    """The ``ray`` module; IncompatibleError naming the extra to install when it is missing."""
    try:
        import ray
    except ImportError as e:
        raise IncompatibleError(f"RayShardedSearcher needs Ray: pip install 'zslretrieval[ray]' ({e})") from e
    return ray


class ShardHolder:
    """Ray actor body: one searcher of the named backend."""

    def __init__(self, inner: str, dim: int, metric: str, kwargs: dict):
        from . import make_searcher

        self.s = make_searcher(inner, dim, metric, **kwargs)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> int:
        self.s.add(xb, ids)
        return self.s.ntotal

    def search(self, xq: np.ndarray, k: int):
        if self.s.ntotal == 0:
            return None
        return self.s.search(xq, min(k, self.s.ntotal))

    def rank_all(self, xq: np.ndarray):
        return self.s.rank_all(xq) if self.s.ntotal else None


class RayShardedSearcher(Searcher):
    """``shards`` Ray actors (``num_cpus`` / ``num_gpus`` each) holding one ``inner`` searcher each.

    Needs ``ray.init`` (or ``address=``) before use; ``close()`` kills the actors.
    """

    def __init__(self, dim: int, metric: str = "ip", *, shards: int = 4, inner: str = "faiss",
                 num_cpus: float = 1, num_gpus: float = 0, **inner_kwargs):
        super().__init__(dim, metric)
        if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
            raise InvalidInputError(f"shards={shards!r}; expected an integer >= 1")
        self._ray = ray = import_ray()
        if not ray.is_initialized():
            raise InvalidInputError("RayShardedSearcher needs a running Ray (ray.init(...) or ray.init(address=...))")
        Holder = ray.remote(ShardHolder)
        self.actors = [Holder.options(num_cpus=num_cpus, num_gpus=num_gpus).remote(inner, dim, metric, inner_kwargs)
                       for _ in range(int(shards))]
        self._n = [0] * len(self.actors)

    @property
    def ntotal(self) -> int:
        return sum(self._n)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = self._check(xb, "xb")
        ids = self._check_ids(ids, len(xb))
        where = shard_of(ids, len(self.actors))
        futs = {j: a.add.remote(xb[where == j], ids[where == j]) for j, a in enumerate(self.actors) if (where == j).any()}
        for j, n in zip(futs, self._ray.get(list(futs.values()))):
            self._n[j] = n

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        k = self._check_k(k)
        ref = self._ray.put(xq)
        parts = [p for p in self._ray.get([a.search.remote(ref, k) for a in self.actors]) if p is not None]
        if not parts:
            return np.full((len(xq), k), -np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
        return merge_topk(parts, k)

    def rank_all(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        ref = self._ray.put(xq)
        parts = [p for p in self._ray.get([a.rank_all.remote(ref) for a in self.actors]) if p is not None]
        if not parts:
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        return merge_topk(parts, self.ntotal)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
