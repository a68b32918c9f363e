"""Scores of images against class descriptors for one model, in batches (selection and evaluation)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models import ZslModel, pairwise_scores


@torch.no_grad()
def embed_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, device: str,
                  batch: int = 8192) -> np.ndarray:
    """``fn`` over (n, D) rows in batches -> (n, E) float32 numpy."""
    out = [fn(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)).to(device)).float().cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


@torch.no_grad()
def model_scores(model: ZslModel, x: np.ndarray, s: np.ndarray, device: str, batch: int = 8192) -> np.ndarray:
    """(n, C) model scores of images x (n, D) against semantics s (C, A), float64."""
    st = torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(device)
    out = [model.scores(torch.from_numpy(x[i:i + batch]).to(device), st).double().cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(s)))


class CachedScorer:
    """Scores of image sets against class semantics for one model during selection.

    A model whose class attribute ``static_image_embedding`` is true promises that
    ``embed_images`` does not change between epochs of one ``fit`` (DEM: a fixed visual space);
    its image embeddings are then computed once per image set instead of every epoch.
    """

    def __init__(self, model: ZslModel, device: str):
        self.model, self.device = model, device
        self.static = bool(getattr(type(model), "static_image_embedding", False))
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, name: str, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        if not self.static:
            return model_scores(self.model, x, s, self.device)
        self.model.eval()
        if name not in self._cache:
            self._cache[name] = torch.from_numpy(embed_batched(self.model.embed_images, x, self.device)).to(self.device)
        cls = self.model.embed_classes(torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(self.device))
        return pairwise_scores(self._cache[name], cls, self.model.metric).double().cpu().numpy()
