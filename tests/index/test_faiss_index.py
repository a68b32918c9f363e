"""FAISS index types against the exact numpy reference; factory-string and training errors."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError
from zslretrieval.index.searchers.faiss_files import apply_search_params, build_index, index_ids, new_index, read_index, write_index
from zslretrieval.index.searchers import NumpySearcher
from zslretrieval.index.space import l2_normalize


def _data(n=500, d=24, nq=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((nq, d)).astype(np.float32)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_equals_numpy_brute_force(metric):
    xb, xq = _data()
    if metric == "ip":
        xb, xq = l2_normalize(xb), l2_normalize(xq)
    ids = np.random.default_rng(1).permutation(10_000)[: len(xb)].astype(np.int64) * 3 + 7  # explicit, not row order
    index = build_index("Flat", xb.shape[1], metric, xb, ids)
    D, I = index.search(xq, 20)
    if metric == "l2":
        D = -D  # searcher convention: negative squared distance
    ref = NumpySearcher(xb.shape[1], metric)
    ref.add(xb, ids)
    Dr, Ir = ref.search(xq, 20)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-4)


def test_ivf_trained_and_exact_when_probing_all_lists():
    xb, xq = _data(n=2000)
    xb, xq = l2_normalize(xb), l2_normalize(xq)
    ids = np.arange(len(xb), dtype=np.int64) + 100
    index = build_index("IVF16,Flat", xb.shape[1], "ip", xb, ids)
    assert index.is_trained and index.ntotal == 2000
    apply_search_params(index, "nprobe=16")
    D, I = index.search(xq, 10)
    ref = NumpySearcher(xb.shape[1], "ip")
    ref.add(xb, ids)
    Dr, Ir = ref.search(xq, 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    apply_search_params(index, "nprobe=1")
    _, I1 = index.search(xq, 10)
    assert 0 < np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I1, Ir)]) <= 1
    np.testing.assert_array_equal(np.sort(index_ids(index)), ids)


@pytest.mark.parametrize("spec", ["HNSW8", "IVF4,PQ4x4", "PQ6x4"])
def test_approximate_types_build_and_return_valid_ids(spec):
    xb, xq = _data(n=600)
    ids = np.arange(len(xb), dtype=np.int64) * 2
    index = build_index(spec, xb.shape[1], "l2", xb, ids)
    apply_search_params(index, None)
    D, I = index.search(xq, 5)
    assert set(I.ravel()) <= set(ids)
    assert (np.diff(D, axis=1) >= -1e-4).all()  # l2 distances ascending from faiss


def test_training_needs_enough_vectors():
    xb, _ = _data(n=50)
    with pytest.raises(InvalidInputError, match=r"IVF64,Flat.*at least 64 vectors.*has 50"):
        build_index("IVF64,Flat", xb.shape[1], "ip", xb, np.arange(50))
    with pytest.raises(InvalidInputError, match="at least 256"):
        build_index("PQ4", xb.shape[1], "ip", xb, np.arange(50))


def test_bad_factory_string_and_metric():
    with pytest.raises(InvalidInputError, match="'IVFx'"):
        new_index("IVFx", 8, "ip")
    with pytest.raises(InvalidInputError, match="cosine"):
        new_index("Flat", 8, "cosine")
    assert new_index("IDMap2,Flat", 8, "ip").d == 8  # a leading IDMap is not doubled


def test_atomic_write_roundtrip(tmp_path):
    xb, xq = _data(n=100)
    index = build_index("Flat", xb.shape[1], "ip", xb, np.arange(100, 200))
    p = tmp_path / "ix.faiss"
    write_index(index, p)
    assert [q.name for q in tmp_path.iterdir()] == ["ix.faiss"]  # no temp file left behind
    back = read_index(p)
    np.testing.assert_array_equal(index_ids(back), np.arange(100, 200))
    np.testing.assert_array_equal(back.search(xq, 3)[1], index.search(xq, 3)[1])
