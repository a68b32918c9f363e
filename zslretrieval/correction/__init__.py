"""Score correction for retrieval in a mixed collection (seen-class bias and hubness).

    scores.py  ScoreCorrection (none | stack | zscore | posterior), apply_terms, the candidates
    terms.py   per-image terms of a correction: CorrectionTerms, compute_terms, reference embeddings
    search.py  search_corrected: the exact top-k under corrected scores from raw top-k' searches

Below ``metrics`` (the calculator applies a correction) and ``index`` (which stores the terms in
``index/terms_file.py``); the choice on validation classes is ``metrics.correction_choice``.
"""
from __future__ import annotations

from .scores import KINDS, ScoreCorrection, apply_terms, candidates, reference_columns, score_unit

__all__ = ["KINDS", "ScoreCorrection", "apply_terms", "candidates", "reference_columns", "score_unit"]
