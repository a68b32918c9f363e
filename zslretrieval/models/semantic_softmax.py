"""Semantic Softmax Loss (SSL; Ji et al., "Semantic softmax loss for zero-shot learning", 2018).

Zero-shot learning as ordinary multi-class classification whose softmax weights are not free
parameters but are *generated* from each class's semantic descriptor by a nonlinear network:

    f(x) = image MLP (D -> H -> E)            g(s) = semantic MLP (A -> Hs -> E)
    logit_c(x) = scale * cos(f(x), g(s_c))

Because a class's weight vector is a function of its descriptor, an unseen class gets one at
test time from its attributes alone. The paper adds an L2 constraint between the *visual
features* and the *prototype reconstructed from the class semantics in the visual space*:

    L = CE(logits, y) + l2_weight * mean_dims (v(x) - R g(s_y))^2

where v(x) is the visual feature the image network reads (the input after the fitted PCA, scaled
by one global factor so the term is O(1) whatever the feature magnitude) and R (E -> D') a linear
reconstruction from the generated weight. The term does not move with the softmax logit: it
makes each generated weight carry its class's visual mean, so prototypes of unseen classes sit
where their images are (it helps ranking by similarity). ``use_l2_constraint=False`` is the
ablation. Retrieval compares f(x) and g(s) by cosine (``metric="ip"``). Inputs wider than
``pca_dim`` are first projected by a PCA fitted on the training images (:class:`~.layers.PCAReduce`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InvalidInputError
from . import MODELS
from .layers import PCAReduce, mlp
from .base import Hparams
from .training import IterativeModel, TrainingSetup, check_embed_input

__all__ = ["SemanticSoftmax", "SemanticSoftmaxHparams"]


# -- the model -------------------------------------------------------------------------------
@dataclasses.dataclass
class SemanticSoftmaxHparams(Hparams):
    pca_dim: int = 256             # input PCA (fitted on the training images); 0 = off
    hidden_dim: int = 512          # image MLP hidden width (D -> hidden -> embed)
    embed_dim: int = 256
    semantic_hidden_dim: int = 256
    dropout: float = 0.3
    scale: float = 16.0            # softmax temperature on cosine logits
    use_l2_constraint: bool = True
    l2_weight: float = 1.0
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 25


# Registered as "ssl" (the name on the CLI and in checkpoints); "semantic-softmax" spells it out.
@MODELS.register("ssl", aliases=("semantic-softmax",))
class SemanticSoftmax(IterativeModel):
    """Semantic softmax loss: class weights generated from semantics; cosine retrieval."""

    name = "ssl"
    metric = "ip"
    Hparams = SemanticSoftmaxHparams

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: SemanticSoftmaxHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        self._require_positive("hidden_dim", "embed_dim", "semantic_hidden_dim", "batch_size", "epochs")
        if not 0 <= hp.dropout < 1:
            raise InvalidInputError(f"ssl: dropout={hp.dropout}; expected 0 <= dropout < 1")
        self.reduce = PCAReduce([self.feature_dim], hp.pca_dim)
        self.image_net = mlp([self.reduce.out_dim, hp.hidden_dim, hp.embed_dim], hp.dropout)
        # LeakyReLU as in the paper's semantic branch: attribute vectors are small and dense,
        # dead ReLUs there would silently drop attributes from every class's prototype.
        self.semantic_net = mlp([self.semantic_dim, hp.semantic_hidden_dim, hp.embed_dim], act=nn.LeakyReLU)
        # R: generated weight -> visual prototype (the L2 constraint's reconstruction)
        self.reconstruct = nn.Linear(hp.embed_dim, self.reduce.out_dim)
        # one global scale of the visual features, fitted on the training images
        self.register_buffer("v_scale", torch.ones(()))

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        # The last candidate: on CUB val (EfficientNet-Lite2 photo features, seed 0) scale 8 won
        # (0.589; scale 4: 0.551, l2_weight 3: 0.588) and a 128-d input PCA edged it (0.595; 512-d: 0.564).
        return [{"l2_weight": 0.3}, {"l2_weight": 1.0}, {"l2_weight": 1.0, "scale": 8.0},
                {"l2_weight": 1.0, "scale": 8.0, "pca_dim": 128}]

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, E) visual embeddings f(x)."""
        return self.image_net(self.reduce(check_embed_input(self, x, self.feature_dim, "image features")))

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, E) generated softmax weights g(s)."""
        return self.semantic_net(check_embed_input(self, s, self.semantic_dim, "class semantics"))

    @torch.no_grad()
    def visual_prototypes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, D') prototypes reconstructed in the visual feature space, on the scale of v(x)."""
        return self.reconstruct(self.embed_classes(s))

    def visual_features(self, xr: Tensor) -> Tensor:
        """PCA-reduced x (N, D') -> v(x) (N, D'), the target of the L2 constraint."""
        return xr / self.v_scale

    # -- training ---------------------------------------------------------------------------
    def prepare_inputs(self, x: Tensor) -> Tensor:
        return self.reduce(x)

    def setup_training(self, x: Tensor, y: Tensor, s: Tensor, gen: torch.Generator, *,
                       seed: int) -> TrainingSetup:
        self.reduce.fit(x, gen)
        xr = self.reduce.transform(x)
        with torch.no_grad():
            rms = xr.pow(2).mean().sqrt()
            self.v_scale.copy_(rms if rms > 0 else torch.ones(()))
        return TrainingSetup(x=xr)

    def compute_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None,
                      **objects: Any) -> dict[str, Tensor]:
        """x (B, D') PCA-reduced, y (B,) rows of s (C, A). Terms: ce, l2."""
        hp = self.hparams
        f = F.normalize(self.image_net(x), dim=1)
        g = self.semantic_net(s)
        ce = F.cross_entropy(hp.scale * f @ F.normalize(g, dim=1).T, y)
        l2 = (self.visual_features(x) - self.reconstruct(g)[y]).pow(2).mean(1).mean()
        return {"ce": ce, "l2": l2}

    def loss_weights(self, epoch: int | None) -> dict[str, float]:
        hp = self.hparams
        return {"ce": 1.0, "l2": hp.l2_weight if hp.use_l2_constraint else 0.0}
