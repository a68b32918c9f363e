"""Small building blocks the neural models share: an MLP and a per-group input PCA."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import InvalidInputError

__all__ = ["PCAReduce", "mlp"]


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
        :func:`~.training.seeded_training` has seeded)."""
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
