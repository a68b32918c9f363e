"""Semantic Softmax Loss (SSL; Ji et al., "Semantic softmax loss for zero-shot learning", 2018).

Zero-shot learning as ordinary multi-class classification whose softmax weights are not free
parameters but are *generated* from each class's semantic descriptor by a nonlinear network:

    f(x) = image MLP (D -> H -> E)            g(s) = semantic MLP (A -> Hs -> E)
    logit_c(x) = scale * cos(f(x), g(s_c))

Because a class's weight vector is a function of its descriptor, an unseen class gets one at
test time from its attributes alone. The paper adds an L2 constraint that pulls each image's
visual feature onto the visual prototype reconstructed from its class semantics,

    L = CE(logits, y) + l2_weight * || f(x)/|f(x)| - g(s_y)/|g(s_y)| ||^2,

which keeps the generated prototypes *in* the visual space (not just on the right side of a
decision boundary) and so helps retrieval by similarity. ``use_l2_constraint=False`` is the
ablation. Retrieval compares f(x) and g(s) by cosine (``metric="ip"``). Inputs wider than
``pca_dim`` are first projected by a PCA fitted on the training images (:class:`PCAReduce`).

This module also holds the small training helpers the other neural seed models share
(:func:`check_fit_inputs`, :func:`minibatches`, :func:`seeded_training`).
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams, ZslModel

__all__ = ["PCAReduce", "SemanticSoftmax", "SemanticSoftmaxHparams", "check_fit_inputs", "minibatches",
           "run_epochs", "seeded_training"]


# -- helpers shared by the neural seed models (ssl, acmr, dml) ---------------------------------
def check_fit_inputs(model: ZslModel, x: Tensor, y: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and convert fit inputs: x (N, D) float32, y (N,) int64 in [0, C), s (C, A) float32."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    s = torch.as_tensor(s, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != model.feature_dim:
        raise InvalidInputError(f"{model.name}: image features of shape {tuple(x.shape)}; "
                                f"expected (N, {model.feature_dim})")
    if s.ndim != 2 or s.shape[1] != model.semantic_dim:
        raise InvalidInputError(f"{model.name}: class semantics of shape {tuple(s.shape)}; "
                                f"expected (C, {model.semantic_dim})")
    if y.shape != (x.shape[0],):
        raise InvalidInputError(f"{model.name}: labels of shape {tuple(y.shape)}; expected ({x.shape[0]},)")
    if len(y) == 0:
        raise InvalidInputError(f"{model.name}: no training images; expected at least one")
    if int(y.min()) < 0 or int(y.max()) >= s.shape[0]:
        raise InvalidInputError(f"{model.name}: labels span [{int(y.min())}, {int(y.max())}]; expected "
                                f"indices into the {s.shape[0]} rows of s, i.e. [0, {s.shape[0] - 1}]")
    if not (torch.isfinite(x).all() and torch.isfinite(s).all()):
        raise InvalidInputError(f"{model.name}: non-finite values in image features or semantics; expected finite")
    return x, y, s


def check_embed_input(model: ZslModel, t: Tensor, width: int, what: str) -> Tensor:
    """(N, width) float32 or InvalidInputError naming the shape."""
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.ndim != 2 or t.shape[1] != width:
        raise InvalidInputError(f"{model.name}: {what} of shape {tuple(t.shape)}; expected (N, {width})")
    return t


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Shuffled index batches (int64) covering range(n) once; a last batch of 1 is merged
    into the previous one so batch statistics (and in-batch negatives) never see a lone sample."""
    perm = torch.randperm(n, generator=generator)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < len(starts) else n
        yield perm[a:b]


@contextlib.contextmanager
def seeded_training(model: nn.Module, seed: int) -> Iterator[torch.Generator]:
    """Re-initialise ``model`` from ``seed`` and isolate the global RNG, so ``fit(seed=s)`` gives the
    same weights whatever happened before, and the first e epochs of a longer run equal an e-epoch
    run (the protocol picks the epoch count on val, then refits). Yields a generator for shuffling."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        yield torch.Generator().manual_seed(seed)


def run_epochs(model: nn.Module, n_epochs: int, step: Callable[[int], float],
               on_epoch: Callable[[int], None] | None) -> list[float]:
    """Call ``step(epoch) -> mean loss`` for epochs 1..n, in train mode; ``on_epoch`` sees eval mode
    and cannot perturb the training RNG stream (its own random draws are undone)."""
    losses: list[float] = []
    for e in range(1, n_epochs + 1):
        model.train()
        losses.append(float(step(e)))
        model.eval()
        if on_epoch is not None:
            state = torch.get_rng_state()
            on_epoch(e)
            torch.set_rng_state(state)
    model.eval()
    return losses


def mlp(dims: Sequence[int], dropout: float = 0.0, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers with ``act`` (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(act())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class PCAReduce(nn.Module):
    """Per-group PCA of the input features, fitted on the training images in ``fit``.

    ``groups`` lists the widths of consecutive feature groups (``[D]`` = one group); each group wider
    than ``k`` is centred and projected on its top-``k`` principal directions, narrower groups (and
    every group when ``k == 0``) pass through unchanged. Why: 8,252-d bag-of-words features make
    the first trainable layer cost ~all of the training time on CPU; projecting the training set
    once lets every epoch run on a few hundred dims, and the low-variance directions dropped are
    mostly histogram noise. Buffers: ``mean{i}`` (g_i,), ``comp{i}`` (g_i, k) for reduced groups.
    """

    def __init__(self, groups: Sequence[int], k: int):
        super().__init__()
        if k < 0:
            raise InvalidInputError(f"pca_dim={k}; expected 0 (off) or a positive number of components")
        self.groups = [int(g) for g in groups]
        self.k = int(k)
        self.reduced = [self.k > 0 and g > self.k for g in self.groups]
        self.out_groups = [self.k if r else g for g, r in zip(self.groups, self.reduced)]
        for i, (g, r) in enumerate(zip(self.groups, self.reduced)):
            if r:
                self.register_buffer(f"mean{i}", torch.zeros(g))
                self.register_buffer(f"comp{i}", torch.zeros(g, self.k))

    @property
    def out_dim(self) -> int:
        return sum(self.out_groups)

    @torch.no_grad()
    def fit(self, x: Tensor, generator: torch.Generator, max_rows: int = 4096) -> None:
        """Fit means on all rows of x (N, D) and components on a seeded sample of at most ``max_rows``
        (randomised PCA, Halko et al., via ``torch.pca_lowrank``; it draws from the global RNG, which
        :func:`seeded_training` has seeded)."""
        if not any(self.reduced):
            return
        rows = torch.randperm(len(x), generator=generator)[:max_rows] if len(x) > max_rows else slice(None)
        for i, part in enumerate(torch.split(x, self.groups, dim=1)):
            if not self.reduced[i]:
                continue
            mean = part.mean(0)
            sample = part[rows] - mean
            q = min(self.k, sample.shape[0], sample.shape[1])
            _, _, v = torch.pca_lowrank(sample, q=q, center=False, niter=3)
            comp = torch.zeros(part.shape[1], self.k, dtype=torch.float32)
            comp[:, :q] = v[:, :q]
            getattr(self, f"mean{i}").copy_(mean)
            getattr(self, f"comp{i}").copy_(comp)

    def forward(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, out_dim)."""
        if not any(self.reduced):
            return x
        parts = torch.split(x, self.groups, dim=1)
        return torch.cat([(p - getattr(self, f"mean{i}")) @ getattr(self, f"comp{i}") if r else p
                          for i, (p, r) in enumerate(zip(parts, self.reduced))], dim=1)

    @torch.no_grad()
    def transform(self, x: Tensor, batch: int = 8192) -> Tensor:
        """Batched forward without autograd, for projecting a training set once."""
        return torch.cat([self(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else self(x)


def check_epochs(model: ZslModel, epochs: int | None) -> int:
    n = model.hparams.epochs if epochs is None else epochs
    if int(n) != n or n < 0:
        raise InvalidInputError(f"{model.name}: epochs={n!r}; expected a non-negative integer")
    return int(n)


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


@MODELS.register("ssl")
class SemanticSoftmax(ZslModel):
    """Semantic softmax loss: class weights generated from semantics; cosine retrieval."""

    name = "ssl"
    metric = "ip"
    Hparams = SemanticSoftmaxHparams
    iterative = True

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: SemanticSoftmaxHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        self._require_positive("hidden_dim", "embed_dim", "semantic_hidden_dim", "batch_size")
        if not 0 <= hp.dropout < 1:
            raise InvalidInputError(f"ssl: dropout={hp.dropout}; expected 0 <= dropout < 1")
        self.reduce = PCAReduce([self.feature_dim], hp.pca_dim)
        self.image_net = mlp([self.reduce.out_dim, hp.hidden_dim, hp.embed_dim], hp.dropout)
        # LeakyReLU as in the paper's semantic branch: attribute vectors are small and dense,
        # dead ReLUs there would silently drop attributes from every class's prototype.
        self.semantic_net = mlp([self.semantic_dim, hp.semantic_hidden_dim, hp.embed_dim], act=nn.LeakyReLU)

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        return [{"l2_weight": 0.3}, {"l2_weight": 1.0}, {"l2_weight": 1.0, "scale": 8.0}]

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, E) visual embeddings f(x)."""
        return self.image_net(self.reduce(check_embed_input(self, x, self.feature_dim, "image features")))

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, E) generated softmax weights / visual prototypes g(s)."""
        return self.semantic_net(check_embed_input(self, s, self.semantic_dim, "class semantics"))

    def loss_terms(self, x: Tensor, y: Tensor, s: Tensor, *, reduced: bool = False) -> dict[str, Tensor]:
        """Loss of one batch: x (B, D) (or (B, pca_dim) when ``reduced``), y (B,) rows of s (C, A).
        Keys: ce, l2, loss (the total)."""
        hp = self.hparams
        f = F.normalize(self.image_net(x if reduced else self.reduce(x)), dim=1)
        w = F.normalize(self.semantic_net(s), dim=1)
        ce = F.cross_entropy(hp.scale * f @ w.T, y)
        l2 = (f - w[y]).pow(2).sum(1).mean()
        loss = ce + hp.l2_weight * l2 if hp.use_l2_constraint else ce
        return {"ce": ce, "l2": l2, "loss": loss}

    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Train on seen classes: x (N, D), y (N,) indices into s (C_seen, A). Returns per-epoch mean loss."""
        x, y, s = check_fit_inputs(self, x, y, s)
        n_epochs = check_epochs(self, epochs)
        hp = self.hparams
        with seeded_training(self, seed) as gen:
            self.reduce.fit(x, gen)
            xr = self.reduce.transform(x)
            opt = torch.optim.Adam(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)

            def step(_epoch: int) -> float:
                total, count = 0.0, 0
                for idx in minibatches(len(x), hp.batch_size, gen):
                    loss = self.loss_terms(xr[idx], y[idx], s, reduced=True)["loss"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    count += len(idx)
                return total / count

            return run_epochs(self, n_epochs, step, on_epoch)
