"""Zero-shot deep metric learning (DML): a general-purpose embedding for classes never seen.

Pieces, all trained together on the seen classes:

* **Attention-weighted fusion of feature groups.** The input is split into its feature groups
  (``feature_groups``; e.g. awa1-lampert = lss, sift, surf, rgsift, phog of 2000, 2000, 2000,
  2000, 252 dims; None = one group), each reduced by its own PCA (``pca_dim``, fitted on the
  training images, see :class:`~.layers.PCAReduce`). Each group has its own trainable projection to ``group_dim``; a small
  attention network scores each projected group per image and the softmax-weighted sum is mapped
  to the embedding. So the model learns, per image, which descriptor to trust -- the feature-space
  analogue of fusing a backbone's intermediate feature maps.
* **Metric-learning loss** from pytorch-metric-learning (MultiSimilarityLoss with its miner) on
  the L2-normalised embeddings: images of a class close, other classes apart.
* **Class-adversarial branch.** A seen-class classifier reads the embedding through a gradient
  reversal layer: the classifier learns to predict the class while the reversed gradient (scaled
  by ``adv_weight``, kept small) pushes the embedding away from features that identify the *seen*
  classes as such, toward class-general structure that transfers to unseen ones. The classifier
  has one row per seen class, so it exists only during ``fit`` (never used for retrieval, never
  checkpointed).
* **Queries from attributes.** A semantic MLP maps class descriptors into the embedding space,
  trained jointly by a cosine softmax over the seen classes (image embedding vs. mapped
  descriptors), so an unseen class described by its attributes lands among its images.

``embed_images`` = fused embedding, ``embed_classes`` = mapped descriptors, cosine (``metric="ip"``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams
from .layers import PCAReduce, mlp
from .training import IterativeModel, TrainingSetup, check_embed_input

__all__ = ["DML", "DMLHparams", "GradientReversal", "grad_reverse"]

class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, lam: float) -> Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lam * grad, None


def grad_reverse(x: Tensor, lam: float = 1.0) -> Tensor:
    """Identity forward; multiplies the incoming gradient by ``-lam`` backward (Ganin & Lempitsky)."""
    return _GradReverse.apply(x, lam)


class GradientReversal(nn.Module):
    def __init__(self, lam: float = 1.0):
        super().__init__()
        self.lam = lam

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lam)


@dataclasses.dataclass
class DMLHparams(Hparams):
    feature_groups: list[int] | None = None   # sizes of the input's feature groups, in order; None = one
    pca_dim: int = 256             # per-group input PCA fitted on training images (models.layers.PCAReduce); 0 = off
    group_dim: int = 128           # per-group projection width
    attention_dim: int = 64
    embed_dim: int = 128
    semantic_hidden_dim: int = 256
    dropout: float = 0.3
    ms_alpha: float = 2.0          # MultiSimilarityLoss (pytorch-metric-learning defaults)
    ms_beta: float = 50.0
    ms_base: float = 0.5
    miner_epsilon: float = 0.1
    metric_weight: float = 1.0
    semantic_weight: float = 1.0   # cosine softmax between images and mapped descriptors
    scale: float = 16.0
    adv_weight: float = 0.05       # gradient-reversal strength into the embedding
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    epochs: int = 25


@MODELS.register("dml")
class DML(IterativeModel):
    """Attention-fused feature groups + MS loss + gradient-reversed class adversary; attribute queries."""

    name = "dml"
    metric = "ip"
    Hparams = DMLHparams

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: DMLHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        groups = [self.feature_dim] if hp.feature_groups is None else [int(g) for g in hp.feature_groups]
        if not groups or min(groups) < 1 or sum(groups) != self.feature_dim:
            raise InvalidInputError(f"dml: feature_groups={hp.feature_groups} must be positive sizes summing to "
                                    f"the feature dim {self.feature_dim} (or None for one group)")
        self._require_positive("group_dim", "attention_dim", "embed_dim", "semantic_hidden_dim", "batch_size", "epochs")
        self.reduce = PCAReduce(groups, hp.pca_dim)
        self.groups = self.reduce.out_groups
        self.group_proj = nn.ModuleList(
            nn.Sequential(nn.Linear(g, hp.group_dim), nn.LayerNorm(hp.group_dim), nn.ReLU()) for g in self.groups)
        self.attention = nn.Sequential(nn.Linear(hp.group_dim, hp.attention_dim), nn.Tanh(),
                                       nn.Linear(hp.attention_dim, 1))
        self.head = nn.Sequential(nn.Dropout(hp.dropout), nn.Linear(hp.group_dim, hp.embed_dim))
        self.semantic_net = mlp([self.semantic_dim, hp.semantic_hidden_dim, hp.embed_dim], act=nn.LeakyReLU)

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        return [{"adv_weight": 0.05}, {"adv_weight": 0.0}, {"adv_weight": 0.05, "metric_weight": 0.3}]

    # -- embeddings -------------------------------------------------------------------------
    def group_attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """PCA-reduced x (N, sum(reduce.out_groups)) -> fused (N, group_dim), attention (N, G), rows sum to 1."""
        parts = torch.split(x, self.groups, dim=1)
        h = torch.stack([proj(p) for proj, p in zip(self.group_proj, parts)], dim=1)  # (N, G, group_dim)
        a = torch.softmax(self.attention(h).squeeze(-1), dim=1)
        return (a.unsqueeze(-1) * h).sum(1), a

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, E) image embeddings."""
        x = check_embed_input(self, x, self.feature_dim, "image features")
        return self._embed_reduced(self.reduce(x))

    def _embed_reduced(self, xr: Tensor) -> Tensor:
        return self.head(self.group_attention(xr)[0])

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, E) class descriptors mapped into the embedding space."""
        return self.semantic_net(check_embed_input(self, s, self.semantic_dim, "class semantics"))

    # -- training ---------------------------------------------------------------------------
    def _metric_loss(self) -> tuple[nn.Module, nn.Module]:
        hp = self.hparams
        return (pml_losses.MultiSimilarityLoss(alpha=hp.ms_alpha, beta=hp.ms_beta, base=hp.ms_base),
                pml_miners.MultiSimilarityMiner(epsilon=hp.miner_epsilon))

    def prepare_inputs(self, x: Tensor) -> Tensor:
        return self.reduce(x)

    def loss_terms(self, x: Tensor, y: Tensor, s: Tensor, *, adv_head: nn.Module | None = None,
                   metric_loss: tuple[nn.Module, nn.Module] | None = None, reduced: bool = False,
                   epoch: int | None = None) -> dict[str, Tensor]:
        """Loss of one batch: x (B, D) (or PCA-reduced when ``reduced``), y (B,) rows of s (C, A).
        ``adv_head`` (E -> C) enables the gradient-reversed adversary. Returns raw terms ``metric``,
        ``semantic``, ``adv`` and ``loss``."""
        return super().loss_terms(x, y, s, epoch=epoch, reduced=reduced, adv_head=adv_head,
                                  metric_loss=metric_loss if metric_loss is not None else self._metric_loss())

    def compute_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None,
                      adv_head: nn.Module | None = None, metric_loss: tuple[nn.Module, nn.Module] | None = None,
                      **objects: Any) -> dict[str, Tensor]:
        """x (B, D') PCA-reduced, y (B,) rows of s (C, A). Terms: metric, semantic, adv."""
        hp = self.hparams
        loss_fn, miner = metric_loss
        e = self._embed_reduced(x)
        en = F.normalize(e, dim=1)
        metric = loss_fn(en, y, miner(en, y))
        w = F.normalize(self.semantic_net(s), dim=1)
        semantic = F.cross_entropy(hp.scale * en @ w.T, y)
        if adv_head is not None:
            # The adversary descends on this CE while the reversal makes the embedding ascend on it.
            adv = F.cross_entropy(adv_head(grad_reverse(en, hp.adv_weight)), y)
        else:
            adv = torch.zeros((), device=x.device)
        return {"metric": metric, "semantic": semantic, "adv": adv}

    def loss_weights(self, epoch: int | None) -> dict[str, float]:
        hp = self.hparams
        # adv's strength is the gradient-reversal factor adv_weight; its own weight stays 1 so the
        # adversary head itself learns at full rate.
        return {"metric": hp.metric_weight, "semantic": hp.semantic_weight, "adv": 1.0}

    def setup_training(self, x: Tensor, y: Tensor, s: Tensor, gen: torch.Generator, *,
                       seed: int) -> TrainingSetup:
        hp = self.hparams
        # Training-only: one row per seen class, discarded after fit (see module docstring).
        adv_head = nn.Sequential(nn.Linear(hp.embed_dim, hp.embed_dim), nn.ReLU(),
                                 nn.Linear(hp.embed_dim, s.shape[0])).to(x.device)
        self.reduce.fit(x, gen)
        use_adv = hp.adv_weight > 0
        return TrainingSetup(x=self.reduce.transform(x),
                             objects={"adv_head": adv_head if use_adv else None, "metric_loss": self._metric_loss()},
                             params=list(adv_head.parameters()) if use_adv else [])
