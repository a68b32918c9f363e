"""A relevance value comparable across queries: ``relevance = sigmoid(a * z + b)``.

Why not the raw score: a cosine of 0.3 is a strong match for one description and noise for
another (each query's scores sit at their own level and spread), so one threshold cannot serve
every query. ``z`` is the image's score standardised over the **whole collection** for that
query -- how many standard deviations it stands above the collection's typical image -- which
removes each query's own level and spread. The logistic maps z to a probability-like value,
P(an image at this z belongs to the queried class), fitted on **validation** classes (see
:data:`DEFAULT_LOGISTIC`); it is calibrated for collections like the validation gallery (a share
of relevant images of a few per cent): in a collection where the queried thing is rarer the same
z means a lower chance, so read it as a comparable cut-off, not an exact probability.

The collection's mean and standard deviation of a query's scores need no pass over the
collection: scores (with the per-image score correction ``scale * s + offset``) are linear in an
augmented query vector, so they follow from the mean and covariance of the gallery's augmented
vectors, computed once per index (:class:`ScoreMoments`); a query then costs an (E+2)^2 product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Logistic:
    a: float
    b: float

    def __call__(self, z: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(z, np.float64) + self.b)))


# Fitted by scripts/bench_feedback.py on the CUB-200-2011 val classes (GBU class split 1; eszsl trained on
# the train classes, efficientnet-lite0 photo features, seed 0): logistic regression of "image of the
# queried class" on z, over the 50 val-class zero-shot queries x the 2,355 val images (2.0 % relevant).
# Relevance 0.5 then sits at z = 2.60: an image 2.6 standard deviations above the collection's mean
# (an earlier run with another selected model gave a=2.69, b=-7.12: z = 2.65, the same scale).
DEFAULT_LOGISTIC = Logistic(a=2.9058, b=-7.5639)


class ScoreMoments:
    """Mean and covariance of the gallery's augmented vectors, for one metric and correction.

    ip: ``s' = scale * <x, q> + offset = <[scale x, offset], [q, 1]>``;
    l2: ``s' = scale * -(|x|^2 - 2<x, q> + |q|^2) + offset
             = <[2 scale x, offset - scale |x|^2, -scale], [q, 1, |q|^2]>``.

    ``vectors``: (n, E) array, or rows read per slice (``query.gallery.RowView``).
    """

    BLOCK = 1024   # rows augmented at a time: memory is one block and the (E+2)^2 accumulator, not n x E float64

    def __init__(self, vectors, metric: str, scale: np.ndarray | None = None,
                 offset: np.ndarray | None = None):
        x = vectors if hasattr(vectors, "shape") else np.asarray(vectors)   # an array, or rows read per slice
        n = len(x)
        sc = np.ones(n) if scale is None else np.asarray(scale, np.float64)
        off = np.zeros(n) if offset is None else np.asarray(offset, np.float64)
        self.metric = metric
        self.n = n
        width = x.shape[1] + (1 if metric == "ip" else 2)
        # two passes over blocks: the mean, then the centred products (centred before the product, so
        # the variance is not a difference of two large numbers); a server swapping in a grown index
        # held two n x E float64 copies here (+160 MB at 8,192 x 1280) before
        total = np.zeros(width)
        for i in range(0, n, self.BLOCK):
            total += self._block(x, sc, off, i).sum(0)
        self.mean = total / max(n, 1)
        cov = np.zeros((width, width))
        for i in range(0, n, self.BLOCK):
            zc = self._block(x, sc, off, i) - self.mean
            cov += zc.T @ zc
        self.cov = cov / max(n, 1)

    def _block(self, x: np.ndarray, sc: np.ndarray, off: np.ndarray, i: int) -> np.ndarray:
        """Augmented vectors of rows ``i .. i + BLOCK`` (class docstring), float64."""
        b = np.asarray(x[i:i + self.BLOCK], np.float64)
        s, o = sc[i:i + self.BLOCK], off[i:i + self.BLOCK]
        if self.metric == "ip":
            return np.concatenate([b * s[:, None], o[:, None]], axis=1)
        return np.concatenate([2.0 * b * s[:, None], (o - s * np.square(b).sum(1))[:, None], -s[:, None]], axis=1)

    def _augment(self, xq: np.ndarray) -> np.ndarray:
        q = np.asarray(xq, np.float64)
        one = np.ones((len(q), 1))
        if self.metric == "ip":
            return np.concatenate([q, one], axis=1)
        return np.concatenate([q, one, np.square(q).sum(1, keepdims=True)], axis=1)

    def mean_std(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) queries -> the collection's mean (Q,) and standard deviation (Q,) of their scores."""
        qa = self._augment(xq)
        mu = qa @ self.mean
        var = np.einsum("qi,ij,qj->q", qa, self.cov, qa)
        return mu, np.sqrt(np.maximum(var, 0.0))


def zscores(scores: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """(Q, k) scores standardised per query; a query whose scores do not vary gets z = 0."""
    sd = np.where(sd > 0, sd, np.inf)
    return (np.asarray(scores, np.float64) - mu[:, None]) / sd[:, None]


def fit_logistic(z: np.ndarray, relevant: np.ndarray, *, c: float = 1.0) -> Logistic:
    """Logistic regression of ``relevant`` (bool) on ``z`` (1-d), L2-regularised (``c``), by scikit-learn."""
    from sklearn.linear_model import LogisticRegression

    z = np.asarray(z, np.float64).reshape(-1, 1)
    y = np.asarray(relevant, bool).ravel()
    if len(z) != len(y) or y.all() or not y.any():
        raise InvalidInputError("fitting the relevance scale needs both relevant and irrelevant images")
    m = LogisticRegression(C=c).fit(z, y)
    return Logistic(float(m.coef_[0, 0]), float(m.intercept_[0]))


def check_min_score(v: float | None) -> float | None:
    """``--min-score`` as a float in [0, 1], or None; anything else is refused naming it."""
    if v is None:
        return None
    try:
        f = float(v) if not isinstance(v, (bool, str)) else float(v) if isinstance(v, str) else float("nan")
    except ValueError:
        f = float("nan")
    if not (np.isfinite(f) and 0.0 <= f <= 1.0):
        raise InvalidInputError(f"min score {v!r}: expected a relevance in [0, 1] (the calibrated value every "
                                "result carries as 'relevance')")
    return f
