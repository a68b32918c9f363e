"""All benchmark metrics behind one calculator (after pytorch-metric-learning's AccuracyCalculator).

Each metric is a ``calculate_<name>`` method selected by name; the searcher that produces
rankings is a collaborator (exact numpy brute force by default, FAISS/torch in the engine).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UnknownNameError
from ..index.searchers import NumpySearcher, Searcher
from .classification import gzsl, per_class_top1
from .ranking import mean_average_precision_from_rankings


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


class AccuracyCalculator:
    def __init__(self, include: Sequence[str] = ("top1", "map", "gzsl"), k: int | None = None,
                 calibration: float = 0.0, searcher_factory: SearcherFactory = NumpySearcher,
                 calibration_space: str = "raw"):
        valid = self.metric_names()
        for name in include:
            if name not in valid:
                raise UnknownNameError("metric", name, valid)
        self.include, self.k, self.calibration = list(include), k, calibration
        self.calibration_space = calibration_space  # "raw" scores or per-image "z" scores (metrics.gzsl)
        self.searcher_factory = searcher_factory

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
        from ..index.searchers import exact_scores
        return exact_scores(x, class_emb, metric)

    # -- metrics ------------------------------------------------------------------------
    def calculate_top1(self, inp: EvalInputs) -> dict[str, float]:
        """Per-class top-1 on unseen test images, predicting among unseen classes only."""
        cls = np.asarray(inp.unseen_classes)
        s = self._scores(inp.unseen_emb, inp.class_emb[cls], inp.metric)
        pred = cls[np.argmax(s, axis=1)]
        return {"top1": per_class_top1(pred, inp.unseen_labels, cls)}

    def _map(self, inp: EvalInputs, k: int | None) -> tuple[float, np.ndarray]:
        """Each unseen class's embedding queries the gallery of all unseen test images."""
        cls = np.asarray(inp.unseen_classes)
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
