"""Sharded search (threads) against the float64 reference: exact top-k merge == unsharded."""
from __future__ import annotations

import numpy as np
import pytest

from tests.index.searchers.test_searchers import assert_exact, data
from zslretrieval.errors import InvalidInputError
from zslretrieval.index.searchers import NumpySearcher, ShardedSearcher, make_searcher, merge_topk


def assert_bit_for_bit(s, ref: NumpySearcher, xq: np.ndarray, ks) -> None:
    """A sharded searcher ``s`` returns exactly the reference's ids and scores for every k in ``ks``,
    and its full ranking equals the reference's."""
    for k in ks:
        D, I = s.search(xq, k)
        Dr, Ir = ref.search(xq, k)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_array_equal(D, Dr)
    D, I = s.rank_all(xq)
    np.testing.assert_array_equal(I, ref.search(xq, ref.ntotal)[1])


def test_merge_topk_hand_worked():
    # shard A holds ids 7 (0.9), 3 (0.5); shard B holds 2 (0.9), 5 (0.1) and pads its 3rd slot
    A = (np.array([[0.9, 0.5]], np.float32), np.array([[7, 3]]))
    B = (np.array([[0.9, 0.1, -np.inf]], np.float32), np.array([[2, 5, -1]]))
    D, I = merge_topk([A, B], 3)
    np.testing.assert_array_equal(I, [[2, 7, 3]])          # tie 0.9: ascending id first
    np.testing.assert_array_equal(D, np.array([[0.9, 0.9, 0.5]], np.float32))
    D, I = merge_topk([A, B], 6)                           # more than the 4 vectors: padded
    np.testing.assert_array_equal(I, [[2, 7, 3, 5, -1, -1]])
    assert np.isneginf(D[0, 4:]).all()
    D, I = merge_topk([A], 1)
    np.testing.assert_array_equal(I, [[7]])


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("shards", [1, 3, 7])
def test_sharded_numpy_equals_reference_bit_for_bit(metric, shards):
    xb, xq, ids = data(n=400, d=16, nq=6, seed=shards)
    xb[200:210] = xb[0]                                    # exact ties spread over shards
    xq[0] = xb[0]
    ref = NumpySearcher(16, metric)
    ref.add(xb, ids)
    s = ShardedSearcher(16, metric, shards=shards, inner="numpy")
    s.add(xb[:150], ids[:150])
    s.add(xb[150:], ids[150:])
    assert s.ntotal == 400 and sum(x.ntotal > 0 for x in s.shards) == shards
    assert_bit_for_bit(s, ref, xq, (1, 5, 64, 400, 500))
    s.close()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_sharded_faiss_is_exact(metric):
    xb, xq, ids = data(n=900, d=24, nq=9, normalise=metric == "ip")
    s = make_searcher("sharded", 24, metric, shards=4, inner="faiss", device="cpu")
    s.add(xb, ids)
    for k in (1, 10, 100):
        D, I = s.search(xq, k)
        assert_exact(D, I, xq, xb, ids, metric, k)
    unsharded = make_searcher("faiss", 24, metric, device="cpu")
    unsharded.add(xb, ids)
    np.testing.assert_array_equal(s.search(xq, 10)[1], unsharded.search(xq, 10)[1])


def test_sharded_edge_cases():
    s = ShardedSearcher(4, "ip", shards=3, inner="numpy")
    D, I = s.search(np.ones((2, 4), np.float32), 3)        # empty
    assert (I == -1).all() and np.isneginf(D).all()
    s.add(np.eye(4, dtype=np.float32)[:1], np.array([5]))   # one vector: two shards stay empty
    D, I = s.search(np.ones((1, 4), np.float32), 2)
    np.testing.assert_array_equal(I, [[5, -1]])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidInputError, match="shards="):
            ShardedSearcher(4, shards=bad)
    with pytest.raises(InvalidInputError, match="nest"):
        ShardedSearcher(4, inner="sharded")
