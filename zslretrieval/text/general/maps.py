"""The text -> visual maps: DEM (fitted), ridge (closed form), semantic neighbours (no fitting), and ConSE.

Each takes (n, 384) sentence embeddings to (n, D) vectors in the backbone's pooled-feature space.
The deployed map is one of DEM, ridge, neighbours or an even mix of two (``hparams["mix"]``: each
map's share of the summed unit outputs, :func:`_predict`); ConSE is a baseline measured beside them.

ConSE (Norouzi et al. 2014): an image is the convex combination of the text embeddings of its
top-T classes, weighted by the classifier's softmax; on held-out classes the "image" is the
held-out prototype and its class probabilities a softmax over cosine to the train prototypes.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ...errors import CheckpointError
from .vectors import _unit, softmax

if TYPE_CHECKING:
    from ...models.dem import Dem

MAPS = ("dem", "ridge", "nbr")
DEM_HIDDEN = 512


class Neighbours(NamedTuple):
    """What the semantic-neighbour map reads (:func:`neighbour_map`): the known names' text
    embeddings (K, 384), their unit prototypes (K, D), how many neighbours and the softmax temperature."""

    known_text: np.ndarray
    known_protos: np.ndarray
    top: int
    tau: float


def fit_ridge(t: np.ndarray, v: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge text (n, T) -> visual (n, D) with an unpenalised bias; returns M (T+1, D): ``[t, 1] @ M``."""
    x = np.c_[t.astype(np.float64), np.ones(len(t))]
    reg = alpha * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + reg, x.T @ v.astype(np.float64)).astype(np.float32)


def apply_ridge(m: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(n, T) texts -> (n, D) through the ridge matrix ``m`` (T+1, D) of :func:`fit_ridge`."""
    return (np.asarray(t, np.float32) @ m[:-1] + m[-1]).astype(np.float32)


def conse_embed(probs: np.ndarray, class_text: np.ndarray, top: int) -> np.ndarray:
    """ConSE: (N, C) class probabilities -> (N, T) unit text-space embeddings from each row's top-``top`` classes."""
    top = min(int(top), probs.shape[1])
    idx = np.argpartition(-probs, top - 1, axis=1)[:, :top]
    p = np.take_along_axis(probs, idx, 1)
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return _unit(np.einsum("nt,ntd->nd", p, class_text[idx])).astype(np.float32)


def neighbour_map(t: np.ndarray, known_text: np.ndarray, known_protos: np.ndarray, top: int, tau: float,
                  exclude_self: bool = False) -> np.ndarray:
    """Semantic neighbours: (n, 384) texts -> (n, D) unit mean of the prototypes of each text's ``top``
    nearest known names (text cosine), weighted by softmax(tau x cosine). ``exclude_self``: row i of
    ``t`` is known name i and may not use itself (the reference vocabulary's own queries)."""
    s = _unit(np.asarray(t, np.float64)) @ _unit(np.asarray(known_text, np.float64)).T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    top = min(int(top), s.shape[1])
    idx = np.argpartition(-s, top - 1, axis=1)[:, :top]
    w = softmax(tau * np.take_along_axis(s, idx, 1))
    return _unit(np.einsum("nt,ntd->nd", w, np.asarray(known_protos, np.float64)[idx])).astype(np.float32)


def _dem(dim: int, hp: dict[str, Any]) -> Dem:
    from ...models import create_model
    # Targets are signed unit prototypes: no output ReLU, no feature normalisation (the space must
    # stay the index's raw-feature space).
    return create_model("dem", feature_dim=dim, semantic_dims=[384],
                        hparams={"hidden": DEM_HIDDEN, "lr": 1e-3, "batch_size": 32, "feature_norm": "none",
                                 "unit_norm": False, "output_relu": "off", **hp})


def _fit_dem(t: np.ndarray, v: np.ndarray, hp: dict[str, Any], epochs: int, seed: int,
             on_epoch: Callable[[int, Dem], None] | None = None) -> Dem:
    """DEM fitted on texts t (n, 384) -> targets v (n, D), ``on_epoch(epoch, model)`` after each epoch."""
    import torch
    model = _dem(v.shape[1], hp)
    model.fit(torch.from_numpy(np.ascontiguousarray(v, np.float32)), torch.arange(len(v)),
              torch.from_numpy(np.ascontiguousarray(t, np.float32)), seed=seed, epochs=epochs,
              on_epoch=None if on_epoch is None else (lambda ep: on_epoch(ep, model)))
    return model


class DemArrays(NamedTuple):
    """A fitted DEM (``models.dem.Dem`` with ``_dem``'s settings) as numpy arrays, for prediction with no
    torch: ``y = relu(fusion x (t @ w1.T + b1)) @ w2.T + b2``, then a ReLU when ``relu_out``. w1 (H, 384),
    b1 (H,), w2 (D, H), b2 (D,): the torch layers' own weights (``nn.Linear`` stores (out, in))."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    fusion: float
    relu_out: bool

    @classmethod
    def from_dem(cls, model: Dem) -> DemArrays:
        """The arrays of a fitted one-modality DEM whose visual space is the raw one (no feature norm)."""
        if len(model.branches) != 1 or model.hparams.feature_norm != "none":
            raise CheckpointError(f"general model DEM: {len(model.branches)} modalities, feature_norm "
                                  f"{model.hparams.feature_norm!r}; expected one text branch in the raw space")
        def arr(x): return np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)   # noqa: E306
        branch = model.branches[0]
        return cls(arr(branch.weight), arr(branch.bias), arr(model.out.weight), arr(model.out.bias),
                   float(model.fusion[0]), bool(model.relu_out))

    def forward(self, t: np.ndarray) -> np.ndarray:
        """(n, 384) texts -> (n, D) float32: ``Dem.embed_classes`` in numpy (equal to ~1e-6)."""
        h = np.float32(self.fusion) * (np.asarray(t, np.float32) @ self.w1.T + self.b1)
        o = np.maximum(h, 0.0) @ self.w2.T + self.b2
        return (np.maximum(o, 0.0) if self.relu_out else o).astype(np.float32, copy=False)


def _dem_predict(model: Dem | DemArrays, t: np.ndarray) -> np.ndarray:
    """(n, 384) texts -> (n, D) DEM outputs (not unit-normalised): numpy for a loaded model's arrays,
    torch for a DEM being fitted (the build's steps)."""
    if isinstance(model, DemArrays):
        return model.forward(t)
    import torch
    with torch.no_grad():
        return model.embed_classes(torch.from_numpy(np.ascontiguousarray(t, np.float32))).numpy()


def _predict(mix: dict[str, float], ridge: np.ndarray | None, dem: Dem | DemArrays | None, nbr: Neighbours | None,
             t: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Unit (n, D): the unit outputs of the maps in ``mix`` for text embeddings t (n, 384), summed with
    their shares. ``nbr``: the neighbour map's inputs; ``exclude_self``: t are the known names."""
    out = 0.0
    for name, share in mix.items():
        if name == "dem":
            y = _unit(_dem_predict(dem, t))
        elif name == "ridge":
            y = _unit(apply_ridge(ridge, t))
        elif name == "nbr":
            y = neighbour_map(t, nbr.known_text, nbr.known_protos, nbr.top, nbr.tau, exclude_self)
        else:
            raise CheckpointError(f"general model map {name!r}; expected one of {', '.join(MAPS)}")
        out = out + float(share) * np.asarray(y, np.float64)
    return _unit(out).astype(np.float32)


def _method_of(mix: dict[str, float]) -> str:
    """The maps of ``mix`` joined in ``MAPS`` order ("dem+nbr"): the model's ``method``."""
    return "+".join(m for m in MAPS if m in mix)
