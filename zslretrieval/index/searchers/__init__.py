"""Searcher backends by name; see ``base.Searcher`` for the contract."""
from __future__ import annotations

from ...registry import Registry
from .base import METRICS, NumpySearcher, Searcher, exact_scores

SEARCHERS: Registry[type[Searcher]] = Registry("searcher")
SEARCHERS.add("numpy", NumpySearcher)


def list_searchers() -> list[str]:
    return SEARCHERS.names()


__all__ = ["METRICS", "SEARCHERS", "NumpySearcher", "Searcher", "exact_scores", "list_searchers"]
