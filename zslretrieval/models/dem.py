"""DEM: "Learning a Deep Embedding Model for Zero-Shot Learning" (Zhang, Xiang, Gong, CVPR 2017).

The visual space is the embedding space: class semantics are mapped to a visual prototype

    f(s) = ReLU(W2 ReLU(sum_m w_m (W1_m s_m + b1_m)) + b2)      (hidden width H, output D)

and trained by least squares to the feature of every training image of that class,

    loss = mean_batch sum_dims (f(s_y) - x)^2 + weight_decay * sum_layers ||W||_F^2,

with Adam and minibatches of 64 images (official code: lr 1e-4, weight decay 1e-3). A test image
is assigned to the nearest prototype (``metric="l2"``); ``embed_images`` is the identity (or the
standardisation below). Each semantic modality m of ``semantic_dims = [A, W, ...]`` has its own
first layer and the branches are summed with weights ``fusion_weights`` -- the paper's
multi-modal variant (attributes + word vectors / sentences).

``standardize=True`` (chosen on validation like any hyper-parameter) regresses per-dimension
standardised features instead: mean/std of the training images are buffers and images are
embedded as ``(x - mean) / std``. The output ReLU (``output_relu="auto"``) is kept only when all
training targets are non-negative (CNN or histogram features, as in the paper); signed targets
(standardised or generated features) could not be reached through it.
"""
from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams, ZslModel
from .eszsl import _check_fit_inputs


@dataclasses.dataclass
class DemHparams(Hparams):
    hidden: int = 700
    weight_decay: float = 1e-3
    lr: float = 1e-4
    batch_size: int = 64
    epochs: int = 30                      # upper bound; the protocol picks the best epoch on val
    standardize: bool = False
    # "auto": output ReLU iff every training feature is >= 0 (CNN / histogram features, as in the
    # paper); signed features (standardised, generated) cannot be reached through a ReLU.
    output_relu: str = "auto"             # "auto" | "on" | "off"
    fusion_weights: list[float] | None = None   # one per modality; None = all 1


@MODELS.register("dem")
class Dem(ZslModel):
    name = "dem"
    metric = "l2"
    Hparams = DemHparams
    iterative = True

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int, hparams: DemHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        if hp.hidden < 1 or hp.batch_size < 1 or hp.epochs < 1 or hp.lr <= 0 or hp.weight_decay < 0:
            raise InvalidInputError(
                f"dem: hidden={hp.hidden}, batch_size={hp.batch_size}, epochs={hp.epochs}, lr={hp.lr}, "
                f"weight_decay={hp.weight_decay}; need hidden, batch_size, epochs >= 1, lr > 0, weight_decay >= 0")
        weights = hp.fusion_weights if hp.fusion_weights is not None else [1.0] * len(self.semantic_dims)
        if len(weights) != len(self.semantic_dims):
            raise InvalidInputError(f"dem: {len(weights)} fusion_weights for {len(self.semantic_dims)} semantic "
                                    f"modalities {self.semantic_dims}; give one weight per modality")
        self.branches = nn.ModuleList(nn.Linear(d, hp.hidden) for d in self.semantic_dims)
        self.out = nn.Linear(hp.hidden, self.feature_dim)
        if hp.output_relu not in ("auto", "on", "off"):
            raise InvalidInputError(f"dem: output_relu={hp.output_relu!r}; valid: auto, on, off")
        self.register_buffer("fusion", torch.tensor(weights, dtype=torch.float32))
        # decided in fit() when output_relu="auto"; a buffer so checkpoints keep the decision
        self.register_buffer("relu_out", torch.tensor(hp.output_relu == "on"))
        self.register_buffer("feat_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feat_std", torch.ones(self.feature_dim))

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        # Small on purpose: each candidate is a full training run on CPU. Epochs are chosen on val.
        return [{"hidden": h, "weight_decay": wd, "lr": lr}
                for h, wd, lr in itertools.product((700,), (1e-4, 1e-3), (1e-4, 3e-4))]

    def _reset(self, seed: int) -> None:
        torch.manual_seed(seed)
        for layer in [*self.branches, self.out]:
            layer.reset_parameters()

    def prototypes(self, s: Tensor) -> Tensor:
        """(C, sum(semantic_dims)) semantics -> (C, D) visual prototypes (standardised if ``standardize``)."""
        parts = torch.split(s, self.semantic_dims, dim=1)
        h = sum(w * branch(p) for w, branch, p in zip(self.fusion, self.branches, parts))
        o = self.out(torch.relu(h))
        return torch.relu(o) if bool(self.relu_out) else o

    def _penalty(self) -> Tensor:
        return sum(layer.weight.pow(2).sum() for layer in [*self.branches, self.out])

    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Adam on minibatches of images; returns the mean loss of each epoch (data term + penalty)."""
        _check_fit_inputs(x, y, s, self.feature_dim, self.semantic_dim, self.name)
        hp = self.hparams
        n_epochs = hp.epochs if epochs is None else int(epochs)
        if n_epochs < 1:
            raise InvalidInputError(f"dem: epochs={n_epochs}; must be >= 1")
        dev = self.out.weight.device
        x = x.to(dev, torch.float32)
        y = y.to(dev, torch.int64)
        s = s.to(dev, torch.float32)
        self._reset(seed)
        if hp.standardize:
            self.feat_mean.copy_(x.mean(0))
            # constant dimensions (all-zero histogram bins) would divide by zero
            self.feat_std.copy_(x.std(0).clamp_min(1e-6))
        else:
            self.feat_mean.zero_()
            self.feat_std.fill_(1.0)
        target = (x - self.feat_mean) / self.feat_std if hp.standardize else x
        if hp.output_relu == "auto":
            self.relu_out.fill_(bool((target >= 0).all()))
        weights = [layer.weight for layer in [*self.branches, self.out]]
        biases = [layer.bias for layer in [*self.branches, self.out]]
        # Adam's (coupled) weight_decay adds wd * W to the gradient: exactly the gradient of the
        # penalty weight_decay * ||W||^2 when wd = 2 * weight_decay, without a 6M-element temporary.
        opt = torch.optim.Adam([{"params": weights, "weight_decay": 2 * hp.weight_decay},
                                {"params": biases, "weight_decay": 0.0}], lr=hp.lr, fused=True)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        n = len(x)
        losses = []
        for epoch in range(1, n_epochs + 1):
            self.train()
            order = torch.randperm(n, generator=gen).to(dev)
            total = 0.0
            for start in range(0, n, hp.batch_size):
                idx = order[start:start + hp.batch_size]
                yb = y[idx]
                # f depends on the class only: run it once per distinct class in the batch
                cls, inv = torch.unique(yb, return_inverse=True)
                pred = self.prototypes(s[cls])[inv]
                data = (pred - target[idx]).pow(2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                data.backward()
                opt.step()
                total += float(data.detach()) * len(idx)
            with torch.no_grad():
                losses.append(total / n + hp.weight_decay * float(self._penalty()))
            self.eval()
            if on_epoch is not None:
                on_epoch(epoch)
        self.eval()
        return losses

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, D): identity, or standardised features when ``standardize``."""
        x = x.to(self.feat_mean)
        return (x - self.feat_mean) / self.feat_std if self.hparams.standardize else x

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, D) visual prototypes."""
        return self.prototypes(s.to(self.feat_mean))
