"""The exact top-k under corrected scores, from searches under the raw ones.

``s' = scale(x) * s + offset(x)`` with ``scale > 0`` (``correction/scores.py``): the top-k' raw
results of a query bound what any other image can score after correction, so the corrected top-k
is found from a few raw top-k' searches (k' widened until the bound holds) instead of a full pass.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .terms import CorrectionTerms


def search_corrected(search: Callable[[np.ndarray, int | None], tuple[np.ndarray, np.ndarray]], xq: np.ndarray,
                     k: int | None, terms: CorrectionTerms, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every query under the corrected scores: D (Q, k) float32 descending, I (Q, k) image ids.

    ``search(xq, k')`` is the index's raw search (``k'=None``: exact full ranking). For the
    top-k' raw results of a query, with t the k'-th raw score, no image outside them can score
    more than ``max_x scale(x) * t + offset(x)`` after correction (scale > 0); when the k-th
    corrected score among them reaches that bound the top-k is exact, else k' grows (x4) up to
    the full ranking. Ties keep the raw order.
    """
    xq = np.asarray(xq, np.float32)
    if k is None or ntotal == 0:
        D, I = search(xq, None)
        return _reorder(D, I, terms, D.shape[1])
    k = int(k)
    kk = min(ntotal, max(4 * k, k + 64))
    while True:
        D, I = search(xq, kk)
        if kk >= ntotal:
            return _reorder(D, I, terms, k)
        valid = I >= 0
        complete = valid.sum(axis=1) < kk          # the index returned everything it has
        scale, offset = terms.lookup(I)
        adj = np.where(valid, scale * D + offset, -np.inf)
        kth = -np.sort(-adj, axis=1)[:, k - 1]
        t = D[:, -1].astype(np.float64)
        bound = np.max(terms.scale[None, :] * t[:, None] + terms.offset[None, :], axis=1)
        if np.all(complete | (kth >= bound)):
            return _reorder(D, I, terms, k)
        kk = min(ntotal, kk * 4)
        if kk >= ntotal:
            D, I = search(xq, None)
            return _reorder(D, I, terms, k)


def _reorder(D: np.ndarray, I: np.ndarray, terms: CorrectionTerms, k: int) -> tuple[np.ndarray, np.ndarray]:
    scale, offset = terms.lookup(I)
    adj = np.where(I >= 0, scale * np.asarray(D, np.float64) + offset, -np.inf)
    order = np.argsort(-adj, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(adj, order, axis=1).astype(np.float32),
            np.take_along_axis(np.asarray(I, np.int64), order, axis=1))
