"""The two numeric helpers every part of the general model shares: unit rows and a row softmax."""
from __future__ import annotations

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (..., D) divided by their L2 norm (a zero row stays zero: the floor avoids 0/0)."""
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def softmax(z: np.ndarray) -> np.ndarray:
    """Row softmax of (n, C) scores (each row's max subtracted first, so large scores do not overflow)."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
