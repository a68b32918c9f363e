"""SAE: the Sylvester solution against scipy's Bartels-Stewart solver, a hand-checkable identity case,
the objective computed from sufficient statistics, and both test-time directions."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models.sae import Sae, solve_symmetric_sylvester

from .toy import linear_toy


def _toy(seed: int = 0):
    return linear_toy(seed, n=60, d=7, z=5, a=4)


def test_eigen_solver_matches_solve_sylvester():
    rng = np.random.default_rng(0)
    ma, mb = rng.standard_normal((4, 6)), rng.standard_normal((9, 20))
    A, B = ma @ ma.T, mb @ mb.T
    C = rng.standard_normal((4, 9))
    for lam in (0.01, 1.0, 1e4):
        W = solve_symmetric_sylvester(np.linalg.eigh(A), np.linalg.eigh(B), C, scale_b=lam)
        np.testing.assert_allclose(W, scipy.linalg.solve_sylvester(A, lam * B, C), rtol=1e-7, atol=1e-10)


def test_model_solves_the_papers_equation():
    x, y, s = _toy()
    lam = 3.0
    m = Sae(x.shape[1], s.shape[1], {"lam": lam})
    losses = m.fit(x, y, s)
    X = torch.nn.functional.normalize(x.double(), dim=1).numpy().T     # (D, N), normalised like the official code
    S = s.double().numpy()[y.numpy()].T                                 # (A, N)
    W = m.W.double().numpy()
    ref = scipy.linalg.solve_sylvester(S @ S.T, lam * X @ X.T, (1 + lam) * S @ X.T)
    np.testing.assert_allclose(W, ref, rtol=1e-4, atol=1e-5)
    resid = S @ S.T @ W + lam * W @ X @ X.T - (1 + lam) * S @ X.T
    assert np.abs(resid).max() < 1e-4 * np.abs((1 + lam) * S @ X.T).max()
    # loss from sufficient statistics == brute-force objective
    assert losses[0] == pytest.approx(m.objective(x, y, s), rel=1e-4)


def test_identity_when_images_are_their_semantics():
    # x_n = s_{y_n} (unit rows, D = A): W = I solves S S^T W + l W S S^T = (1 + l) S S^T, uniquely
    # because the 4 class vectors span R^3.
    s = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]), dim=1)
    y = torch.arange(4).repeat(3)
    m = Sae(3, 3, {"lam": 5.0})
    m.fit(s[y], y, s)
    torch.testing.assert_close(m.W, torch.eye(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("direction", ["encoder", "decoder"])
def test_both_directions_recognise_unseen_classes(direction):
    # Images are a linear function of the class semantics plus noise; unseen classes are new semantics.
    rng = np.random.default_rng(3)
    a, d, z_seen, z_unseen = 8, 20, 12, 5
    s = rng.standard_normal((z_seen + z_unseen, a)).astype(np.float32)
    proj = rng.standard_normal((a, d))
    def draw(classes, k):
        y = np.repeat(classes, k)
        return (s[y] @ proj + 0.2 * rng.standard_normal((len(y), d))).astype(np.float32), y
    xs, ys = draw(np.arange(z_seen), 20)
    xu, yu = draw(np.arange(z_seen, z_seen + z_unseen), 20)
    m = Sae(d, a, {"lam": 10.0, "direction": direction})
    m.fit(torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(s[:z_seen]))
    sc = m.scores(torch.from_numpy(xu), torch.from_numpy(s[z_seen:]))
    expected_dim = a if direction == "encoder" else d
    assert m.embed_images(torch.from_numpy(xu)).shape == (len(xu), expected_dim)
    assert m.embed_classes(torch.from_numpy(s)).shape == (len(s), expected_dim)
    acc = (sc.argmax(1).numpy() + z_seen == yu).mean()
    assert acc > 0.6  # chance 0.2


def test_fit_grid_equals_individual_fits():
    x, y, s = _toy(4)
    cands = [{"lam": 0.5, "direction": "encoder"}, {"lam": 50.0, "direction": "decoder"}]
    for hp, (gm, losses) in zip(cands, Sae.fit_grid(x.shape[1], [s.shape[1]], cands, x, y, s)):
        single = Sae(x.shape[1], s.shape[1], hp)
        assert single.fit(x, y, s) == pytest.approx(losses)
        torch.testing.assert_close(gm.W, single.W)
        assert gm.hparams.direction == hp["direction"]


def test_bad_hparams():
    with pytest.raises(InvalidInputError, match="direction='sideways'.*encoder, decoder"):
        Sae(4, 3, {"direction": "sideways"})
    with pytest.raises(InvalidInputError, match="lam"):
        Sae(4, 3, {"lam": -1.0})
