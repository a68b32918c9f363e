"""Scoring on held-out ImageNet classes: the class split, prototype retrieval and category-word mAP.

Everything a build chooses is chosen with these on val classes (``build.py``); test classes are
only reported. Gallery scores are corrected exactly as an index corrects its images' scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .vectors import _unit

if TYPE_CHECKING:
    from ...correction import ScoreCorrection

SPLIT_SIZES = (600, 200, 200)   # train / val / test ImageNet classes


def split_classes(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-disjoint (train, val, test) index arrays of the ImageNet classes, seeded."""
    perm = np.random.default_rng(seed).permutation(n)
    a, b, _ = SPLIT_SIZES
    return np.sort(perm[:a]), np.sort(perm[a:a + b]), np.sort(perm[a + b:])


def prototype_top1(pred: np.ndarray, true: np.ndarray) -> float:
    """Held-out prototype retrieval: share of rows i whose prediction is nearest (cosine) to ``true[i]``."""
    s = _unit(np.asarray(pred, np.float64)) @ _unit(np.asarray(true, np.float64)).T
    return float(np.mean(np.argmax(s, axis=1) == np.arange(len(true))))


def gallery_scores(pred: np.ndarray, gallery: np.ndarray, ref: np.ndarray | None = None,
                   correction: ScoreCorrection | None = None) -> np.ndarray:
    """(q, n) cosines of queries ``pred`` (q, D) to a gallery of prototypes (n, D), rescored by
    ``correction`` with each item's terms from its scores against the reference queries ``ref``
    (C, D), exactly as an index computes them for its images; float64."""
    from ...correction import ScoreCorrection, apply_terms
    gal = _unit(np.asarray(gallery, np.float64))
    s = _unit(np.asarray(pred, np.float64)) @ gal.T
    corr = correction or ScoreCorrection()
    if corr.active:
        s = apply_terms(s, *corr.terms(gal @ _unit(np.asarray(ref, np.float64)).T))
    return s


def heldout_retrieval(pred: np.ndarray, true: np.ndarray, ref: np.ndarray | None = None,
                      correction: ScoreCorrection | None = None) -> dict[str, float]:
    """Held-out prototype retrieval with an optional hubness correction: top-1, MRR and N1 skewness.

    pred (n, D) predicted query vectors of n held-out classes; true (n, D) their prototypes, the
    gallery; ref (C, D) reference queries (projected names of other classes) giving each gallery
    item its correction terms, exactly as an index computes them for its images. Query i's
    answer is gallery item i. Ties count against the true item (rank = items scoring >= it, minus 1).
    """
    from ...metrics.hubness import n_k_skewness
    s = gallery_scores(pred, true, ref, correction)
    own = s[np.arange(len(s)), np.arange(len(s))]
    rank = (s > own[:, None]).sum(1) + (s == own[:, None]).sum(1) - 1
    ranked = np.argsort(-s, axis=1, kind="stable")
    return {"top1": float(np.mean(rank == 0)), "mrr": float(np.mean(1.0 / (1.0 + rank))),
            "n1_skew": float(n_k_skewness(ranked, s.shape[1], 1))}


def category_map(pred: np.ndarray, positives: Sequence[set[int]], protos: np.ndarray, rows: Sequence[int],
                 ref: np.ndarray | None = None, correction: ScoreCorrection | None = None) -> float:
    """mAP of category queries over a gallery of class prototypes: ``pred`` (q, D) queries, ``positives[j]``
    the classes (indices into ``protos``) query j names, the gallery ``protos[rows]`` with the correction
    terms from ``ref`` (:func:`gallery_scores`). Ties rank by gallery position."""
    from ...metrics.ranking import average_precision, rank_by_scores
    rows = np.asarray(rows)
    ranked = rank_by_scores(gallery_scores(pred, np.asarray(protos)[rows], ref, correction))
    return float(np.mean([average_precision(np.isin(rows[r], list(p))) for r, p in zip(ranked, positives)]))
