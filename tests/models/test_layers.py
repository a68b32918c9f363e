"""RbfNystroem: a hand-worked two-landmark case, landmarks drawn from the training rows only, and the
exact kernel reproduced when every training image is a landmark."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models.layers import RbfNystroem


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
