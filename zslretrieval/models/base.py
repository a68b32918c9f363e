"""The contract every zero-shot embedding model implements.

A model maps images (N, D) and class semantics (C, A) into one embedding space, where a
class's embedding is the query and images are the gallery. ``metric`` says how the two are
compared, the same way in evaluation and in the FAISS index:

* ``"ip"``: cosine similarity -- both sides L2-normalised, then inner product.
* ``"l2"``: negative squared Euclidean distance (DEM's nearest neighbour in visual space).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError

METRICS = ("ip", "l2")


@dataclasses.dataclass
class Hparams:
    """Base for a model's hyper-parameters; subclasses add fields with defaults."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pairwise_scores(q: Tensor, g: Tensor, metric: str) -> Tensor:
    """Scores (Q, N) of queries q (Q, E) against gallery g (N, E); higher is better."""
    if metric == "ip":
        return nn.functional.normalize(q, dim=1) @ nn.functional.normalize(g, dim=1).T
    if metric == "l2":
        return -torch.cdist(q, g).pow(2)
    raise InvalidInputError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


class ZslModel(nn.Module):
    """Base class. Subclasses set ``name``, ``metric``, ``Hparams`` and implement the abstract methods.

    Constructor: ``Model(feature_dim, semantic_dims, hparams)`` where ``semantic_dims`` lists the
    widths of the semantic modalities concatenated in ``s`` (``[A]`` for attributes alone,
    ``[A, W]`` for attributes fused with word/sentence vectors). Models that do not fuse treat
    ``s`` as one vector.
    """

    name: ClassVar[str] = "base"
    metric: ClassVar[str] = "ip"
    Hparams: ClassVar[type[Hparams]] = Hparams
    # True when training length (epochs) is a hyper-parameter the protocol tunes on val.
    iterative: ClassVar[bool] = True

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int, hparams: Hparams | dict | None = None):
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.semantic_dims = [int(semantic_dims)] if isinstance(semantic_dims, int) else [int(d) for d in semantic_dims]
        self.hparams = self._coerce_hparams(hparams)

    @property
    def semantic_dim(self) -> int:
        return sum(self.semantic_dims)

    @classmethod
    def _coerce_hparams(cls, hparams: Hparams | dict | None) -> Hparams:
        if hparams is None:
            return cls.Hparams()
        if isinstance(hparams, cls.Hparams):
            return hparams
        fields = {f.name for f in dataclasses.fields(cls.Hparams)}
        bad = sorted(set(hparams) - fields)
        if bad:
            raise InvalidInputError(f"{cls.name}: unknown hyper-parameter(s) {bad}; valid: {sorted(fields)}")
        return cls.Hparams(**hparams)

    def _require_positive(self, *keys: str) -> None:
        """Raise InvalidInputError naming the first hyper-parameter in ``keys`` that is < 1."""
        for key in keys:
            value = getattr(self.hparams, key)
            if value < 1:
                raise InvalidInputError(f"{self.name}: {key}={value}; expected a positive integer")

    def _require_choice(self, key: str, valid: Sequence[str]) -> None:
        """Raise InvalidInputError when hyper-parameter ``key`` is not one of ``valid``."""
        value = getattr(self.hparams, key)
        if value not in valid:
            raise InvalidInputError(f"{self.name}: {key}={value!r}; valid: {', '.join(valid)}")

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        """Hyper-parameter candidates the protocol tries on the validation classes."""
        return [{}]

    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Train on seen classes only.

        x (N, D) float32 image features; y (N,) int64 indices into the rows of s;
        s (C_seen, A) float32 semantics of the *training* classes only, so unseen classes
        cannot leak in. ``epochs`` overrides the hyper-parameter; ``on_epoch(e)`` is called
        after each epoch (1-based) with the model in a usable state, for validation curves.
        Returns the mean training loss of each epoch.
        """
        raise NotImplementedError

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) image features -> (N, E) gallery embeddings."""
        raise NotImplementedError

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) class semantics -> (C, E) query embeddings."""
        raise NotImplementedError

    @torch.no_grad()
    def scores(self, x: Tensor, s: Tensor) -> Tensor:
        """(N, C) compatibility of each image with each class; argmax is the prediction."""
        self.eval()
        return pairwise_scores(self.embed_images(x), self.embed_classes(s), self.metric)
