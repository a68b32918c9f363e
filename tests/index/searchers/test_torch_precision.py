"""The torch backend's low-precision scan + fp32 re-rank: error bound, certification, widening."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.index.searchers import NumpySearcher, TorchSearcher


def near_ties(n=400, d=32, nq=12, spread=2e-3, seed=1):
    """Vectors that differ by ~spread: bf16 rounding (2^-8) scrambles their order, fp32 does not."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(d).astype(np.float32)
    xb = base + spread * rng.standard_normal((n, d)).astype(np.float32)
    xq = base + 0.5 * rng.standard_normal((nq, d)).astype(np.float32)
    ids = rng.permutation(10 * n)[:n].astype(np.int64)
    return xb, xq, ids


def reference(xb, xq, ids, metric, k):
    r = NumpySearcher(xb.shape[1], metric)
    r.add(xb, ids)
    return r.search(xq, k)


def strict_ids(I, Ir, Dr, tol=1e-4, min_separated=0.6):
    """Ids must agree wherever the reference's neighbours are more than tol apart (fp32 rounding of
    2 x.q - ||x||^2 - ||q||^2 at magnitude ~100 is ~1e-5, so closer neighbours are ties)."""
    k = I.shape[1]  # Ir, Dr may hold more columns: the (k+1)-th decides ties at the boundary
    sep = np.abs(np.diff(Dr, axis=1, append=-np.inf)) > tol
    sep &= np.abs(np.diff(Dr, axis=1, prepend=np.inf)) > tol
    sep = sep[:, :k]
    assert sep.mean() > min_separated
    np.testing.assert_array_equal(I[sep], Ir[:, :k][sep])
    return sep


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_bf16_rerank_gives_fp32_exact_ids(metric):
    xb, xq, ids = near_ties()
    Dr, Ir = reference(xb, xq, ids, metric, 11)
    raw = TorchSearcher(32, metric, device="cpu", dtype="bf16", rerank=False)
    raw.add(xb, ids)
    s = TorchSearcher(32, metric, device="cpu", dtype="bf16")
    s.add(xb, ids)
    D, I = s.search(xq, 10)
    sep = strict_ids(I, Ir, Dr)
    # the data is hard enough that bf16 alone gets clearly separated neighbours wrong
    assert (raw.search(xq, 10)[1][sep] != Ir[:, :10][sep]).mean() > 0.2
    np.testing.assert_allclose(D, Dr[:, :10], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_uncertified_queries_are_widened_until_exact(dtype):
    xb, xq, ids = near_ties(spread=1e-3)
    Dr, Ir = reference(xb, xq, ids, "ip", 11)
    s = TorchSearcher(32, "ip", device="cpu", dtype=dtype, margin=0, workspace_bytes=1 << 30)
    s.add(xb, ids)
    D, I = s.search(xq, 10)
    assert s.stats["widened"] > 0  # k' = k cannot be certified on near-ties
    strict_ids(I, Ir, Dr)


def test_rounded_output_fallback_is_still_exact():
    """Older torch lacks mm(out_dtype=fp32): scan output is rounded to bf16, the bound grows by u."""
    xb, xq, ids = near_ties()
    Dr, Ir = reference(xb, xq, ids, "l2", 16)
    s = TorchSearcher(32, "l2", device="cpu", dtype="bf16")
    s._force_lowp_output = True
    s.add(xb, ids)
    D, I = s.search(xq, 15)
    strict_ids(I, Ir, Dr)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("lowp_out", [False, True])
def test_scan_error_within_documented_bound(dtype, metric, lowp_out):
    """|scan score - exact score| <= eps(q) for every pair, including tiny (fp16-subnormal) and large values."""
    rng = np.random.default_rng(3)
    d = 256
    xb = rng.standard_normal((700, d)).astype(np.float32)
    xb[:100] *= 1e-6       # fp16 subnormal range
    xb[100:200] *= 100.0   # far from 1
    xq = rng.standard_normal((6, d)).astype(np.float32)
    xq[0] *= 1e-7
    xq[1] *= 300.0
    s = TorchSearcher(d, metric, device="cpu", dtype=dtype)
    s._force_lowp_output = lowp_out
    s.add(xb, np.arange(700))
    q = torch.from_numpy(xq)
    qlo, scale = s._lowp_query(q)
    scan = s._scan_scores(qlo, scale, 0, 700).double()
    exact = torch.from_numpy(xq.astype(np.float64) @ xb.astype(np.float64).T)
    if metric == "l2":
        exact = 2 * exact - torch.from_numpy(np.square(xb.astype(np.float64)).sum(1))
    err = (scan - exact).abs().amax(1)
    eps = s._eps(q).double()
    assert (err <= eps).all(), (err, eps)
    # and the bound is not vacuous: a few unit roundoffs of X ||q||
    X, qn = np.linalg.norm(xb, axis=1).max(), torch.from_numpy(xq).double().norm(dim=1)
    u = {"fp16": 2 ** -11, "bf16": 2 ** -8}[dtype]
    l2_round = 8 * 2 ** -24 * X * X if metric == "l2" else 0  # fp32 rounding of 2 x.q - ||x||^2
    assert (eps <= (8 if metric == "l2" else 4) * u * X * qn + 1.01 * l2_round + 1e-6).all()
    assert (err > 0.01 * eps).any()


def test_large_k_and_many_chunks_use_exact_paths():
    rng = np.random.default_rng(5)
    xb, xq = rng.standard_normal((3000, 16)).astype(np.float32), rng.standard_normal((20, 16)).astype(np.float32)
    ids = rng.permutation(10 ** 6)[:3000].astype(np.int64)
    Dr, Ir = reference(xb, xq, ids, "ip", 1601)
    # tiny workspace: many scan chunks, query batches, re-rank sub-batches and the full-scoring fallback
    s = TorchSearcher(16, "ip", device="cpu", dtype="bf16", workspace_bytes=64 << 10)
    s.add(xb, ids)
    D, I = s.search(xq, 1600)
    assert s.stats["exact_fallback"] == 20
    strict_ids(I, Ir, Dr, tol=1e-5, min_separated=0.5)
    D, I = s.search(xq, 5)
    strict_ids(I, Ir[:, :6], Dr[:, :6])


def test_memory_accounting_and_reserve():
    s = TorchSearcher(8, "ip", device="cpu", dtype="fp16")
    s.reserve(5000)
    s.add(np.ones((10, 8), np.float32), np.arange(10))
    m = s.memory_bytes()
    assert m["device"] == 5000 * 8 * 2 + 5000 * 8 * 4 + 5000 * 4 and m["host"] == 0
    assert s.ntotal == 10
