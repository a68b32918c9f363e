"""models/layers.py. RbfNystroem: a hand-worked two-landmark case, landmarks drawn from the training
rows only, and the exact kernel reproduced when every training image is a landmark. PCAReduce: the
exact principal subspace."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models.layers import PCAReduce, RbfNystroem


def test_hand_worked_two_landmarks():
    # groups [1, 1]; training images a = (0, 0), b = (1, 2), both landmarks (m = 2).
    # sigma_0 = mean squared distance between distinct landmarks in group 0 = 1, sigma_1 = 4.
    # k(a, b) = exp(-(1/2)(1/1 + 4/4)) = e^-1; q = (1, 0): k(q, a) = exp(-(1/2)(1 + 0)) = e^-0.5,
    # k(q, b) = exp(-(1/2)(0 + 4/4)) = e^-0.5.
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    m = RbfNystroem(2, [1, 1], 2)
    m.fit(x, torch.Generator().manual_seed(0))
    assert m.scales.tolist() == pytest.approx([1.0, 4.0])
    phi = m(torch.cat([x, torch.tensor([[1.0, 0.0]])])).double()
    gram = phi @ phi.T
    assert gram[0, 1].item() == pytest.approx(math.exp(-1.0), abs=1e-6)
    assert gram[0, 0].item() == pytest.approx(1.0, abs=1e-6) and gram[1, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert gram[2, 0].item() == pytest.approx(math.exp(-0.5), abs=1e-6)
    assert gram[2, 1].item() == pytest.approx(math.exp(-0.5), abs=1e-6)


def _kernel(a: np.ndarray, b: np.ndarray, groups, scales) -> np.ndarray:
    """exp(-(1/G) sum_g ||a_g - b_g||^2 / sigma_g), written out with broadcasting (float64)."""
    total, col = 0.0, 0
    for g, sc in zip(groups, scales):
        d = ((a[:, None, col:col + g] - b[None, :, col:col + g]) ** 2).sum(-1)
        total = total + d / sc
        col += g
    return np.exp(-total / len(groups))


def test_all_training_images_as_landmarks_reproduce_the_exact_kernel():
    rng = np.random.default_rng(0)
    x = rng.random((30, 7)).astype(np.float32)
    m = RbfNystroem(7, [4, 3], 50)          # more landmarks than images: all 30 are used
    m.fit(torch.from_numpy(x), torch.Generator().manual_seed(1))
    lm = x                                   # all 30 rows are landmarks (kept in row order)
    scales = [((lm[:, None, :4] - lm[None, :, :4]) ** 2).sum(-1).sum() / (30 * 29),
              ((lm[:, None, 4:] - lm[None, :, 4:]) ** 2).sum(-1).sum() / (30 * 29)]
    assert m.scales.tolist() == pytest.approx(scales, rel=1e-5)
    phi = m.transform(torch.from_numpy(x)).double().numpy()
    np.testing.assert_allclose(phi @ phi.T, _kernel(x, x, [4, 3], scales), atol=1e-4)
    assert phi.shape == (30, 50) and not m.landmarks[30:].any() and not m.proj[30:].any()


def test_landmarks_are_training_rows_drawn_with_the_seed():
    x = torch.from_numpy(np.random.default_rng(2).random((100, 5)).astype(np.float32))
    a, b, c = RbfNystroem(5, None, 10), RbfNystroem(5, None, 10), RbfNystroem(5, None, 10)
    a.fit(x, torch.Generator().manual_seed(0))
    b.fit(x, torch.Generator().manual_seed(0))
    c.fit(x, torch.Generator().manual_seed(1))
    rows = {tuple(r) for r in x.tolist()}
    assert all(tuple(r) in rows for r in a.landmarks.tolist())
    assert torch.equal(a.landmarks, b.landmarks) and not torch.equal(a.landmarks, c.landmarks)
    # a new image's map is its kernel row against the landmarks times proj
    q = torch.rand(3, 5)
    k = _kernel(q.double().numpy(), a.landmarks.double().numpy(), [5], a.scales.tolist())
    np.testing.assert_allclose(a(q).double().numpy(), k @ a.proj.double().numpy(), rtol=1e-4, atol=1e-6)


def test_bad_configuration():
    with pytest.raises(InvalidInputError, match="summing to the feature dimension 5"):
        RbfNystroem(5, [2, 2], 4)
    with pytest.raises(InvalidInputError, match="landmarks=0"):
        RbfNystroem(5, None, 0)


def test_pca_reduce_matches_exact_svd():
    """The randomised PCA (torch.pca_lowrank) spans the exact top-k principal subspace (full SVD,
    float64) of each reduced group; narrow groups pass through untouched."""
    g = np.random.default_rng(3)
    # group 0: 30 dims with a clear 4-dim principal subspace; group 1: 3 dims (< k, kept as is)
    basis = np.linalg.qr(g.normal(size=(30, 4)))[0]
    a = g.normal(size=(500, 4)) * np.array([10.0, 8.0, 6.0, 5.0]) @ basis.T + 0.05 * g.normal(size=(500, 30)) + 2.0
    b = g.normal(size=(500, 3))
    x = torch.from_numpy(np.concatenate([a, b], 1).astype(np.float32))
    red = PCAReduce([30, 3], k=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        red.fit(x, torch.Generator().manual_seed(0))
    assert red.out_groups == [4, 3] and red.out_dim == 7
    centred = a - a.mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][:4].T            # exact (30, 4)
    comp = red.comp0.double().numpy()
    np.testing.assert_allclose(comp @ comp.T, v @ v.T, atol=1e-3)      # same projector
    np.testing.assert_allclose(red.mean0.numpy(), a.mean(0), atol=1e-4)
    out = red(x)
    np.testing.assert_allclose(out[:, :4].numpy(), (a - a.mean(0)) @ comp, atol=1e-3)
    assert torch.equal(out[:, 4:], x[:, 30:])
    assert torch.equal(red.transform(x, batch=64), out)
    assert torch.equal(PCAReduce([33], k=0)(x), x)  # k=0: off
    with pytest.raises(InvalidInputError, match="pca_dim"):
        PCAReduce([33], k=-1)
