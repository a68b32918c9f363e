"""Searcher backends by name; see ``zslretrieval.scoring.Searcher`` for the contract (re-exported here
with ``NumpySearcher`` and ``exact_scores``).

    numpy  float64 brute force, the reference (CPU)
    faiss  FAISS IndexIDMap2 over Flat (exact) or any index_factory string; GPU when FAISS sees one
    torch  exact fp16/bf16 scan + fp32 re-rank on a torch device (CUDA; CPU for tests)
    sharded  shards by id of one of these (``inner=``), searched in threads, exact top-k merge
    auto   faiss on GPU if faiss.get_num_gpus() > 0, else torch on CUDA if available, else faiss CPU
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...errors import InvalidInputError
from ...registry import Registry
from ...scoring import METRICS, NumpySearcher, Searcher, exact_scores
from .faiss_searcher import FAISS_GPU_MAX_K, FaissSearcher, faiss_num_gpus
from .sharded import ShardedSearcher, merge_topk

if TYPE_CHECKING:
    from .torch_searcher import TorchSearcher


def _torch_searcher(dim: int, metric: str = "ip", **kwargs) -> Searcher:
    # torch is imported with the torch backend only: a query process on FAISS never loads it
    from .torch_searcher import TorchSearcher
    return TorchSearcher(dim, metric, **kwargs)


def __getattr__(name: str):
    if name == "TorchSearcher":
        from .torch_searcher import TorchSearcher
        return TorchSearcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SEARCHERS: Registry[Callable[..., Searcher]] = Registry("searcher")
SEARCHERS.add("numpy", NumpySearcher)
SEARCHERS.add("faiss", FaissSearcher)
SEARCHERS.add("torch", _torch_searcher)
SEARCHERS.add("sharded", ShardedSearcher)


def _cuda_possible() -> bool:
    """Whether torch could see a GPU here, without importing torch where no GPU driver is installed
    (importing it costs a CPU-only query process ~2 s and ~300 MB)."""
    if "torch" in sys.modules:
        return True
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/kfd"))


def list_searchers() -> list[str]:
    return ["auto", *SEARCHERS.names()]


def resolve_auto(index_type: str = "Flat") -> tuple[str, dict]:
    """The backend ``"auto"`` stands for on this machine: (name, extra kwargs).

    FAISS on a GPU first (it also serves approximate index types), then the torch backend on CUDA
    (exact only; e.g. CUDA 13 machines where faiss-gpu-cu12's CUDA 12 libraries are absent), else
    FAISS on the CPU.
    """
    if faiss_num_gpus() > 0:
        return "faiss", {"device": "cuda"}
    if index_type.lower() == "flat" and _cuda_possible():
        import torch
        if torch.cuda.is_available():
            return "torch", {"device": "cuda"}
    return "faiss", {"device": "cpu"}


def make_searcher(name: str, dim: int, metric: str = "ip", **kwargs) -> Searcher:
    """Create a searcher by name (``"auto"``, ``"numpy"``, ``"faiss"``, ``"torch"``).

    kwargs go to the backend (``index_type``, ``device``, and backend options such as ``dtype``
    for torch or ``params`` for faiss). A ``device=None``/``"auto"`` lets ``"auto"`` decide.
    """
    if not isinstance(name, str):
        raise InvalidInputError(f"searcher name {name!r}; accepted: {', '.join(list_searchers())}")
    if name.lower() == "auto":
        name, auto_kw = resolve_auto(kwargs.get("index_type", "Flat"))
        if kwargs.get("device") in (None, "auto"):
            kwargs = {**kwargs, **auto_kw}
    return SEARCHERS.get(name)(dim, metric, **kwargs)


def searcher_factory(name: str = "auto", **kwargs) -> Callable[[int, str], Searcher]:
    """A ``(dim, metric) -> Searcher`` callable, e.g. for ``AccuracyCalculator(searcher_factory=...)``."""
    if name.lower() != "auto":
        SEARCHERS.canonical(name)  # fail now on a bad name, not at the first evaluation
    return functools.partial(_make_positional, name, kwargs)


def _make_positional(name: str, kwargs: dict, dim: int, metric: str = "ip") -> Searcher:
    return make_searcher(name, dim, metric, **kwargs)


__all__ = ["FAISS_GPU_MAX_K", "METRICS", "SEARCHERS", "FaissSearcher", "NumpySearcher", "Searcher", "ShardedSearcher",
           "TorchSearcher", "merge_topk",
           "exact_scores", "list_searchers", "make_searcher", "resolve_auto", "searcher_factory"]
