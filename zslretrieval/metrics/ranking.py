"""Retrieval metrics over rankings: average precision, mAP, mAP@k.

Ties: a ranking is a sequence of gallery items, so AP over a ranking is exact. When AP is
computed from scores, items are ordered by descending score and, among equal scores, by
ascending gallery position (a stable, documented order), so results are reproducible and
equal to what an index returning the same order would give.
"""
from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError, TruncatedRankingError


def average_precision(ranked_relevant: np.ndarray, n_relevant: int | None = None, k: int | None = None) -> float:
    """AP of one ranking.

    ranked_relevant (n,) bool: relevance of the items in rank order.
    n_relevant: how many relevant items exist in the whole gallery (defaults to the count in
    the ranking, i.e. the ranking is complete). k: AP@k -- precision is accumulated over the
    first k ranks and divided by ``min(k, n_relevant)`` (the usual mAP@k normaliser).
    """
    rel = np.asarray(ranked_relevant, dtype=bool)
    total = int(rel.sum()) if n_relevant is None else int(n_relevant)
    if total == 0:
        return float("nan")
    if k is not None:
        rel = rel[:k]
        total = min(total, k)
    hits = np.cumsum(rel)
    ranks = np.arange(1, len(rel) + 1)
    return float((hits[rel] / ranks[rel]).sum() / total)


def rank_by_scores(scores: np.ndarray) -> np.ndarray:
    """(Q, N) scores -> (Q, N) gallery positions in rank order (desc score, then asc position)."""
    scores = np.asarray(scores)
    return np.argsort(-scores, axis=1, kind="stable")


def mean_average_precision_from_rankings(ranked_ids: np.ndarray, query_labels: np.ndarray,
                                         gallery_labels: np.ndarray, k: int | None = None) -> tuple[float, np.ndarray]:
    """mAP from rankings.

    ranked_ids (Q, n) gallery positions per query (n == N for a full ranking, or >= k for
    mAP@k); query_labels (Q,); gallery_labels (N,). Returns (mean over queries, per-query AP (Q,)).
    A full mAP (k=None) refuses a ranking shorter than the gallery rather than silently
    truncating it (FAISS on GPU returns at most 2048 neighbours).
    """
    ranked_ids = np.asarray(ranked_ids)
    gallery_labels = np.asarray(gallery_labels)
    n_gallery = len(gallery_labels)
    need = n_gallery if k is None else min(k, n_gallery)
    if ranked_ids.ndim != 2 or ranked_ids.shape[0] != len(query_labels):
        raise InvalidInputError(f"ranked_ids shape {ranked_ids.shape}; expected ({len(query_labels)}, n)")
    valid_len = (ranked_ids >= 0).sum(axis=1)
    if (valid_len < need).any():
        raise TruncatedRankingError(
            f"ranking has {int(valid_len.min())} results but {'the full gallery of ' if k is None else 'k='}{need} "
            "are needed; use a searcher with full-ranking support (no k cap)")
    aps = np.empty(len(query_labels))
    for i, (row, lab) in enumerate(zip(ranked_ids, query_labels)):
        row = row[row >= 0][:need]
        aps[i] = average_precision(gallery_labels[row] == lab, int((gallery_labels == lab).sum()), k)
    return float(np.nanmean(aps)), aps


def mean_average_precision(scores: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                           k: int | None = None) -> tuple[float, np.ndarray]:
    """mAP from a full (Q, N) score matrix; see :func:`mean_average_precision_from_rankings`."""
    return mean_average_precision_from_rankings(rank_by_scores(scores), query_labels, gallery_labels, k)
