"""Searches with more than a query: relevance feedback, filters and the relevance scale.

:func:`run_refined` is :meth:`QueryEngine.run` with :class:`SearchOptions`: the queries are
prepared and embedded exactly as in a plain search, then

- feedback moves each query vector (``feedback.rocchio``) toward the marked right images and
  away from the wrong ones, in the index's space;
- a filter restricts the search to the allowed catalog ids (``filters.allowed_ids``): exactly
  those images are scored (an exact pass over the subset), so the result is the true top-k of the
  matching images, never a post-hoc cut of a global top-k;
- every hit gets ``relevance`` (``calibration``): its score's z over the whole collection through
  the logistic fitted on val classes; ``min_score`` drops hits below it.

Scores are the engine's own (with the model card's score correction where the engine applies it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInputError
from .calibration import DEFAULT_LOGISTIC, Logistic, ScoreMoments, check_min_score, zscores
from .feedback import Feedback, rocchio
from .filters import SearchFilter, allowed_ids
from .gallery import Gallery, block_scores, gallery_of
from .results import QueryResult, clamp_top_k

if TYPE_CHECKING:
    from .engine import QueryEngine


@dataclass(frozen=True)
class SearchOptions:
    """What a search may add to its queries: ``feedback``, a ``filter``, a ``min_score`` cut-off on the
    calibrated relevance, and ``relevance`` (attach it to every hit even without a cut-off)."""

    feedback: Feedback | None = None
    filter: SearchFilter | None = None
    min_score: float | None = None
    relevance: bool = False
    logistic: Logistic = DEFAULT_LOGISTIC

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_score", check_min_score(self.min_score))

    @property
    def active_refine(self) -> bool:
        """Whether anything beyond attaching the relevance is asked: feedback, a filter or a cut-off."""
        return bool((self.feedback is not None and not self.feedback.empty)
                    or (self.filter is not None and self.filter.active) or self.min_score is not None)

    @property
    def active(self) -> bool:
        return self.active_refine or self.relevance


def _moments(g: Gallery, engine: "QueryEngine", corrected: bool) -> ScoreMoments:
    """The collection's score moments for raw or corrected scores, once per gallery.

    Exact (every image) up to ``gallery.MOMENT_SAMPLE`` images; past that, estimated on that many
    evenly spaced ones: a mean over 8,192 scores is within a few hundredths of a standard deviation
    of the whole collection's, its standard deviation within 3 % (tested), and a million-image
    server starts in seconds instead of a pass over every vector (O(n E^2), an n x E float64 copy).
    """
    cache = g.__dict__.setdefault("_moments", {})
    if corrected not in cache:
        rows = g.sample_rows()
        scale = offset = None
        if corrected:
            scale, offset = engine.terms.lookup(g.ids[rows])
        # read block by block as the moments are accumulated: one block of vectors in memory, not the sample
        cache[corrected] = ScoreMoments(g.view(rows), g.metric, scale, offset)
    return cache[corrected]


def refine_vectors(engine: "QueryEngine", xq: np.ndarray, feedback: Feedback) -> np.ndarray:
    """(Q, E) query vectors moved by ``feedback`` (:func:`feedback.rocchio`) with the marked images'
    index-space vectors; ids that are not entries of the index are refused by name."""
    g = gallery_of(engine.index)
    pos = g.take(g.rows(feedback.positive, "--more-like id")) if feedback.positive else np.zeros((0, g.dim))
    neg = g.take(g.rows(feedback.negative, "--less-like id")) if feedback.negative else np.zeros((0, g.dim))
    return rocchio(xq, pos, neg, feedback.weights, engine.metric)


def search_allowed(engine: "QueryEngine", xq: np.ndarray, corrected: np.ndarray, allowed: np.ndarray,
                   k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each query among the ``allowed`` image ids only: D (Q, k') float32, I (Q, k') ids.

    Every allowed image is scored (the engine's score, corrected for rows where ``corrected``),
    so the result is exactly the highest-ranked matching images; ties keep id order. Scored block
    by block (``Gallery.blocks``), keeping each block's top ``k``: memory is one block and the
    candidates, whatever the number of allowed images.
    """
    g = gallery_of(engine.index)
    rows = np.flatnonzero(np.isin(g.ids, allowed))
    width = len(rows) if k is None else min(int(k), len(rows))
    q = np.asarray(xq, np.float64)
    cand_s, cand_i = [np.zeros((len(q), 0))], [np.zeros((len(q), 0), np.int64)]
    for r, x in g.blocks(rows):
        s = block_scores(q, x, g.metric)
        ids = g.ids[r]
        if corrected.any():
            scale, offset = engine.terms.lookup(ids)
            s[corrected] = s[corrected] * scale[None, :] + offset[None, :]
        order = np.argsort(-s, axis=1, kind="stable")[:, :width]
        cand_s.append(np.take_along_axis(s, order, axis=1))
        cand_i.append(ids[order])
    # blocks come in ascending id order and each keeps its ties in id order, so a stable sort of the
    # concatenation keeps every tie in id order, as one sort over all the allowed images would
    s, ids = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :width]
    return np.take_along_axis(s, order, axis=1).astype(np.float32), np.take_along_axis(ids, order, axis=1)


def run_refined(engine: "QueryEngine", specs: list, k: int | None, options: SearchOptions,
                general_weight: float | None = None) -> list[QueryResult]:
    """:meth:`QueryEngine.run` with feedback, a filter and the relevance scale (module docstring)."""
    if general_weight is not None:
        raise InvalidInputError("--general-weight cannot be combined with feedback, filters or --min-score yet; "
                                "leave one of them out")
    k = clamp_top_k(k, len(specs), engine.index.ntotal)
    prepared, descriptors = engine.prepare_all(specs)
    xq = engine.embed(prepared, descriptors)
    fb = options.feedback
    if fb is not None and not fb.empty:
        xq = refine_vectors(engine, xq, fb)
        for p in prepared:
            p.resolved["feedback"] = fb.describe()
    fix = np.array([engine.corrects(p) for p in prepared], bool)
    flt = options.filter
    if flt is not None and flt.active:
        D, I = search_allowed(engine, xq, fix, allowed_ids(engine.index, flt), k)
        for p in prepared:
            p.resolved["filter"] = flt.describe()
    else:   # each row ranked its own way (corrected or not) through the index: never an exact pass over all
        D, I = engine.search_mixed(xq, k, fix)
    for p, f in zip(prepared, fix):
        if f:
            p.resolved["correction"] = engine.terms.correction.describe()
    results = engine.collect(prepared, D, I)
    if options.min_score is not None or options.relevance:
        g = gallery_of(engine.index)
        for q, (res, f) in enumerate(zip(results, fix)):
            mu, sd = _moments(g, engine, bool(f)).mean_std(xq[q:q + 1])
            rel = options.logistic(zscores(np.array([[h.score for h in res.hits]], np.float64), mu, sd))[0]
            for h, r in zip(res.hits, rel):
                h.relevance = float(r)
            if options.min_score is not None:
                res.hits = [h for h in res.hits if h.relevance >= options.min_score]
            mom = _moments(g, engine, bool(f))
            res.resolved["relevance"] = {
                "scale": f"sigmoid({options.logistic.a:.3g} z + {options.logistic.b:.3g}), z = score standardised "
                         "over the collection for this query", "min_score": options.min_score,
                "moments_from": f"{mom.n:,} of {len(g):,} images" if mom.n < len(g) else "every image"}
    return results


def search_options(*, more_like: str | None = None, less_like: str | None = None, path_glob: str | None = None,
                   folder: str | None = None, min_bytes: str | int | None = None, min_side: int | None = None,
                   after: str | None = None, before: str | None = None, min_score: float | None = None,
                   relevance: bool = False) -> SearchOptions:
    """:class:`SearchOptions` from the strings a request or a command line carries (``"12,40"`` ids,
    ``"200k"`` sizes, ISO dates), every value checked; blank strings count as not given."""
    from .feedback import parse_ids
    from .filters import parse_size

    def given(v):
        return None if v is None or (isinstance(v, str) and not v.strip()) else v

    pos, neg = parse_ids(more_like, "more-like"), parse_ids(less_like, "less-like")
    flt = SearchFilter(path_glob=given(path_glob), folder=given(folder), min_bytes=parse_size(given(min_bytes)),
                       min_side=given(min_side), taken_after=given(after), taken_before=given(before))
    return SearchOptions(feedback=Feedback(pos, neg) if pos or neg else None, filter=flt if flt.active else None,
                         min_score=given(min_score), relevance=relevance)
