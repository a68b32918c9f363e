"""What a query returns (:class:`Hit`, :class:`QueryResult`) and how many results one call may return."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInputError
from .spec import QuerySpec

# Results one call may return (queries x top-k, after clamping to the index size): a Hit costs a
# few hundred bytes, so this bounds a call at a few GiB instead of letting --top-k size it.
MAX_RESULTS = 20_000_000


@dataclass(slots=True)  # slots: a 1,000-query batch builds 10,000 of these
class Hit:
    """One ranked catalog entry."""

    rank: int
    id: int
    score: float
    path: str
    label: str | None
    status: str | None = None
    # comparable across queries (query.calibration); set when a search asks for it (--min-score, the server)
    relevance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "id": self.id, "score": self.score, "path": self.path,
               "label": self.label, "status": self.status}
        if self.relevance is not None:
            out["relevance"] = self.relevance
        return out


@dataclass
class QueryResult:
    """A query, how it was understood (``resolved``), and its ranked hits."""

    query: QuerySpec
    resolved: dict[str, Any]
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": {"kind": self.query.kind, "text": self.query.text}, "resolved": self.resolved,
                "results": [h.to_dict() for h in self.hits]}


def clamp_top_k(k: int | None, n_queries: int, n_entries: int) -> int | None:
    """``k`` checked and clamped to the index's ``n_entries`` (None = full ranking).

    A ``--top-k`` beyond the number of entries returns every entry, and a batch whose results
    would not fit in memory is refused before anything is allocated.
    """
    if k is not None and not (type(k) is int and k >= 1):  # a plain positive int needs no conversion
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise InvalidInputError(f"top-k must be a positive integer (or None for the full ranking), got {k!r}")
        k = int(k)
    if k is None or k >= n_entries:
        k = None  # the full ranking: every entry, exact even for approximate index types
    width = n_entries if k is None else k
    if n_queries * width > MAX_RESULTS:
        raise InvalidInputError(
            f"{n_queries} quer{'y' if n_queries == 1 else 'ies'} x top-k {width:,} = {n_queries * width:,} results; "
            f"at most {MAX_RESULTS:,} per call: lower --top-k or split the batch")
    return k


def check_fused_size(n_queries: int, n_entries: int) -> None:
    """Refuse a fused batch (every image scored per query) beyond :data:`MAX_RESULTS` scores."""
    if n_queries * n_entries > MAX_RESULTS:
        raise InvalidInputError(
            f"fusing the general model scores every image: {n_queries} queries x {n_entries:,} images = "
            f"{n_queries * n_entries:,} scores; at most {MAX_RESULTS:,} per call: split the batch")
