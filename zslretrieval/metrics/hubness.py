"""Retrieval in a mixed collection: how much seen-class images and hub images take over.

A real collection holds images of the classes a model was trained on (seen) next to the new
ones a user asks for. Three numbers describe what that does to queries for new classes:

* generalized retrieval mAP: each unseen class queries the gallery of unseen **and** seen test
  images (:func:`~zslretrieval.metrics.ranking.mean_average_precision_from_rankings` over the
  mixed gallery);
* the seen-class share of the top-k: the fraction of those queries' top-k slots held by
  seen-class images (:func:`seen_share_at_k`);
* hubness, the skewness of N_k (:func:`k_occurrence`, :func:`skewness`): N_k(x) counts the
  queries whose top-k holds gallery image x (Radovanović et al. 2010). Few images answering
  many queries make the distribution right-skewed.

All functions take rankings as gallery positions (Q, n), best first, -1 padding ignored.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError


def _top_k(ranked_ids: np.ndarray, k: int) -> np.ndarray:
    ranked_ids = np.asarray(ranked_ids)
    if ranked_ids.ndim != 2:
        raise InvalidInputError(f"ranked_ids shape {ranked_ids.shape}; expected (queries, n)")
    if k < 1:
        raise InvalidInputError(f"k={k}; expected a positive number of results")
    return ranked_ids[:, :k]


def seen_share_at_k(ranked_ids: np.ndarray, is_seen: np.ndarray, k: int = 10) -> tuple[float, np.ndarray]:
    """Fraction of each query's top-k held by seen-class images -> (mean over queries, (Q,) per query).

    ranked_ids (Q, n) gallery positions; is_seen (N,) bool, True for images of seen classes.
    A query with fewer than k results is measured over the results it has.
    """
    top = _top_k(ranked_ids, k)
    is_seen = np.asarray(is_seen, bool)
    per = np.array([is_seen[row[row >= 0]].mean() if (row >= 0).any() else 0.0 for row in top])
    return (float(per.mean()) if len(per) else float("nan")), per


def k_occurrence(ranked_ids: np.ndarray, n_gallery: int, k: int = 10) -> np.ndarray:
    """N_k (n_gallery,) int: in how many queries' top-k each gallery image appears."""
    top = _top_k(ranked_ids, k)
    ids = top[top >= 0].ravel()
    if ids.size and ids.max() >= n_gallery:
        raise InvalidInputError(f"gallery position {int(ids.max())} out of range for a gallery of {n_gallery}")
    return np.bincount(ids, minlength=n_gallery)


def skewness(values: np.ndarray) -> float:
    """Population skewness E[(v - mean)^3] / std^3 (0 for a constant; nan for no values)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan")
    d = v - v.mean()
    sd = np.sqrt((d ** 2).mean())
    return 0.0 if sd == 0 else float((d ** 3).mean() / sd ** 3)


def n_k_skewness(ranked_ids: np.ndarray, n_gallery: int, k: int = 10) -> float:
    """Skewness of :func:`k_occurrence` over the whole gallery (0 = no hubs beyond chance)."""
    return skewness(k_occurrence(ranked_ids, n_gallery, k))


def n_k_skewness_floor(n_queries: int, n_gallery: int, k: int = 10) -> float:
    """The lowest N_k skewness any ranking can have: every one of the Q*k top-k slots a different image.

    With few queries and a large gallery this floor is high (10 queries, k=10, 10,000 images:
    ~9.9), so a skewness is read against it, not against 0.
    """
    slots = min(int(n_queries) * int(k), int(n_gallery))
    counts = np.zeros(int(n_gallery))
    counts[:slots] = 1.0
    if slots < int(n_queries) * int(k):  # more slots than images: spread them as evenly as possible
        counts[:] = 0.0
        q, r = divmod(int(n_queries) * int(k), int(n_gallery))
        counts[:] = q
        counts[:r] += 1
    return skewness(counts)
