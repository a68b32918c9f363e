"""Choosing a score correction on validation classes, by the mixed-gallery retrieval figures.

Each candidate :class:`~zslretrieval.correction.ScoreCorrection` (``correction.candidates``) is
measured as the engine would apply it -- the validation ("new") classes query their images mixed
with held-out images of the training classes -- and the best mAP wins only by a margin over
``none``. It lives with the metrics it is measured by (``hubness``, ``ranking``); ``correction``
itself stays below ``metrics`` so that the calculator can apply one.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..correction import ScoreCorrection, apply_terms, candidates, reference_columns, score_unit
from .hubness import n_k_skewness, seen_share_at_k
from .ranking import mean_average_precision_from_rankings, rank_by_scores


def evaluate_mixed(scores: np.ndarray, ref_scores: np.ndarray, labels: np.ndarray, query_classes: np.ndarray,
                   is_seen: np.ndarray, correction: ScoreCorrection, k: int = 10) -> dict[str, float]:
    """Mixed-gallery retrieval figures of one correction.

    scores (n, Q): gallery images vs the query classes; ref_scores (n, C_ref): vs the correction's
    reference classes (:func:`reference_columns`); labels (n,); query_classes (Q,); is_seen (n,) bool. Returns map, seen_share@k,
    n<k>_skew (N_k over the query classes' top-k).
    """
    scale, offset = correction.terms(ref_scores)
    ranked = rank_by_scores(apply_terms(np.asarray(scores).T, scale, offset))
    m, _ = mean_average_precision_from_rankings(ranked, query_classes, labels)
    share, _ = seen_share_at_k(ranked, is_seen, k)
    return {"map": m, f"seen_share@{k}": share, f"n{k}_skew": n_k_skewness(ranked, len(labels), k)}


def choose_correction(scores_seen: np.ndarray, labels_seen: np.ndarray, scores_unseen: np.ndarray,
                      labels_unseen: np.ndarray, seen_classes: Sequence[int], unseen_classes: Sequence[int],
                      options: Sequence[ScoreCorrection] | None = None,
                      min_gain: float = 1e-3) -> tuple[ScoreCorrection, list[dict[str, Any]]]:
    """The correction with the best mixed-gallery mAP on (pseudo) GZSL validation data.

    scores_* (n, C) indexed by class id, as in ``protocol.choose_calibration``: ``scores_unseen``
    are the images of the validation ("new") classes, ``scores_seen`` held-out images of the
    training classes (the distractors). Each validation class queries all of them. A
    correction must beat ``none`` by ``min_gain`` mAP to be chosen, so it is on only where
    validation says it helps. ``posterior`` options are scored against the train and the val
    classes (the val classes play the card's unseen classes). Returns (chosen, one record per option).
    """
    seen_classes, unseen_classes = np.asarray(seen_classes), np.asarray(unseen_classes)
    both = np.concatenate([np.asarray(scores_unseen), np.asarray(scores_seen)])
    labels = np.concatenate([np.asarray(labels_unseen), np.asarray(labels_seen)])
    is_seen = np.r_[np.zeros(len(labels_unseen), bool), np.ones(len(labels_seen), bool)]
    table = []
    best, best_map = ScoreCorrection(), -1.0
    unit = score_unit(both[:, np.concatenate([seen_classes, unseen_classes])])
    for opt in options or candidates(unit):
        ref = both[:, reference_columns(opt, seen_classes, unseen_classes)]
        r = evaluate_mixed(both[:, unseen_classes], ref, labels, unseen_classes, is_seen, opt)
        table.append({**opt.to_dict(), **r})
        if not opt.active:
            base = r["map"]
            if r["map"] > best_map:
                best, best_map = opt, r["map"]
        elif r["map"] > best_map and r["map"] >= base + min_gain:
            best, best_map = opt, r["map"]
    return best, table
