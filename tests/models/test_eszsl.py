"""ESZSL closed form: a hand-worked 1-d case, the normal equations, and the shared-grid path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model
from zslretrieval.models.eszsl import Eszsl

from .toy import linear_toy


def _toy(seed: int = 0, n: int = 40):
    return linear_toy(seed, n=n, d=6, z=4, a=5)


def test_hand_worked_scalar_case():
    # D = A = 1, x = [1, 2] of classes [0, 1], s = [[1], [-1]], gamma = lambda = 1.
    # XX^T + g = 1 + 4 + 1 = 6;  Y = [[1, -1], [-1, 1]], Y S^T = [2, -2], X Y S^T = 1*2 + 2*(-2) = -2;
    # SS^T + l = 2 + 1 = 3  ->  V = -2 / (6 * 3) = -1/9.
    m = create_model("eszsl", 1, [1], {"gamma": 1.0, "lam": 1.0, "ridge": "absolute", "center": False})
    m.fit(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([[1.0], [-1.0]]))
    assert m.V.item() == pytest.approx(-1.0 / 9.0, rel=1e-6)
    # relative ridge: the mean eigenvalue of XX^T = [5] is 5, so gamma 0.2 means 1 -> the same V
    m = create_model("eszsl", 1, [1], {"gamma": 0.2, "lam": 1.0, "ridge": "relative", "center": False})
    m.fit(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([[1.0], [-1.0]]))
    assert m.V.item() == pytest.approx(-1.0 / 9.0, rel=1e-6)


def test_hand_worked_centred_case():
    # The same data centred (the default): mean 1.5, x = [-0.5, 0.5]; XX^T + g = 0.5 + 1 = 1.5;
    # X Y S^T = -0.5*2 + 0.5*(-2) = -2; V = -2 / (1.5 * 3) = -4/9; an image embeds as (x - 1.5) V.
    m = create_model("eszsl", 1, [1], {"gamma": 1.0, "lam": 1.0})
    m.fit(torch.tensor([[1.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([[1.0], [-1.0]]))
    assert m.V.item() == pytest.approx(-4.0 / 9.0, rel=1e-6)
    assert m.embed_images(torch.tensor([[3.5]])).item() == pytest.approx(2.0 * -4.0 / 9.0, rel=1e-6)


def test_relative_ridge_makes_predictions_scale_free():
    x, y, s = _toy(3)
    a = Eszsl(x.shape[1], s.shape[1], {"gamma": 0.1, "lam": 1.0, "ridge": "relative"})
    b = Eszsl(x.shape[1], s.shape[1], {"gamma": 0.1, "lam": 1.0, "ridge": "relative"})
    a.fit(x, y, s)
    b.fit(100.0 * x, y, s)  # raw CNN features are often this much larger than unit-norm ones
    torch.testing.assert_close(a.scores(x, s), b.scores(100.0 * x, s), rtol=1e-4, atol=1e-5)


def test_matches_explicit_inverse_and_normal_equations():
    x, y, s = _toy()
    g, lam = 0.5, 2.0
    m = Eszsl(x.shape[1], s.shape[1], {"gamma": g, "lam": lam, "ridge": "absolute", "center": False})
    losses = m.fit(x, y, s)
    X = x.double().numpy().T                     # (D, N), the paper's layout
    S = s.double().numpy().T                     # (A, Z)
    Y = -np.ones((x.shape[0], s.shape[0]))
    Y[np.arange(len(y)), y.numpy()] = 1
    ref = np.linalg.inv(X @ X.T + g * np.eye(len(X))) @ X @ Y @ S.T @ np.linalg.inv(S @ S.T + lam * np.eye(len(S)))
    V = m.V.double().numpy()
    np.testing.assert_allclose(V, ref, rtol=1e-4, atol=1e-6)
    # gradient of the objective vanishes: (XX^T + g I) V (SS^T + l I) = X Y S^T
    lhs = (X @ X.T + g * np.eye(len(X))) @ V @ (S @ S.T + lam * np.eye(len(S)))
    np.testing.assert_allclose(lhs, X @ Y @ S.T, rtol=1e-4, atol=1e-4)
    # the reported loss is the paper's objective per image
    XVS = X.T @ V @ S
    obj = (np.square(XVS - Y).sum() + g * np.square(V @ S).sum() + lam * np.square(X.T @ V).sum()
           + g * lam * np.square(V).sum()) / x.shape[0]
    assert losses == [pytest.approx(obj, rel=1e-4)]


def test_optimum_beats_perturbations():
    x, y, s = _toy(1)
    m = Eszsl(x.shape[1], s.shape[1], {"gamma": 1.0, "lam": 1.0, "ridge": "absolute", "center": False})
    m.fit(x, y, s)
    X, S = x.double().numpy().T, s.double().numpy().T
    Y = -np.ones((x.shape[0], s.shape[0]))
    Y[np.arange(len(y)), y.numpy()] = 1

    def objective(V):
        return (np.square(X.T @ V @ S - Y).sum() + np.square(V @ S).sum() + np.square(X.T @ V).sum()
                + np.square(V).sum())

    V = m.V.double().numpy()
    rng = np.random.default_rng(0)
    best = objective(V)
    for _ in range(5):
        assert objective(V + 1e-3 * rng.standard_normal(V.shape)) > best


def test_fit_grid_equals_individual_fits_and_scores_are_bilinear():
    x, y, s = _toy(2)
    cands = [{"gamma": 0.1, "lam": 1.0, "center": False}, {"gamma": 0.1, "lam": 10.0, "center": False},
             {"gamma": 3.0, "lam": 1.0, "center": False}, {"gamma": 3.0, "lam": 1.0}, {"gamma": 0.3, "lam": 1.0,
                                                                                       "ridge": "relative"}]
    grid = list(Eszsl.fit_grid(x.shape[1], [s.shape[1]], cands, x, y, s))
    assert len(grid) == len(cands)
    for hp, (gm, losses) in zip(cands, grid):
        single = Eszsl(x.shape[1], s.shape[1], hp)
        assert single.fit(x, y, s) == pytest.approx(losses)
        torch.testing.assert_close(gm.V, single.V)
    m = grid[0][0]
    raw = (x @ m.V) @ s.T                      # the paper's x^T V s
    cos = m.scores(x, s)
    # class rows of equal norm -> same argmax as the raw bilinear score
    s_unit = torch.nn.functional.normalize(s, dim=1)
    assert torch.equal(m.scores(x, s_unit).argmax(1), ((x @ m.V) @ s_unit.T).argmax(1))
    assert cos.shape == raw.shape == (len(x), len(s))


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="gamma"):
        Eszsl(4, 3, {"gamma": 0.0})
    with pytest.raises(InvalidInputError, match="unknown hyper-parameter"):
        Eszsl(4, 3, {"alpha": 1.0})
    m = Eszsl(4, 3)
    with pytest.raises(InvalidInputError, match=r"expected \(N, 4\)"):
        m.fit(torch.zeros(5, 5), torch.zeros(5, dtype=torch.long), torch.zeros(2, 3))
    with pytest.raises(InvalidInputError, match="labels must index"):
        m.fit(torch.zeros(5, 4), torch.full((5,), 7), torch.zeros(2, 3))


def test_rbf_kernel_eszsl_equals_numpy_reference_and_survives_a_reload():
    # Every training image a landmark: phi(X) phi(X)^T = K exactly, so ESZSL on phi is the kernel
    # ESZSL written out here in numpy (centred features phi, ridge gamma, lambda).
    x, y, s = _toy(4, n=24)
    hp = {"gamma": 0.5, "lam": 2.0, "kernel": "rbf", "landmarks": 64, "feature_groups": [4, 2]}
    m = Eszsl(x.shape[1], s.shape[1], hp)
    m.fit(x, y, s, seed=0)
    xn = x.double().numpy()
    scales = [((xn[:, None, a:b] - xn[None, :, a:b]) ** 2).sum(-1).sum() / (24 * 23) for a, b in ((0, 4), (4, 6))]
    k = np.exp(-(((xn[:, None, :4] - xn[None, :, :4]) ** 2).sum(-1) / scales[0]
                 + ((xn[:, None, 4:] - xn[None, :, 4:]) ** 2).sum(-1) / scales[1]) / 2)
    w, u = np.linalg.eigh(k)
    phi = u * np.sqrt(np.clip(w, 0, None))                  # any phi with phi phi^T = K gives the same scores
    phi_c = phi - phi.mean(0)
    Y = -np.ones((24, 4))
    Y[np.arange(24), y.numpy()] = 1
    S = s.double().numpy()
    V = np.linalg.solve(phi_c.T @ phi_c + 0.5 * np.eye(24), phi_c.T @ Y @ S) @ np.linalg.inv(S.T @ S + 2.0 * np.eye(5))
    ref = phi_c @ V @ S.T                                    # raw bilinear scores of the training images
    got = m.embed_images(x).double().numpy() @ S.T
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
    # the fitted map is part of the state: a model rebuilt from the hparams + state_dict scores the same
    again = Eszsl(x.shape[1], s.shape[1], hp)
    again.load_state_dict(m.state_dict())
    q = torch.rand(5, x.shape[1])
    torch.testing.assert_close(again.scores(q, s), m.scores(q, s))
    with pytest.raises(InvalidInputError, match="kernel='poly'"):
        Eszsl(6, 5, {"kernel": "poly"})
