"""SAE: "Semantic Autoencoder for Zero-Shot Learning" (Kodirov, Xiang, Gong, CVPR 2017).

A linear autoencoder whose code is the semantic vector: encoder W (A, D) maps an image to its
class semantics, the tied decoder W^T maps semantics back to the image:

    min_W ||X - W^T S||^2 + lambda ||W X - S||^2
    =>  S S^T W + lambda W X X^T = (1 + lambda) S X^T        (a Sylvester equation A W + W B = C)

with X (D, N) the L2-normalised training images (as in the official code) and S (A, N) the
semantics of each image's class.

Solver: ``scipy.linalg.solve_sylvester`` (Bartels-Stewart) needs a real Schur decomposition of the
D x D matrix for *every* lambda -- minutes for D = 8252. Both sides are symmetric here, so with
``S S^T = P diag(a) P^T`` and ``X X^T = Q diag(e) Q^T`` the solution is
``W = P [(P^T C Q)_ij / (a_i + lambda e_j)] Q^T``: exactly the same W (tests compare it with
``solve_sylvester``), and one eigendecomposition serves the whole lambda grid (:meth:`Sae.fit_grid`).

Embedding (``direction`` hyper-parameter, both tried by the protocol as in the paper's two test modes):

* ``"encoder"`` (default, paper's F -> S): images ``normalize(x) W^T`` (N, A), classes ``s`` (C, A);
* ``"decoder"`` (paper's S -> F): images ``normalize(x)`` (N, D), classes ``s W`` (C, D).

Both are compared by cosine (``metric="ip"``), as in the official evaluation.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams
from .training import ClosedFormModel, gram

DIRECTIONS = ("encoder", "decoder")


@dataclasses.dataclass
class SaeHparams(Hparams):
    lam: float = 1e4               # weight of the encoder term ||W X - S||^2
    direction: str = "encoder"     # which side is projected at test time; see module docstring


def _normalize_rows(x: Tensor) -> Tensor:
    return nn.functional.normalize(x, dim=1)


def solve_symmetric_sylvester(a_eig: tuple[np.ndarray, np.ndarray], b_eig: tuple[np.ndarray, np.ndarray],
                              c: np.ndarray, scale_b: float = 1.0) -> np.ndarray:
    """Solve ``A W + W (scale_b * B) = C`` for symmetric PSD A (k, k), B (d, d) given as eigh pairs.

    a_eig = (a (k,), P (k, k)), b_eig = (e (d,), Q (d, d)), c (k, d) -> W (k, d) float64.
    Where ``a_i + scale_b * e_j`` is numerically zero the equation has no component there (C
    lies in the ranges of A and B), so that entry of W is set to 0 (the minimum-norm solution).
    """
    a, p = a_eig
    e, q = b_eig
    ct = p.T @ c @ q
    den = a[:, None] + scale_b * e[None, :]
    tol = 1e-12 * max(float(np.abs(den).max()), 1e-300)
    wt = np.divide(ct, den, out=np.zeros_like(ct), where=np.abs(den) > tol)
    return p @ wt @ q.T


class _SaeSolver:
    def __init__(self, x: Tensor, y: Tensor, s: Tensor):
        xn = _normalize_rows(x.detach().cpu().to(torch.float32))
        s64 = s.detach().cpu().to(torch.float64).numpy()           # (Z, A)
        yi = y.detach().cpu().numpy().astype(np.int64)
        counts = np.bincount(yi, minlength=len(s64)).astype(np.float64)
        # S S^T over images = sum_c n_c s_c s_c^T;  S X^T = sum_c s_c (sum of class c's images)^T
        self.SS = (s64.T * counts) @ s64                           # (A, A)
        onehot = np.zeros((len(yi), len(s64)), np.float32)
        onehot[np.arange(len(yi)), yi] = 1.0
        class_sums = (xn.numpy().T @ onehot).astype(np.float64)    # (D, Z)
        self.SX = s64.T @ class_sums.T                             # (A, D)
        self.n = len(yi)
        self.a_eig = np.linalg.eigh(self.SS)
        self.b_eig = scipy.linalg.eigh(gram(xn), check_finite=False, driver="evd")

    def solve(self, lam: float) -> tuple[np.ndarray, float]:
        """W (A, D) and the objective per image, from the sufficient statistics alone.

        With G = X X^T: ||X - W^T S||^2 = tr G - 2<W, S X^T> + <W W^T, S S^T> and
        ||W X - S||^2 = tr(W G W^T) - 2<W, S X^T> + tr(S S^T); tr(W G W^T) = sum_j e_j ||(W Q)_:j||^2.
        """
        w = solve_symmetric_sylvester(self.a_eig, self.b_eig, (1.0 + lam) * self.SX, scale_b=lam)
        e, q = self.b_eig
        cross = float((w * self.SX).sum())
        rec = float(e.sum()) - 2 * cross + float(((w @ w.T) * self.SS).sum())
        enc = float((np.square(w @ q) * e[None, :]).sum()) - 2 * cross + float(np.trace(self.SS))
        return w, (rec + lam * enc) / max(1, self.n)


@MODELS.register("sae")
class Sae(ClosedFormModel):
    name = "sae"
    metric = "ip"
    Hparams = SaeHparams

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int, hparams: SaeHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        if self.hparams.lam <= 0:
            raise InvalidInputError(f"sae: lam={self.hparams.lam}; must be > 0")
        self._require_choice("direction", DIRECTIONS)
        self.register_buffer("W", torch.zeros(self.semantic_dim, self.feature_dim))

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        return [{"lam": lam, "direction": d} for d, lam in itertools.product(
            DIRECTIONS, (1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6))]

    @classmethod
    def make_solver(cls, x: Tensor, y: Tensor, s: Tensor, hparams: SaeHparams, *, seed: int = 0) -> _SaeSolver:
        # one eigendecomposition serves every lambda and both directions
        return _SaeSolver(x, y, s)

    def fit_from(self, solver: _SaeSolver) -> list[float]:
        w, objective = solver.solve(self.hparams.lam)
        self.W.copy_(torch.from_numpy(w).to(self.W))
        return [objective]

    @torch.no_grad()
    def objective(self, x: Tensor, y: Tensor, s: Tensor) -> float:
        """(||X - W^T S||^2 + lambda ||W X - S||^2) / N on normalised x (N, D), semantics s[y]."""
        xn, sy = _normalize_rows(x.to(self.W)), s.to(self.W)[y]
        rec = (xn - sy @ self.W).pow(2).sum()
        enc = (xn @ self.W.T - sy).pow(2).sum()
        return float((rec + self.hparams.lam * enc) / max(1, len(x)))

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, A) encoder codes, or (N, D) normalised features for ``direction="decoder"``."""
        xn = _normalize_rows(x.to(self.W))
        return xn @ self.W.T if self.hparams.direction == "encoder" else xn

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, A) semantics, or (C, D) decoded prototypes ``s W`` for ``direction="decoder"``."""
        s = s.to(self.W)
        return s if self.hparams.direction == "encoder" else s @ self.W
