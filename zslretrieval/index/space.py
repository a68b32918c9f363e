"""Raw backbone features -> the space the index searches in.

Without a model the index holds L2-normalised raw features compared by inner product (cosine).
With an embedding model it holds ``model.embed_images(features)``, compared with the model's
metric: "ip" -> L2-normalised then inner product; "l2" -> squared Euclidean, reported as
negative distance.
"""
from __future__ import annotations

import numpy as np

from ..errors import IncompatibleError

EMBED_BATCH = 65536


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (zero rows stay zero); returns a new float32 array."""
    x = np.array(x, dtype=np.float32, copy=True)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, n, out=x, where=n > 0)
    return x


def to_index_space(x: np.ndarray, model=None, metric: str = "ip") -> np.ndarray:
    """(n, feature_dim) raw features -> (n, dim) float32 vectors as stored in the index."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if model is not None:
        if x.shape[1] != model.feature_dim:
            raise IncompatibleError(f"model expects {model.feature_dim}-d features; the index stores {x.shape[1]}-d")
        import torch  # an index with a model: its model brought torch already

        model.eval()
        parts = []
        with torch.no_grad():
            for i in range(0, max(len(x), 1), EMBED_BATCH):
                parts.append(model.embed_images(torch.from_numpy(x[i:i + EMBED_BATCH])).float().cpu().numpy())
        x = np.concatenate(parts) if len(x) else parts[0][:0]
    return l2_normalize(x) if metric == "ip" else np.ascontiguousarray(x, dtype=np.float32)


def embed_dim(model, feature_dim: int) -> int:
    """Dimension of the index space for ``model`` (raw features: ``feature_dim``)."""
    if model is None:
        return int(feature_dim)
    import torch

    with torch.no_grad():
        model.eval()
        return int(model.embed_images(torch.zeros(2, feature_dim)).shape[1])
