"""``zslr query`` as one library call: a typed config in, ranked results out."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInputError
from .engine import open_engine
from .feedback import Feedback
from .filters import SearchFilter
from .fusion import check_general_weight
from .refined import SearchOptions
from .results import QueryResult
from .spec import QuerySpec


@dataclass
class QueryConfig:
    """What to ask (``specs``, in order) of which index, and how many results per query."""

    specs: list[QuerySpec]
    index: str = "default"
    index_root: str | None = None
    top_k: int | None = 10          # None ranks the whole catalog
    weights: str | None = None      # backbone weight file, for --image on an index built with --weights
    raw_scores: bool = False        # rank by raw model scores, without the model card's score correction
    general_weight: float | None = None  # fuse the general model's text score (0 < w <= 1; index with a model)
    more_like: tuple[int, ...] = ()     # relevance feedback: catalog ids marked right ...
    less_like: tuple[int, ...] = ()     # ... and wrong (query.feedback, Rocchio weights chosen on val classes)
    filter: SearchFilter | None = None  # only images matching it are searched (query.filters)
    min_score: float | None = None      # drop results whose calibrated relevance is below (query.calibration)
    relevance: bool = False             # attach the calibrated relevance to every result

    def options(self) -> SearchOptions:
        """The :class:`SearchOptions` these fields ask for (inactive when none is set)."""
        fb = Feedback(tuple(self.more_like), tuple(self.less_like)) if (self.more_like or self.less_like) else None
        return SearchOptions(feedback=fb, filter=self.filter, min_score=self.min_score, relevance=self.relevance)


@dataclass
class QueryRun:
    results: list[QueryResult]
    index: str
    metric: str


def run_query(cfg: QueryConfig) -> QueryRun:
    """Open the index, answer every spec in one batched search, return the ranked results."""
    if not cfg.specs:
        raise InvalidInputError("no query given; use --text, --attributes, --class, --attribute-file, --image or --batch")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise InvalidInputError(f"--top-k must be >= 1, got {cfg.top_k}")
    check_general_weight(cfg.general_weight)
    options = cfg.options()   # checked before the index is opened
    engine = open_engine(cfg.index, cfg.index_root, backbone_weights=cfg.weights, correction=not cfg.raw_scores)
    try:
        results = engine.run(cfg.specs, cfg.top_k, general_weight=cfg.general_weight, options=options)
    finally:
        engine.index.close()
    name = str(engine.manifest.name)
    return QueryRun(results, name, engine.metric)
