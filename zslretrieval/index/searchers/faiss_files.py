"""The persisted FAISS file of an index folder, and the one import of faiss.

Every index file is ``IDMap2,<factory string>``: vectors carry explicit int64 faiss ids and the file
itself records which ids it holds (``id_map``); comparing that set with the catalog's entries tells
whether the file is current (``index/sync.py``). This module builds (:func:`new_index`,
:func:`train_index`, :func:`build_index`), reads and writes (:func:`read_index`,
:func:`write_index`, atomic) such files, reads and relabels their ids (:func:`index_ids`,
:func:`relabel_ids`), and sets their search parameters (:func:`apply_search_params`, with the
reader's own ``rerank=N`` split off by :func:`split_rerank`). Searching a loaded file is
``FaissSearcher.from_faiss_index`` (``faiss_searcher.py``).

:func:`faiss_module` is the one place faiss is imported, for this module, the searcher and the
index code that calls faiss directly (``sync.py``, ``autotune.py``).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import IncompatibleError, InvalidInputError
from ...fileio import atomic_write


@functools.lru_cache(maxsize=1)
def faiss_module() -> Any:
    """Import faiss once; a broken install (e.g. faiss-gpu-cu12 without CUDA 12 libraries)
    becomes an IncompatibleError that says what to do, not an ImportError deep in a stack."""
    try:
        import faiss  # noqa: PLC0415
    except (ImportError, OSError) as e:  # OSError: missing libcublas.so.12 and the like
        raise IncompatibleError(
            f"faiss could not be imported ({e}); install faiss-cpu, or faiss-gpu-cu12 on a CUDA 12 "
            "machine (see docs/gpu.md), or use --searcher torch / numpy") from e
    return faiss



def normalize_index_type(spec: str | None) -> str:
    """User factory string -> canonical one without a leading IDMap (persisted indexes always add IDMap2)."""
    spec = (spec or "Flat").strip()
    spec = re.sub(r"^IDMap2?,", "", spec)
    if not spec:
        raise InvalidInputError("empty --index-type; expected a FAISS factory string such as Flat, IVF256,Flat, IVF256,PQ32, HNSW32")
    return spec


def _faiss_metric(metric: str) -> int:
    faiss = faiss_module()
    metrics = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
    if metric not in metrics:
        raise InvalidInputError(f"unknown metric {metric!r}; valid: {', '.join(metrics)}")
    return metrics[metric]


def new_index(spec: str, dim: int, metric: str) -> Any:
    """An empty ``IDMap2,<spec>`` index; bad strings raise InvalidInputError naming them."""
    faiss_metric = _faiss_metric(metric)
    try:
        return faiss_module().index_factory(int(dim), "IDMap2," + normalize_index_type(spec), faiss_metric)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1]
        raise InvalidInputError(f"--index-type {spec!r} is not a valid FAISS factory string for dim {dim} "
                                f"({msg.split(':')[-1].strip()}); e.g. Flat, IVF256,Flat, IVF256,PQ16, HNSW32") from None


def min_train(spec: str) -> int:
    """Fewest training vectors FAISS accepts for ``spec`` (k-means needs >= k points)."""
    need = 1
    for m in re.finditer(r"IVF(\d+)", spec):
        need = max(need, int(m.group(1)))
    for m in re.finditer(r"PQ\d+(?:x(\d+))?", spec):
        need = max(need, 2 ** int(m.group(1) or 8))
    return need


def check_trainable(spec: str, dim: int, metric: str, n: int) -> None:
    """Refuse a factory string that is invalid, or needs more training vectors than ``n`` (> 0)."""
    new_index(spec, dim, metric)
    if 0 < n < min_train(spec):
        raise InvalidInputError(f"--index-type {spec!r} needs at least {min_train(spec)} vectors to train, the index has "
                                f"{n}; use fewer lists/centroids (e.g. IVF{max(1, n // 39)},Flat) or the exact Flat")


def train_index(index: Any, spec: str, x: np.ndarray, *, seed: int = 0) -> None:
    """Train ``index`` (no-op when it needs none); too few vectors -> InvalidInputError with a fix."""
    if index.is_trained:
        return
    x = np.ascontiguousarray(x, dtype=np.float32)
    need = min_train(spec)
    if len(x) < need:
        raise InvalidInputError(f"--index-type {spec!r} needs at least {need} vectors to train, the index has {len(x)}; "
                                f"use fewer lists/centroids (e.g. IVF{max(1, len(x) // 39)},Flat) or the exact Flat")
    ivf = _ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
    try:
        index.train(x)
    except RuntimeError as e:
        raise InvalidInputError(f"--index-type {spec!r} could not be trained on {len(x)} vectors: "
                                f"{str(e).strip().splitlines()[-1]}") from None


def build_index(spec: str, dim: int, metric: str, x: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> Any:
    """Create, train (when the type needs it) and fill an index with (n, dim) vectors under (n,) ids."""
    index = new_index(spec, dim, metric)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x):
        train_index(index, spec, x, seed=seed)
        index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _ivf(index: Any) -> Any:
    try:
        return faiss_module().extract_index_ivf(index)
    except RuntimeError:
        return None


def default_search_params(index: Any) -> str:
    """Recall-leaning defaults: IVF probes 1/8 of the lists (at least 16), HNSW efSearch 128."""
    faiss = faiss_module()
    ivf = _ivf(index)
    if ivf is not None:
        return f"nprobe={min(ivf.nlist, max(16, ivf.nlist // 8))}"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch=128"
    return ""


def split_rerank(params: str | None) -> tuple[str, int]:
    """``"nprobe=16,rerank=100"`` -> (``"nprobe=16"``, 100): FAISS gets the rest; ``rerank=N`` asks the
    reader to re-score N candidates exactly from the stored features (``index.autotune``)."""
    if not params:
        return params or "", 0
    keep, rerank = [], 0
    for item in params.split(","):
        name, _, value = item.strip().partition("=")
        if name == "rerank":
            if not value.isdigit() or int(value) < 1:
                raise InvalidInputError(f"search parameter {item.strip()!r}; expected rerank=N with N >= 1")
            rerank = int(value)
        elif item.strip():
            keep.append(item.strip())
    return ",".join(keep), rerank


def apply_search_params(index: Any, params: str | None) -> None:
    """Set search parameters on a CPU index (None: :func:`default_search_params`; ``rerank=N`` is skipped)."""
    params = default_search_params(index) if params is None else split_rerank(params)[0]
    if not params:
        return
    try:
        faiss_module().ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise InvalidInputError(f"--search-params {params!r} do not apply to this index "
                                f"({str(e).strip().splitlines()[-1].split(':')[-1].strip()}); e.g. nprobe=16, efSearch=64") from None


def index_ids(index: Any) -> np.ndarray:
    """The (ntotal,) int64 faiss ids stored in an IDMap index."""
    faiss = faiss_module()
    return faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64) if index.ntotal else np.zeros(0, np.int64)


def relabel_ids(index: Any, ids: np.ndarray) -> None:
    """Give the vectors of an IDMap2 index whose ids are the row numbers 0..n-1 of ``ids`` (in any
    order of addition) the faiss ids ``ids[row]``: the index then equals one filled with
    ``add_with_ids(x, ids)`` (the id map is all an IDMap2 stores of them)."""
    faiss = faiss_module()
    idmap = faiss.downcast_index(index)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    rows = faiss.vector_to_array(idmap.id_map)
    if len(ids) != idmap.ntotal or len(np.unique(ids)) != len(ids) or not np.array_equal(np.sort(rows), np.arange(len(ids))):
        raise ValueError(f"{len(ids)} ids for an index of {idmap.ntotal} vectors, ids repeated, or the index's "
                         "ids are not the row numbers 0..n-1")
    faiss.copy_array_to_vector(np.ascontiguousarray(ids[rows]), idmap.id_map)
    idmap.construct_rev_map()


def write_index(index: Any, path: Path) -> None:
    """Atomic write: serialise, temp file beside ``path``, fsync, ``os.replace``."""
    buf = faiss_module().serialize_index(index)
    atomic_write(path, lambda f: f.write(buf.tobytes()))


def read_index(path: Path, *, mmap: bool = False) -> Any:
    """The FAISS index in ``path``. ``mmap=True`` (readers that never add to it): the vectors and codes
    are memory-mapped from the file instead of copied (FAISS ``IO_FLAG_MMAP_IFC``), so opening a
    5 GB million-vector index takes 0.1 s instead of 3.3 s, and the pages are the page cache's,
    shared between processes and given back under memory pressure. A writer replaces the file by
    rename, so a mapped reader keeps reading the old state until it reopens. Types whose storage
    cannot be mapped are read as usual."""
    faiss = faiss_module()
    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None) if mmap else None
    return faiss.read_index(str(path)) if flag is None else faiss.read_index(str(path), flag)
