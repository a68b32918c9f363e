"""All benchmark metrics behind one calculator (after pytorch-metric-learning's AccuracyCalculator).

Each metric is a ``calculate_<name>`` method selected by name; the searcher that produces
rankings is a collaborator (exact numpy brute force by default, FAISS/torch in the engine).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UnknownNameError
from ..scoring import NumpySearcher, Searcher, exact_scores
from .classification import gzsl, per_class_top1
from .hubness import n_k_skewness, n_k_skewness_floor, seen_share_at_k
from .ranking import mean_average_precision_from_rankings, rank_by_scores


@dataclass
class EvalInputs:
    """Everything the metrics need, already embedded by a model.

    class_emb (C, E) embeddings of all classes (row = class id); metric "ip" or "l2" (ip:
    callers pass L2-normalised embeddings). unseen_emb (Nu, E) / unseen_labels (Nu,): test
    images of unseen classes; seen_emb / seen_labels: test images of seen classes (GZSL).
    """

    class_emb: np.ndarray
    metric: str
    unseen_classes: np.ndarray
    seen_classes: np.ndarray
    unseen_emb: np.ndarray
    unseen_labels: np.ndarray
    seen_emb: np.ndarray | None = None
    seen_labels: np.ndarray | None = None


SearcherFactory = Callable[[int, str], Searcher]


# Top-k depth of the hubness figures (seen-class share of the top-k, N_k skewness) unless k is given.
HUBNESS_K = 10


class AccuracyCalculator:
    """``correction``: a :class:`~zslretrieval.correction.ScoreCorrection` applied to every
    retrieval ranking (map, map_at_k, gzsl_map, hubness) exactly as the engine applies it: from
    each image's scores against the correction's reference classes (the seen classes, and for
    ``posterior`` the unseen ones too). None or inactive: raw model scores."""

    def __init__(self, include: Sequence[str] = ("top1", "map", "gzsl"), k: int | None = None,
                 calibration: float = 0.0, searcher_factory: SearcherFactory = NumpySearcher,
                 calibration_space: str = "raw", correction=None):
        valid = self.metric_names()
        for name in include:
            if name not in valid:
                raise UnknownNameError("metric", name, valid)
        self.include, self.k, self.calibration = list(include), k, calibration
        self.calibration_space = calibration_space  # "raw" scores or per-image "z" scores (metrics.gzsl)
        self.searcher_factory = searcher_factory
        self.correction = correction if correction is not None and correction.active else None
        self._mixed_cache: tuple | None = None

    @classmethod
    def metric_names(cls) -> list[str]:
        return sorted(n[len("calculate_"):] for n in dir(cls) if n.startswith("calculate_"))

    def get_accuracy(self, inputs: EvalInputs) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in self.include:
            out.update(getattr(self, f"calculate_{name}")(inputs))
        return out

    # -- scores -------------------------------------------------------------------------
    @staticmethod
    def _scores(x: np.ndarray, class_emb: np.ndarray, metric: str) -> np.ndarray:
        """(n, C) image-vs-class similarity, float64, same convention as the searchers."""
        return exact_scores(x, class_emb, metric)

    # -- metrics ------------------------------------------------------------------------
    def calculate_top1(self, inp: EvalInputs) -> dict[str, float]:
        """Per-class top-1 on unseen test images, predicting among unseen classes only."""
        cls = np.asarray(inp.unseen_classes)
        s = self._scores(inp.unseen_emb, inp.class_emb[cls], inp.metric)
        pred = cls[np.argmax(s, axis=1)]
        return {"top1": per_class_top1(pred, inp.unseen_labels, cls)}

    def _corrected_ranking(self, inp: EvalInputs, gallery: np.ndarray) -> np.ndarray:
        """(Q, N) full ranking of ``gallery`` for the unseen classes under ``self.correction`` (float64, exact)."""
        from ..correction import apply_terms, reference_columns

        cls = np.asarray(inp.unseen_classes)
        raw = self._scores(inp.class_emb[cls], gallery, inp.metric)
        if self.correction is None:
            return rank_by_scores(raw)
        ref_c = reference_columns(self.correction, inp.seen_classes, inp.unseen_classes)
        ref = self._scores(gallery, inp.class_emb[ref_c], inp.metric)
        return rank_by_scores(apply_terms(raw, *self.correction.terms(ref)))

    def _map(self, inp: EvalInputs, k: int | None) -> tuple[float, np.ndarray]:
        """Each unseen class's embedding queries the gallery of all unseen test images."""
        cls = np.asarray(inp.unseen_classes)
        if self.correction is not None:
            I = self._corrected_ranking(inp, inp.unseen_emb)
            return mean_average_precision_from_rankings(I if k is None else I[:, :k], cls,
                                                        np.asarray(inp.unseen_labels), k)
        searcher = self.searcher_factory(inp.unseen_emb.shape[1], inp.metric)
        ids = np.arange(len(inp.unseen_labels), dtype=np.int64)
        searcher.add(inp.unseen_emb.astype(np.float32), ids)
        xq = inp.class_emb[cls].astype(np.float32)
        _, I = searcher.rank_all(xq) if k is None else searcher.search(xq, k)
        return mean_average_precision_from_rankings(I, cls, np.asarray(inp.unseen_labels), k)

    def calculate_map(self, inp: EvalInputs) -> dict[str, float]:
        m, _ = self._map(inp, None)
        return {"map": m}

    def calculate_map_at_k(self, inp: EvalInputs) -> dict[str, float]:
        k = self.k or 100
        m, _ = self._map(inp, k)
        return {f"map@{k}": m}

    def calculate_gzsl(self, inp: EvalInputs) -> dict[str, float]:
        if inp.seen_emb is None or inp.seen_labels is None:
            return {}
        r = gzsl(self._scores(inp.seen_emb, inp.class_emb, inp.metric), inp.seen_labels,
                 self._scores(inp.unseen_emb, inp.class_emb, inp.metric), inp.unseen_labels,
                 inp.seen_classes, inp.unseen_classes, self.calibration, space=self.calibration_space)
        return {"gzsl_u": r.unseen, "gzsl_s": r.seen, "gzsl_h": r.harmonic, "gzsl_calibration": r.calibration}

    # -- mixed gallery: unseen queries over unseen + seen test images -----------------------
    def _mixed(self, inp: EvalInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(ranking (Q, N), gallery labels (N,), is_seen (N,)) over test_unseen + test_seen; None without seen images."""
        if inp.seen_emb is None or inp.seen_labels is None:
            return None
        if self._mixed_cache is None or self._mixed_cache[0] is not inp:
            gallery = np.concatenate([inp.unseen_emb, inp.seen_emb])
            labels = np.concatenate([np.asarray(inp.unseen_labels), np.asarray(inp.seen_labels)])
            is_seen = np.r_[np.zeros(len(inp.unseen_labels), bool), np.ones(len(inp.seen_labels), bool)]
            self._mixed_cache = (inp, self._corrected_ranking(inp, gallery), labels, is_seen)
        return self._mixed_cache[1:]

    def calculate_gzsl_map(self, inp: EvalInputs) -> dict[str, float]:
        """Generalized retrieval mAP: each unseen class queries the unseen and seen test images together."""
        mixed = self._mixed(inp)
        if mixed is None:
            return {}
        ranked, labels, _ = mixed
        m, _ = mean_average_precision_from_rankings(ranked, np.asarray(inp.unseen_classes), labels)
        return {"gzsl_map": m}

    def calculate_hubness(self, inp: EvalInputs) -> dict[str, float]:
        """Over the mixed gallery: seen-class share of the unseen queries' top-k, and hubness.

        N_k counts, for each gallery image, the class queries -- every class, seen and unseen --
        whose top-k hold it; unseen queries are ranked with the correction, seen ones by raw
        score, as the engine does. ``n<k>_skew_floor`` is the skewness when no image repeats.
        """
        mixed = self._mixed(inp)
        if mixed is None:
            return {}
        ranked, labels, is_seen = mixed
        k = self.k or HUBNESS_K
        share, _ = seen_share_at_k(ranked, is_seen, k)
        seen_c = np.asarray(inp.seen_classes)
        gallery = np.concatenate([inp.unseen_emb, inp.seen_emb])
        seen_ranked = rank_by_scores(self._scores(inp.class_emb[seen_c], gallery, inp.metric))[:, :k]
        top = np.concatenate([ranked[:, :k], seen_ranked])
        return {f"seen_share@{k}": share, f"n{k}_skew": n_k_skewness(top, len(labels), k),
                f"n{k}_skew_floor": n_k_skewness_floor(len(top), len(labels), k)}
