"""Benchmark metrics: retrieval mAP / mAP@k, per-class top-1, generalized ZSL U/S/H."""
from .calculator import AccuracyCalculator, EvalInputs
from .classification import GzslResult, gzsl, harmonic_mean, per_class_top1
from .ranking import (average_precision, mean_average_precision, mean_average_precision_from_rankings,
                      rank_by_scores)

__all__ = ["AccuracyCalculator", "EvalInputs", "GzslResult", "average_precision", "gzsl", "harmonic_mean",
           "mean_average_precision", "mean_average_precision_from_rankings", "per_class_top1", "rank_by_scores"]
