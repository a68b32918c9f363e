"""``--index-type auto``: pick a FAISS index type for a collection size, a memory budget and a
query-time budget, then tune its search parameter on held-out queries (the autofaiss idea).

Order of preference, first one that fits the budgets and reaches the recall target wins:

    Flat                      exact; chosen below FLAT_BELOW vectors whenever it fits in memory
    HNSW32                    graph; fast, but vectors + graph must fit in memory
    IVF<nlist>,Flat           inverted lists of full vectors
    IVF<nlist>,PQ<m>x8        inverted lists of m-byte codes (~dim*4/m times smaller), searched
                              for ``rerank`` candidates that are then re-scored exactly from the
                              stored features (:func:`rerank`): PQ alone reaches recall@10 ~0.3

Tuning: ``held_out`` vectors of the collection are queries, left out of the index while it is
tuned (added once it is chosen); the truth is their exact top-k among the other vectors, so the
recall is that of a query the index has never seen. nprobe / efSearch doubles until the
recall target is met; the smallest value meeting it is kept. These are image-to-image queries:
text-to-image queries of a model may need more probes, so the target carries a margin.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .searchers.faiss_files import apply_search_params, faiss_module, split_rerank
from .sync import build_index_from

FLAT_BELOW = 50_000          # exact search is fast enough below this many vectors
RECALL_TARGET = 0.95
TUNE_MARGIN = 0.01           # tuned to target + margin: held-out recall varies a little with the query sample
K = 10

# (nq, dim) queries, (nq, k') candidate ids -> (nq, k') exact scores (higher = better, -inf for -1).
ExactScorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Trial:
    index_type: str
    search_params: str
    rerank: int
    recall: float
    query_ms: float
    memory_bytes: int


@dataclass
class IndexChoice:
    """The chosen type, its tuned search parameters (``rerank=N`` included when PQ codes are
    re-scored), what was measured, and why."""

    index_type: str
    search_params: str
    recall: float
    query_ms: float
    memory_bytes: int
    reason: str
    trials: list[Trial] = field(default_factory=list)
    # The index tuned, of the chosen type, under x's row numbers as ids and with its search parameters
    # as built (None: nothing built, e.g. Flat below FLAT_BELOW). A FAISS object, not part of the record.
    index: Any = field(default=None, repr=False, compare=False)

    @property
    def rerank(self) -> int:
        return split_rerank(self.search_params)[1]

    def describe(self) -> str:
        """One line for people: type, parameters, measured recall, memory and why."""
        rec = "exact" if self.index_type == "Flat" and not self.trials else f"recall@{K} {self.recall:.3f} on held-out vectors"
        ms = f", {self.query_ms:.2f} ms/query" if np.isfinite(self.query_ms) else ""
        return (f"{self.index_type}{' ' + self.search_params if self.search_params else ''}: {rec}{ms}, "
                f"~{self.memory_bytes / 2**20:.1f} MiB ({self.reason})")

    def to_dict(self) -> dict:
        """JSON-ready record of the choice and every trial (NaN latency -> None)."""
        def num(v: float) -> float | None:
            return None if not np.isfinite(v) else round(float(v), 6)
        return {"index_type": self.index_type, "search_params": self.search_params, "recall_at_10": num(self.recall),
                "query_ms": num(self.query_ms), "memory_bytes": int(self.memory_bytes), "reason": self.reason,
                "trials": [{"index_type": t.index_type, "search_params": t.search_params, "recall_at_10": num(t.recall),
                            "query_ms": num(t.query_ms), "memory_bytes": int(t.memory_bytes)} for t in self.trials]}


def parse_memory(text: str | int | None) -> int | None:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"100000"`` (bytes) -> bytes (> 0); None stays None."""
    if text is None:
        return None
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise InvalidInputError(f"--max-memory {text!r}; expected bytes or a size like 512M, 2G, 1.5GiB")
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
        if not m:
            raise InvalidInputError(f"--max-memory {text!r}; expected bytes or a size like 512M, 2G, 1.5GiB")
        value = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    if value <= 0:
        raise InvalidInputError(f"--max-memory {text!r}; expected a size above 0, e.g. 512M, 2G")
    return value


AUTO = "auto"
# What ``--index-type auto`` chose and measured, beside the catalog in the index folder.
CHOICE_FILE = "index-choice.json"


def is_auto(index_type: str | None) -> bool:
    return index_type is not None and index_type.strip().lower() == AUTO


@dataclass
class AutoIndexOptions:
    """Budgets of ``zslr index --index-type auto`` (checked by :func:`auto_options`)."""

    max_memory: int | None = None        # bytes the FAISS index may take in RAM
    max_query_ms: float | None = None    # single-query latency measured while tuning
    recall_target: float = RECALL_TARGET


def auto_options(index_type: str | None, search_params: str | None = None, max_memory: str | int | None = None,
                 max_query_ms: float | None = None, recall_target: float | None = None) -> AutoIndexOptions | None:
    """Check the auto-index options of ``zslr index`` before anything is written.

    Returns the budgets when ``index_type`` is ``auto``, None otherwise; InvalidInputError naming
    the value and what is accepted for a bad value, or for budgets given without ``auto``.
    """
    if not is_auto(index_type):
        given = [f"{flag} {v}" for flag, v in (("--max-memory", max_memory), ("--max-query-ms", max_query_ms),
                                                ("--recall-target", recall_target)) if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} only apply to --index-type auto (got --index-type "
                                    f"{index_type or 'unset'}); add --index-type auto or drop them")
        return None
    if search_params:
        raise InvalidInputError(f"--search-params {search_params!r} with --index-type auto: auto tunes nprobe / "
                                "efSearch itself; give a concrete --index-type to set them by hand")
    ms = None
    if max_query_ms is not None:
        try:
            ms = float(max_query_ms)
        except (TypeError, ValueError):
            ms = float("nan")
        if not (ms > 0 and np.isfinite(ms)):
            raise InvalidInputError(f"--max-query-ms {max_query_ms!r}; expected a number of milliseconds above 0, e.g. 5")
    target = RECALL_TARGET if recall_target is None else recall_target
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise InvalidInputError(f"--recall-target {recall_target!r}; expected a recall@10 in (0, 1], e.g. 0.95")
    return AutoIndexOptions(parse_memory(max_memory), ms, float(target))


def memory_estimate(spec: str, n: int, dim: int) -> int:
    """Bytes the index holds in RAM for ``n`` vectors of ``dim`` (ids of the IDMap2 included)."""
    ids = 16 * n  # IDMap2: id array + reverse map
    m = re.fullmatch(r"IVF(\d+),PQ(\d+)(?:x(\d+))?(np)?", spec)
    if m:
        nlist, mm, bits = int(m.group(1)), int(m.group(2)), int(m.group(3) or 8)
        return ids + n * (mm * bits // 8 + 8) + 4 * dim * (nlist + 2 ** bits)
    m = re.fullmatch(r"IVF(\d+),Flat", spec)
    if m:
        return ids + n * (4 * dim + 8) + 4 * dim * int(m.group(1))
    m = re.fullmatch(r"HNSW(\d+)", spec)
    if m:
        return ids + n * (4 * dim + 2 * int(m.group(1)) * 4 + 8)
    return ids + 4 * n * dim


def candidates(n: int, dim: int) -> list[tuple[str, str, list[int], int]]:
    """(factory string, parameter name, values to try in order, rerank) in order of preference."""
    # ~4 sqrt(n) lists, a power of two, with >= 39 training points per list (FAISS's minimum)
    nlist = 1 << int(round(np.log2(max(16, 4 * np.sqrt(n)))))
    while nlist > 16 and nlist * 39 > n:
        nlist //= 2
    probes = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p <= nlist]
    m = next(mm for mm in (dim // 4, dim // 8, 16, 8, 4, 2, 1) if mm >= 1 and dim % mm == 0 and mm <= 64)
    return [("Flat", "", [0], 0),
            ("HNSW32", "efSearch", [16, 32, 64, 128, 256, 512], 0),
            (f"IVF{nlist},Flat", "nprobe", probes, 0),
            # "np": no polysemous training (20x slower to build, unused without a Hamming threshold)
            (f"IVF{nlist},PQ{m}x8np", "nprobe", probes, 10 * K)]


def rerank(D: np.ndarray, I: np.ndarray, xq: np.ndarray, exact: ExactScorer, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids ``I`` (nq, k') exactly and keep the best ``k`` (scores descending, -1 pads)."""
    s = exact(xq, I)
    s = np.where(I < 0, -np.inf, s)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1).astype(np.float32), np.take_along_axis(I, order, 1)


def vector_scorer(x: np.ndarray, metric: str) -> ExactScorer:
    """An ExactScorer over in-memory vectors ``x`` whose ids are row numbers (benchmarks, tuning)."""
    def score(xq: np.ndarray, I: np.ndarray) -> np.ndarray:
        v = x[np.maximum(I, 0)]                                  # (nq, k', dim)
        if metric == "ip":
            return np.einsum("qd,qkd->qk", xq, v)
        return -np.square(v - xq[:, None, :]).sum(-1)
    return score


def recall_at(I: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(I, truth)]))


def _exact_truth(x: np.ndarray, q_rows: np.ndarray, metric: str, k: int) -> np.ndarray:
    """Exact top-k ids of x[q_rows] among the rows that are not queries (the index they tune holds only those)."""
    xq = x[q_rows]
    s = xq @ x.T if metric == "ip" else -(np.square(x).sum(1)[None] - 2 * xq @ x.T)
    s[:, q_rows] = -np.inf
    part = np.argpartition(-s, k, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(s, part, 1), axis=1), 1)


def _search_held_out(index, xq, k, rr, score):
    """Top-``k`` ids of held-out queries (never in the index being tuned) as ``OpenIndex.search`` finds
    them: ``max(k, rr)`` candidates, re-scored exactly when ``rr`` (``rerank``)."""
    D, I = index.search(xq, max(k, rr))
    if rr:
        return rerank(D, I, xq, score, k)
    return D[:, :k], I[:, :k]


def _search_param(index: Any, pname: str) -> int | None:
    """The current value of the search parameter ``pname`` (nprobe, efSearch) of an IDMap2 index; None for ""."""
    if not pname:
        return None
    faiss = faiss_module()
    if pname == "nprobe":
        return int(faiss.extract_index_ivf(index).nprobe)
    return int(faiss.downcast_index(index.index).hnsw.efSearch)


def choose_index(x: np.ndarray, metric: str = "ip", *, max_memory: int | None = None,
                 max_query_ms: float | None = None, recall_target: float = RECALL_TARGET, k: int = K,
                 held_out: int = 200, seed: int = 0, log: Callable[[str], None] | None = None) -> IndexChoice:
    """Choose and tune an index type for the (n, dim) float32 vectors ``x`` (already in index space).

    ``max_memory``: bytes the FAISS index may hold in RAM (None: no limit); ``max_query_ms``:
    single-query latency budget measured here (None: no limit). Raises InvalidInputError when
    no candidate meets the budgets, naming what each reached.

    Candidates are built as ``sync.build_index_from`` builds a FAISS file from the same rows and
    ``seed``; the chosen one comes back as ``IndexChoice.index`` (ids = row numbers of ``x``), so
    the caller can write it instead of building it a second time.
    """
    x = np.ascontiguousarray(x, np.float32)
    n, dim = x.shape
    if not 0 < recall_target <= 1:
        raise InvalidInputError(f"recall target {recall_target}; expected 0 < target <= 1")
    fits = [c for c in candidates(n, dim) if max_memory is None or memory_estimate(c[0], n, dim) <= max_memory]
    if not fits:
        raise InvalidInputError(f"--max-memory {max_memory:,} bytes is below every index type for {n:,} x {dim} "
                                f"vectors (smallest: {min(memory_estimate(c[0], n, dim) for c in candidates(n, dim)):,})")
    if n < FLAT_BELOW and fits[0][0] == "Flat":
        return IndexChoice("Flat", "", 1.0, float("nan"), memory_estimate("Flat", n, dim),
                           f"{n:,} vectors < {FLAT_BELOW:,}: exact search")
    rng = np.random.default_rng(seed)
    q_rows = np.sort(rng.choice(n, min(held_out, n), replace=False))
    # the held-out vectors stay out of the index while it is tuned and are added after: a query that is
    # itself a node of an HNSW graph is found through its own links, which made the recall measured on
    # collection members (0.964 at 1M) overstate the recall of new queries (0.943)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), q_rows)
    xq = x[q_rows]
    truth = _exact_truth(x, q_rows, metric, k)
    score = vector_scorer(x, metric)
    trials: list[Trial] = []
    for spec, pname, values, rr in fits:
        mem = memory_estimate(spec, n, dim)
        if spec == "Flat" and max_query_ms is None:
            continue  # past FLAT_BELOW, Flat only wins when asked for a latency it meets
        t0 = time.perf_counter()
        index = build_index_from(spec, dim, metric, rest, lambda at: x[rest[at]], seed=seed)
        if log:
            log(f"auto index: built {spec} in {time.perf_counter() - t0:.1f} s")
        as_built = _search_param(index, pname)
        for v in values:
            params = f"{pname}={v}" if pname else ""
            apply_search_params(index, params)
            t0 = time.perf_counter()
            _, I = _search_held_out(index, xq, k, rr, score)
            ms = (time.perf_counter() - t0) * 1e3 / len(xq)
            r = recall_at(I, truth)
            full = ",".join(p for p in (params, f"rerank={rr}" if rr else "") if p)
            trials.append(Trial(spec, full, rr, r, ms, mem))
            if log:
                log(f"auto index: {spec} {full or '-'}: recall@{k} {r:.3f}, {ms:.3f} ms/query")
            if r >= min(1.0, recall_target + TUNE_MARGIN):
                if max_query_ms is None or ms <= max_query_ms:
                    if pname:  # the parameter goes to the manifest; the index keeps the value it was built with
                        apply_search_params(index, f"{pname}={as_built}")
                    index.add_with_ids(np.ascontiguousarray(xq), q_rows)   # every row in the index it returns
                    return IndexChoice(spec, full, r, ms, mem,
                                       f"first type within the budgets reaching recall@{k} >= {recall_target}", trials,
                                       index=index)
                break  # more probes only get slower
    best = max(trials, key=lambda t: t.recall) if trials else None
    raise InvalidInputError(
        f"no index type meets recall@{k} >= {recall_target} within --max-memory {max_memory} / --max-query-ms "
        f"{max_query_ms}" + (f"; best: {best.index_type} {best.search_params} recall {best.recall:.3f} at "
                             f"{best.query_ms:.2f} ms" if best else ""))
