"""Searcher backends by name; see ``base.Searcher`` for the contract."""
from __future__ import annotations

from ...registry import Registry
from .base import METRICS, NumpySearcher, Searcher, exact_scores

SEARCHERS: Registry[type[Searcher]] = Registry("searcher")
SEARCHERS.add("numpy", NumpySearcher)


def list_searchers() -> list[str]:
    return SEARCHERS.names()


def make_searcher(name: str, dim: int, metric: str = "ip", **kwargs) -> Searcher:
    """Create a searcher by name; ``"auto"`` picks the fastest exact backend available."""
    if name == "auto":
        name = "faiss" if "faiss" in SEARCHERS else "numpy"
    return SEARCHERS.get(name)(dim, metric, **kwargs)


__all__ = ["METRICS", "SEARCHERS", "NumpySearcher", "Searcher", "exact_scores", "list_searchers", "make_searcher"]
