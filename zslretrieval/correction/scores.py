"""Per-image score correction for retrieval in a mixed collection (seen-class bias and hubness).

A query for a new class ranks every image of the collection, and images of the classes the
model was trained on (seen) -- or a few "hub" images near the middle of the space -- outscore
the images asked for. Each correction here rescores image x for query q as

    s'(q, x) = scale(x) * s(q, x) + offset(x)

where ``scale(x) > 0`` and ``offset(x)`` depend on x alone: on x's scores against the model's
seen classes, which are known when the image is indexed. So the terms are computed once at
index time and stored (``correction/terms.py``, ``index/terms_file.py``), any query is corrected
without an extra pass, and the top-k under s' can be found exactly from a top-k' search under s
(``correction/search.py``).

Kinds (all chosen on validation classes, never on test classes; ``metrics.correction_choice``):

* ``none``: s' = s.
* ``stack`` -- calibrated stacking for retrieval (after Chao et al. 2016): lower x by how
  strongly the seen classes claim it, ``offset = -weight * mean of x's k highest seen-class
  scores``. k=1 is the strongest claim; weight=0.5, k=10 ranks like CSLS (Lample et al. 2018:
  ``2 s - r_x`` with r_x the mean of x's k nearest reference queries), a hubness correction.
* ``zscore`` -- per-image standardisation (a hubness correction): ``(s - mean) / std`` of x's
  seen-class scores, so an image close to every class no longer wins every query.
* ``posterior`` -- the log-posterior of the query over every class the model knows (seen **and**
  the new classes the card names), with temperature T: ``s - weight * T * logsumexp_c(s_c / T)``.
  With weight=1 an unseen-class query q (one of the reference classes) ranks x by the softmax
  probability p(q | x): an image that a seen class (or another new class) explains better than q
  goes down, however high its raw score. Unlike ``stack`` it weighs the seen classes' claim
  against the new classes' claims on the same image; on awa1-lampert that separates seen from
  unseen images best of the signals that depend on the image alone (ROC AUC ~0.68 for SSL and
  DEM vs ~0.55-0.6 for the max seen-class score; docs/hubness.md). T is
  ``temperature * unit``: ``unit`` is the model's score spread (mean over images of the std of an
  image's reference scores, :func:`score_unit`), measured on the val matrices at selection and
  again on the refit model's training images, so the relative temperature chosen on val carries
  over to the refit model whatever its score scale.

Reference classes (the columns of ``ref_scores`` in :meth:`ScoreCorrection.terms`): the seen
classes for ``stack``/``zscore``, the seen then the known unseen classes for ``posterior``
(:attr:`ScoreCorrection.reference`, :func:`reference_columns`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError

KINDS = ("none", "stack", "zscore", "posterior")
# Floor of a per-image std (relative to the median std) so an image whose seen-class scores are
# all equal gets a finite scale instead of an infinite one.
_STD_FLOOR = 1e-6


@dataclasses.dataclass(frozen=True)
class ScoreCorrection:
    """One correction: ``kind`` (none | stack | zscore | posterior), ``k`` and ``weight`` for
    ``stack``; ``weight``, ``temperature`` (relative) and ``unit`` (score spread) for ``posterior``."""

    kind: str = "none"
    k: int = 1
    weight: float = 0.0
    temperature: float = 1.0
    unit: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"score correction kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if int(self.k) < 1:
            raise InvalidInputError(f"score correction k={self.k}; expected a positive integer")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise InvalidInputError(f"score correction weight={self.weight}; expected a finite number >= 0")
        for name in ("temperature", "unit"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v <= 0:
                raise InvalidInputError(f"score correction {name}={v}; expected a finite number > 0")

    @property
    def active(self) -> bool:
        return self.kind == "zscore" or (self.kind in ("stack", "posterior") and self.weight > 0)

    @property
    def reference(self) -> str:
        """Which classes x is scored against for its terms: "seen", or "all" (seen, then the known unseen)."""
        return "all" if self.kind == "posterior" else "seen"

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "k": int(self.k), "weight": float(self.weight)}
        if self.kind == "posterior":
            out.update(temperature=float(self.temperature), unit=float(self.unit))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "ScoreCorrection":
        if not d:
            return cls()
        return cls(kind=str(d.get("kind", "none")), k=int(d.get("k", 1)), weight=float(d.get("weight", 0.0)),
                   temperature=float(d.get("temperature", 1.0)), unit=float(d.get("unit", 1.0)))

    def same_choice(self, other: "ScoreCorrection") -> bool:
        """Same kind and parameters, whatever the ``unit`` (which is re-measured on the refit model)."""
        return dataclasses.replace(self, unit=1.0) == dataclasses.replace(other, unit=1.0)

    def describe(self) -> str:
        if self.kind == "stack":
            return f"stack(k={self.k}, weight={self.weight:g})"
        if self.kind == "posterior":
            return f"posterior(temperature={self.temperature:g}, weight={self.weight:g})"
        return self.kind

    def terms(self, ref_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-image (scale (n,), offset (n,)) float64 from ref_scores (n, C_ref): x's scores against
        the reference classes (:attr:`reference`: the seen classes, or seen + known unseen)."""
        r = np.asarray(ref_scores, np.float64)
        if r.ndim != 2:
            raise InvalidInputError(f"reference scores shape {r.shape}; expected (images, reference classes)")
        n = len(r)
        if not self.active:
            return np.ones(n), np.zeros(n)
        if r.shape[1] == 0:
            raise InvalidInputError("a score correction needs the scores of at least one seen class")
        if self.kind == "posterior":
            t = float(self.temperature) * float(self.unit)
            m = r.max(axis=1)
            lse = m + t * np.log(np.exp((r - m[:, None]) / t).sum(axis=1))   # t * logsumexp(r / t), stable
            return np.ones(n), -self.weight * lse
        if self.kind == "stack":
            k = min(int(self.k), r.shape[1])
            top = -np.sort(-r, axis=1)[:, :k] if k > 1 else r.max(axis=1, keepdims=True)
            return np.ones(n), -self.weight * top.mean(axis=1)
        mu, sd = r.mean(axis=1), r.std(axis=1)
        floor = _STD_FLOOR * max(float(np.median(sd)) if n else 0.0, 1e-300)
        sd = np.maximum(sd, floor)
        return 1.0 / sd, -mu / sd


def apply_terms(scores: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Corrected scores (Q, n) float64 of raw scores (Q, n) for images with terms scale/offset (n,)."""
    return np.asarray(scores, np.float64) * np.asarray(scale, np.float64)[None, :] + np.asarray(offset, np.float64)[None, :]


def reference_columns(correction: ScoreCorrection, seen: Sequence[int] | np.ndarray,
                      unseen: Sequence[int] | np.ndarray) -> np.ndarray:
    """Class ids (columns) of a correction's reference scores: ``seen``, or ``seen`` then ``unseen``."""
    seen = np.asarray(seen, np.int64)
    return np.concatenate([seen, np.asarray(unseen, np.int64)]) if correction.reference == "all" else seen


def score_unit(ref_scores: np.ndarray) -> float:
    """A model's score spread: the mean over images of the std of each image's reference scores (n, C).

    The unit of the ``posterior`` temperature, so that a temperature chosen on the selection
    model means the same on the refit one (whose scores may be on another scale). 1.0 when undefined.
    """
    r = np.asarray(ref_scores, np.float64)
    r = r[np.isfinite(r).all(axis=1)] if r.ndim == 2 else r[:0]
    u = float(r.std(axis=1).mean()) if r.size else 0.0
    return u if np.isfinite(u) and u > 0 else 1.0


def candidates(unit: float | None = None) -> list[ScoreCorrection]:
    """The corrections tried on validation classes (``none`` first: it wins ties). ``unit``: the val
    model's :func:`score_unit` over the ``posterior`` reference classes; None leaves ``posterior``
    out (a caller without seen/unseen class scores, e.g. the general model's reference vocabulary)."""
    out = [ScoreCorrection()]
    for k in (1, 3, 10):
        for w in (0.25, 0.5, 0.75, 1.0, 1.25):
            out.append(ScoreCorrection("stack", k, w))
    out.append(ScoreCorrection("zscore"))
    for t in () if unit is None else (0.25, 0.5, 1.0, 2.0):
        for w in (0.25, 0.5, 0.75, 1.0, 1.25):
            out.append(ScoreCorrection("posterior", weight=w, temperature=t, unit=unit))
    return out
