"""ESZSL: "An embarrassingly simple approach to zero-shot learning" (Romera-Paredes & Torr, ICML 2015).

A bilinear compatibility ``x^T V s`` with the closed-form solution

    V = (X X^T + gamma I)^-1  X Y S^T  (S S^T + lambda I)^-1          V: (D, A)

where X (D, N) holds the training images as columns, Y (N, Z) is the ground truth in {-1, 1}
(+1 for the image's class, -1 for the other training classes) and S (A, Z) the semantics of the
Z training classes. Embeddings: images ``x V`` (N, A), classes ``s`` (C, A), compared by cosine
(``metric="ip"``). With L2-normalised class rows (xlsa17) the cosine argmax over classes equals the
paper's raw-score argmax, since normalising the image side does not change a row's argmax.

``center=True`` (default) subtracts the training images' mean feature first (kept as a buffer and
subtracted from every image embedded later): the paper's features are centred, and without it the
shared mean direction of non-negative histograms dominates X X^T and the ridge acts on the wrong
scale (awa1-lampert val top-1 0.22 uncentred vs ~0.33 centred).

``ridge="absolute"`` is the paper's formula as written (the grid's first choice). ``ridge="relative"``
reads ``gamma`` relative to the mean eigenvalue of X X^T (trace / D), so one value means the same
for unit-norm histograms and for raw CNN features whose Gram eigenvalues reach 1e6 or more; there
an absolute gamma of 0.1-100 leaves the system so ill-conditioned that a 1e-5 change in the
features changes the predictions (observed on 190 images of 1280-d EfficientNet features).

All candidates with the same ``gamma`` share one Cholesky factorisation of ``X X^T + gamma I``, so
:meth:`Eszsl.fit_grid` fits a whole grid for the price of one Gram matrix and one factorisation per
``gamma`` (the protocol uses it when present).

``kernel="rbf"`` fits ESZSL on an explicit kernel feature map instead of the raw features
(:class:`~.layers.RbfNystroem`: per-feature-group RBF kernel, ``landmarks`` training images, drawn
with the fit's seed): the paper's kernelised ESZSL, approximated so that the map is a buffer of the
model and every image embedded later (index, queries) goes through the same map. ``feature_groups``
(a dataset fact, e.g. awa1-lampert's five descriptor histograms) gives each group its own scale.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams
from .layers import RbfNystroem
from .training import ClosedFormModel, gram


@dataclasses.dataclass
class EszslHparams(Hparams):
    gamma: float = 1.0    # ridge on the image side, (X X^T + gamma I)
    lam: float = 1.0      # ridge on the semantic side, (S S^T + lambda I)
    ridge: str = "absolute"   # "absolute": as is (the paper); "relative": gamma times the mean eigenvalue of X X^T
    center: bool = True       # subtract the training images' mean feature (see module docstring)
    kernel: str = "linear"    # "linear": raw features; "rbf": per-group RBF kernel map (module docstring)
    landmarks: int = 3000     # Nystroem landmark images of the "rbf" map
    feature_groups: list[int] | None = None   # widths of the input's feature groups (dataset fact); None = one


KERNELS = ("linear", "rbf")


RIDGES = ("relative", "absolute")


class _EszslSolver:
    """Shared pieces of the closed form for one training set."""

    def __init__(self, x: Tensor, y: Tensor, s: Tensor, center: bool, kmap: RbfNystroem | None = None,
                 seed: int = 0):
        # float32 image matrix: a float64 copy of 20k x 8k features would cost over 1 GB
        x = x.detach().cpu().to(torch.float32)
        self.kmap = kmap
        if kmap is not None:
            # fitted on these (training) images only; the model copies its buffers
            kmap.fit(x, torch.Generator().manual_seed(seed))
            x = kmap.transform(x)
        self.mean = x.mean(0) if center else torch.zeros(x.shape[1])
        if center:
            x = x - self.mean
        x32 = x.numpy()
        s64 = s.detach().cpu().to(torch.float64).numpy()            # (Z, A)
        yi = y.detach().cpu().numpy().astype(np.int64)
        self.Y = -np.ones((len(yi), len(s64)))                     # (N, Z) in {-1, 1}
        self.Y[np.arange(len(yi)), yi] = 1.0
        self.S = s64
        self.G = gram(x)                                            # X X^T (D, D), paper's column convention
        self.XYS = (x32.T @ (self.Y @ s64).astype(np.float32)).astype(np.float64)   # X Y S^T (D, A)
        self.SS = s64.T @ s64                                       # S S^T (A, A)
        self.x32 = x32
        # mean eigenvalue of X X^T; guarded so that all-zero features still get a positive ridge
        self.mean_eigenvalue = max(float(np.trace(self.G)) / max(1, len(self.G)), 1e-12)
        self._left: dict[float, np.ndarray] = {}

    def left(self, gamma: float) -> np.ndarray:
        """(X X^T + gamma I)^-1 X Y S^T, cached per gamma: (D, A)."""
        if gamma not in self._left:
            a = self.G.copy()
            a[np.diag_indices_from(a)] += gamma
            # factorise in place: a second D x D float64 copy is 0.5 GB at D = 8k
            self._left[gamma] = scipy.linalg.cho_solve(
                scipy.linalg.cho_factor(a, overwrite_a=True, check_finite=False), self.XYS, check_finite=False)
            del a
        return self._left[gamma]

    def solve(self, gamma: float, lam: float) -> np.ndarray:
        """V (D, A)."""
        b = self.SS + lam * np.eye(len(self.SS))
        # V = L B^-1 with B symmetric  <=>  B V^T = L^T
        return np.linalg.solve(b, self.left(gamma).T).T

    def loss(self, v: np.ndarray, gamma: float, lam: float) -> float:
        """The paper's objective per image: (||X^T V S - Y||^2 + gamma ||V S||^2 + lam ||X^T V||^2 + ...)/N."""
        xv = (self.x32 @ v.astype(np.float32)).astype(np.float64)        # (N, A)
        fit = np.square(xv @ self.S.T - self.Y).sum()
        reg = gamma * np.square(v @ self.S.T).sum() + lam * np.square(xv).sum() + gamma * lam * np.square(v).sum()
        return float((fit + reg) / max(1, len(xv)))


@MODELS.register("eszsl")
class Eszsl(ClosedFormModel):
    name = "eszsl"
    metric = "ip"
    Hparams = EszslHparams

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: EszslHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        if self.hparams.gamma <= 0 or self.hparams.lam <= 0:
            raise InvalidInputError(f"eszsl: gamma={self.hparams.gamma}, lam={self.hparams.lam}; both must be > 0")
        self._require_choice("ridge", RIDGES)
        self._require_choice("kernel", KERNELS)
        # the rbf map replaces the D input dims by one per landmark
        self.kmap = RbfNystroem(self.feature_dim, self.hparams.feature_groups, self.hparams.landmarks) \
            if self.hparams.kernel == "rbf" else None
        width = self.kmap.out_dim if self.kmap is not None else self.feature_dim
        self.register_buffer("V", torch.zeros(width, self.semantic_dim))
        self.register_buffer("mean", torch.zeros(width))

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        # The paper searches 10^-3..10^3 on both. Each gamma costs a D x D Cholesky (seconds at
        # D = 8k), so the grid keeps the range that is competitive on *validation* classes: on
        # awa1-lampert val, centred features with an absolute gamma of 1-100 and lambda 0.1-10
        # (gamma 1e-2 / 1e3 and lambda 1e2 were never close). One relative ridge (the mean
        # eigenvalue of X X^T) covers raw CNN features, where absolute values are ill-conditioned.
        # The rbf map (3,000 landmark dims, unit-diagonal kernel) needs a smaller absolute gamma:
        # on awa1-lampert val its best is gamma 1 (0.1-1 within 0.001 top-1), lambda 1.
        # The relative ridge is a 3 x 4 grid (three factorisations): on CUB val (EfficientNet-Lite2
        # photo features, seed 0) its best is gamma 1, lambda 0.3 (val top-1 0.554, against 0.541 for
        # the best of the former gamma-1 x lambda {0.1, 1, 10} row); gamma 0.1 and lambda <= 0.03 were
        # never close (<= 0.52).
        grid = [{"gamma": g, "lam": lam, "ridge": "absolute"}
                for g, lam in itertools.product((1.0, 10.0, 100.0), (0.1, 1.0, 10.0))]
        grid += [{"gamma": g, "lam": lam, "ridge": "relative"}
                 for g, lam in itertools.product((1.0, 0.3, 3.0), (0.1, 1.0, 10.0, 0.3))]
        return grid + [{"gamma": g, "lam": lam, "ridge": "absolute", "kernel": "rbf"}
                       for g, lam in itertools.product((0.1, 1.0, 10.0), (0.1, 1.0, 10.0))]

    def _set(self, v: np.ndarray) -> None:
        self.V.copy_(torch.from_numpy(v).to(self.V))

    @classmethod
    def make_solver(cls, x: Tensor, y: Tensor, s: Tensor, hparams: EszslHparams, *, seed: int = 0) -> _EszslSolver:
        kmap = RbfNystroem(x.shape[1], hparams.feature_groups, hparams.landmarks) if hparams.kernel == "rbf" else None
        return _EszslSolver(x, y, s, center=hparams.center, kmap=kmap, seed=seed)

    def solver_key(self) -> tuple:
        hp = self.hparams
        if hp.kernel == "linear":
            return (bool(hp.center), "linear")
        return (bool(hp.center), hp.kernel, int(hp.landmarks), tuple(hp.feature_groups or ()))

    def fit_from(self, solver: _EszslSolver) -> list[float]:
        """V for this (gamma, lambda) from the shared solver; returns [objective per image]."""
        hp = self.hparams
        gamma = hp.gamma * (solver.mean_eigenvalue if hp.ridge == "relative" else 1.0)
        v = solver.solve(gamma, hp.lam)
        self._set(v)
        self.mean.copy_(solver.mean.to(self.mean))
        if self.kmap is not None:
            self.kmap.load_state_dict(solver.kmap.state_dict())
        return [solver.loss(v, gamma, hp.lam)]

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, A): (phi(x) - mean) V, phi the fitted kernel map (identity when linear)."""
        x = x.to(self.V)
        if self.kmap is not None:
            x = self.kmap(x)
        return (x - self.mean) @ self.V

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, A): the semantics themselves."""
        return s.to(self.V)
