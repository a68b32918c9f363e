"""Every backend against the float64 brute-force reference (NumpySearcher)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import IncompatibleError, InvalidInputError, UnknownNameError
from zslretrieval.index import searchers as S
from zslretrieval.index.searchers import (FaissSearcher, NumpySearcher, TorchSearcher, exact_scores, make_searcher,
                                          searcher_factory)
from zslretrieval.index.searchers import faiss_searcher as FS

BACKENDS = [
    ("faiss", {"device": "cpu"}),
    ("torch", {"device": "cpu", "dtype": "fp16"}),
    ("torch", {"device": "cpu", "dtype": "bf16"}),
    ("torch", {"device": "cpu", "dtype": "fp32"}),
    ("numpy", {}),
]
IDS = [f"{n}-{kw.get('dtype', '')}" for n, kw in BACKENDS]


def data(n=600, d=24, nq=9, seed=0, normalise=False):
    rng = np.random.default_rng(seed)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    if normalise:
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    ids = np.sort(rng.choice(10 ** 9, size=n, replace=False))[rng.permutation(n)].astype(np.int64)  # gaps, any order
    return xb, xq, ids


def assert_exact(D, I, xq, xb, ids, metric, k, tol=1e-4):
    """(D, I) is an exact top-k: same sorted scores as the reference, every id carries its own true
    score, no id twice, -1/-inf exactly where the reference pads. Ids may differ only within ties."""
    ref = NumpySearcher(xb.shape[1], metric)
    ref.add(xb, ids)
    Dr_ext, Ir_ext = ref.search(xq, k + 1)  # the (k+1)-th decides ties at the boundary
    Dr, Ir = Dr_ext[:, :k], Ir_ext[:, :k]
    assert D.shape == I.shape == (len(xq), k) and D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_array_equal(I == -1, Ir == -1)
    assert np.all(np.isneginf(D[I == -1]))
    valid = I >= 0
    scale = 1 + np.abs(Dr[valid]).max() if valid.any() else 1
    np.testing.assert_allclose(D[valid], Dr[valid], atol=tol * scale)
    true = exact_scores(xq, xb, metric)
    pos = {int(i): p for p, i in enumerate(ids)}
    for r in range(len(xq)):
        got = [int(i) for i in I[r] if i >= 0]
        assert len(set(got)) == len(got)
        np.testing.assert_allclose(D[r, : len(got)], true[r, [pos[i] for i in got]], atol=tol * scale)
    assert np.all(np.diff(D[valid.all(1)], axis=1) <= tol * scale)
    # outside near-ties the ids are identical
    with np.errstate(invalid="ignore"):  # -inf - -inf in the padding
        gap = np.abs(np.diff(Dr_ext, axis=1)) > 1e-3 * scale
    gap = gap & np.concatenate([np.ones((len(xq), 1), bool), gap[:, :-1]], 1)
    np.testing.assert_array_equal(I[gap], Ir[gap])


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("name,kw", BACKENDS, ids=IDS)
def test_backends_match_reference(name, kw, metric):
    xb, xq, ids = data()
    s = make_searcher(name, xb.shape[1], metric, **kw)
    # two adds: exercises concatenation / capacity growth and keeps ids tied to their vectors
    s.add(xb[:450], ids[:450])
    s.add(xb[450:], ids[450:])
    assert s.ntotal == len(xb)
    for k in (1, 7, 100, len(xb), len(xb) + 5):
        D, I = s.search(xq, k)
        assert_exact(D, I, xq, xb, ids, metric, k)
    D, I = s.rank_all(xq)
    assert D.shape == (len(xq), len(xb))
    assert_exact(D, I, xq, xb, ids, metric, len(xb))


@pytest.mark.parametrize("name,kw", BACKENDS, ids=IDS)
def test_empty_and_padding(name, kw):
    s = make_searcher(name, 4, "ip", **kw)
    D, I = s.search(np.ones((2, 4), np.float32), 3)
    assert (I == -1).all() and np.isneginf(D).all()
    s.add(np.eye(4, dtype=np.float32)[:2], np.array([40, 7]))
    D, I = s.search(np.array([[1, 2, 0, 0]], np.float32), 5)
    np.testing.assert_array_equal(I, [[7, 40, -1, -1, -1]])
    np.testing.assert_allclose(D[0, :2], [2, 1], atol=1e-2)
    assert np.isneginf(D[0, 2:]).all()
    D, I = s.search(np.zeros((0, 4), np.float32), 3)
    assert D.shape == I.shape == (0, 3)


@pytest.mark.parametrize("name,kw", BACKENDS, ids=IDS)
def test_bad_input_is_rejected(name, kw):
    s = make_searcher(name, 4, "l2", **kw)
    with pytest.raises(InvalidInputError, match=r"expected \(n, 4\)"):
        s.add(np.zeros((3, 5), np.float32), np.arange(3))
    with pytest.raises(InvalidInputError, match="ids shape"):
        s.add(np.zeros((3, 4), np.float32), np.arange(2))
    with pytest.raises(InvalidInputError, match="NaN"):
        s.add(np.full((1, 4), np.nan, np.float32), np.arange(1))
    s.add(np.zeros((3, 4), np.float32), np.arange(3))
    with pytest.raises(InvalidInputError, match="k=0"):
        s.search(np.zeros((1, 4), np.float32), 0)


def test_unknown_names_and_options():
    with pytest.raises(UnknownNameError, match="valid: faiss, numpy, sharded, torch"):
        make_searcher("fiass", 4)
    with pytest.raises(InvalidInputError, match="unknown metric 'cos'"):
        make_searcher("faiss", 4, "cos", device="cpu")
    with pytest.raises(InvalidInputError, match="index_factory"):
        make_searcher("faiss", 4, index_type="IVFbogus", device="cpu")
    with pytest.raises(InvalidInputError, match="exact only"):
        make_searcher("torch", 4, index_type="IVF16,Flat", device="cpu")
    with pytest.raises(InvalidInputError, match="dtype 'int8'"):
        make_searcher("torch", 4, device="cpu", dtype="int8")
    with pytest.raises(InvalidInputError, match="fp16 range|float16 range"):
        make_searcher("torch", 2, device="cpu", dtype="fp16").add(np.array([[1e5, 0]], np.float32), [0])
    if not torch.cuda.is_available():
        with pytest.raises(IncompatibleError, match="no CUDA"):
            make_searcher("torch", 4, device="cuda")
    if FS.faiss_num_gpus() == 0:
        with pytest.raises(IncompatibleError, match="faiss-gpu-cu12"):
            make_searcher("faiss", 4, device="cuda")


def test_auto_choice(monkeypatch):
    monkeypatch.setattr(S, "faiss_num_gpus", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = make_searcher("auto", 8, "ip")
    assert isinstance(s, FaissSearcher) and not s.on_gpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert S.resolve_auto() == ("torch", {"device": "cuda"})
    # approximate index types need faiss even when only torch has a GPU
    assert S.resolve_auto("IVF64,Flat") == ("faiss", {"device": "cpu"})
    monkeypatch.setattr(S, "faiss_num_gpus", lambda: 1)
    assert S.resolve_auto() == ("faiss", {"device": "cuda"})
    # an explicit device is kept
    monkeypatch.setattr(S, "faiss_num_gpus", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert isinstance(make_searcher("auto", 8, device="cpu"), FaissSearcher)


def test_searcher_factory_for_metrics():
    xb, xq, ids = data(n=200, d=8, nq=3)
    f = searcher_factory("torch", device="cpu", dtype="bf16")
    s = f(8, "l2")
    assert isinstance(s, TorchSearcher) and s.metric == "l2"
    s.add(xb, ids)
    assert_exact(*s.rank_all(xq), xq, xb, ids, "l2", 200)
    with pytest.raises(UnknownNameError):
        searcher_factory("nope")


class _SearchSpy:
    """Wraps a faiss index and records every k its own search is asked for."""

    def __init__(self, index):
        self._index, self.ks = index, []

    def search(self, xq, k):
        self.ks.append(k)
        return self._index.search(xq, k)

    def __getattr__(self, name):
        return getattr(self._index, name)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_k_above_max_k_is_exact_and_complete(metric, monkeypatch):
    """FAISS GPU caps k at 2048: simulate the cap on CPU, with several reconstruct chunks."""
    monkeypatch.setattr(FS, "_CHUNK_BYTES", 1)  # 1024-row chunks
    xb, xq, ids = data(n=2600, d=8, nq=5)
    s = FaissSearcher(8, metric, device="cpu")
    s.add(xb, ids)
    s.max_k = 5
    s._index = spy = _SearchSpy(s._index)
    for k in (3, 5, 6, 40, 2600, 2610):
        assert_exact(*s.search(xq, k), xq, xb, ids, metric, k)
    assert_exact(*s.rank_all(xq), xq, xb, ids, metric, 2600)
    assert spy.ks and max(spy.ks) <= 5  # nothing beyond the cap went to faiss


def test_faiss_approximate_index_rank_all_is_exact():
    xb, xq, ids = data(n=2000, d=16, nq=6, normalise=True)
    s = FaissSearcher(16, "ip", index_type="IVF16,Flat", device="cpu", params="nprobe=1")
    s.add(xb, ids)
    D, I = s.search(xq, 10)  # approximate: only checks the contract's shape and id range
    assert I.shape == (6, 10) and np.isin(I[I >= 0], ids).all()
    assert_exact(*s.rank_all(xq), xq, xb, ids, "ip", 2000)
    with pytest.raises(InvalidInputError, match="could not be trained"):
        FaissSearcher(16, "ip", index_type="IVF256,Flat", device="cpu").add(xb[:10], ids[:10])
    with pytest.raises(InvalidInputError, match="params 'bogus=3'"):
        FaissSearcher(16, "ip", index_type="IVF16,Flat", device="cpu", params="bogus=3")


def test_faiss_index_round_trip(tmp_path):
    import faiss

    xb, xq, ids = data(n=300, d=8, nq=4)
    s = FaissSearcher(8, "l2", device="cpu")
    s.add(xb, ids)
    faiss.write_index(s.faiss_index_cpu(), str(tmp_path / "x.faiss"))
    t = FaissSearcher.from_faiss_index(faiss.read_index(str(tmp_path / "x.faiss")), device="cpu")
    assert t.metric == "l2" and t.ntotal == 300
    assert_exact(*t.search(xq, 12), xq, xb, ids, "l2", 12)
    t.add(xb[:1] + 1, np.array([5]))
    assert t.search(xb[:1] + 1, 1)[1][0, 0] == 5
    bare = faiss.IndexFlatIP(8)
    bare.add(xb)
    u = FaissSearcher.from_faiss_index(bare, device="cpu")
    assert u.metric == "ip"
    assert_exact(*u.search(xq, 5), xq, xb, np.arange(300), "ip", 5)


# -- CUDA variants (skipped without a GPU) ------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("kw", [{"dtype": "fp16"}, {"dtype": "bf16"}, {"dtype": "fp16", "rerank_store": "host"},
                                {"dtype": "fp32"}])
def test_torch_cuda_matches_reference(kw, metric):
    xb, xq, ids = data(n=5000, d=64, nq=33)
    s = TorchSearcher(64, metric, device="cuda", **kw)
    s.add(xb[:3000], ids[:3000])
    s.add(torch.from_numpy(xb[3000:]).cuda(), ids[3000:])  # device tensors are accepted too
    for k in (1, 10, 100, 3000, 5000):
        assert_exact(*s.search(xq, k), xq, xb, ids, metric, k)
    assert_exact(*s.rank_all(xq), xq, xb, ids, metric, 5000)


@pytest.mark.gpu
@pytest.mark.skipif(FS.faiss_num_gpus() == 0, reason="faiss without GPU support")
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_gpu_beyond_2048(metric, tmp_path):
    import faiss

    xb, xq, ids = data(n=5000, d=32, nq=4)
    s = FaissSearcher(32, metric, device="cuda")
    assert s.on_gpu and s.max_k == 2048
    s.add(xb, ids)
    for k in (10, 2048, 2049, 4999):
        assert_exact(*s.search(xq, k), xq, xb, ids, metric, k)
    assert_exact(*s.rank_all(xq), xq, xb, ids, metric, 5000)
    assert isinstance(make_searcher("auto", 32), FaissSearcher)
    faiss.write_index(s.faiss_index_cpu(), str(tmp_path / "g.faiss"))
    t = FaissSearcher.from_faiss_index(faiss.read_index(str(tmp_path / "g.faiss")), device="cuda")
    assert t.on_gpu and t.ntotal == 5000
    assert_exact(*t.search(xq, 3000), xq, xb, ids, metric, 3000)
