"""FAISS index construction, (atomic) persistence and id bookkeeping.

Every index is ``IndexIDMap2(<factory index>)`` so vectors carry explicit int64 faiss ids and
the index file itself records which ids it holds (``id_map``): comparing that set with the
catalog's entries tells whether the file is current. Scores follow the searcher convention:
higher is better, L2 reported as *negative* squared distance.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import faiss
import numpy as np

from ..errors import InvalidInputError
from .store import atomic_write

FAISS_METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
GPU_MAX_K = 2048  # faiss GPU k limit; larger k is searched on the CPU copy


def normalize_index_type(spec: str | None) -> str:
    """User factory string -> canonical one without a leading IDMap (we always add IDMap2)."""
    spec = (spec or "Flat").strip()
    spec = re.sub(r"^IDMap2?,", "", spec)
    if not spec:
        raise InvalidInputError("empty --index-type; expected a FAISS factory string such as Flat, IVF256,Flat, IVF256,PQ32, HNSW32")
    return spec


def new_index(spec: str, dim: int, metric: str) -> faiss.Index:
    """An empty ``IDMap2,<spec>`` index; bad strings raise InvalidInputError naming them."""
    if metric not in FAISS_METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; valid: {', '.join(FAISS_METRICS)}")
    try:
        return faiss.index_factory(int(dim), "IDMap2," + normalize_index_type(spec), FAISS_METRICS[metric])
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1]
        raise InvalidInputError(f"--index-type {spec!r} is not a valid FAISS factory string for dim {dim} "
                                f"({msg.split(':')[-1].strip()}); e.g. Flat, IVF256,Flat, IVF256,PQ16, HNSW32") from None


def _min_train(spec: str) -> int:
    """Fewest training vectors FAISS accepts for ``spec`` (k-means needs >= k points)."""
    need = 1
    for m in re.finditer(r"IVF(\d+)", spec):
        need = max(need, int(m.group(1)))
    for m in re.finditer(r"PQ\d+(?:x(\d+))?", spec):
        need = max(need, 2 ** int(m.group(1) or 8))
    return need


def train_index(index: faiss.Index, spec: str, x: np.ndarray, *, seed: int = 0) -> None:
    """Train ``index`` (no-op when it needs none); too few vectors -> InvalidInputError with a fix."""
    if index.is_trained:
        return
    x = np.ascontiguousarray(x, dtype=np.float32)
    need = _min_train(spec)
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


def build_index(spec: str, dim: int, metric: str, x: np.ndarray, ids: np.ndarray, *, seed: int = 0) -> faiss.Index:
    """Create, train (when the type needs it) and fill an index with (n, dim) vectors under (n,) ids."""
    index = new_index(spec, dim, metric)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x):
        train_index(index, spec, x, seed=seed)
        index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _ivf(index: faiss.Index):
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def default_search_params(index: faiss.Index) -> str:
    """Recall-leaning defaults: IVF probes 1/8 of the lists (at least 16), HNSW efSearch 128."""
    ivf = _ivf(index)
    if ivf is not None:
        return f"nprobe={min(ivf.nlist, max(16, ivf.nlist // 8))}"
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if hasattr(inner, "hnsw"):
        return "efSearch=128"
    return ""


def apply_search_params(index: faiss.Index, params: str | None) -> None:
    params = default_search_params(index) if params is None else params
    if not params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise InvalidInputError(f"--search-params {params!r} do not apply to this index "
                                f"({str(e).strip().splitlines()[-1].split(':')[-1].strip()}); e.g. nprobe=16, efSearch=64") from None


def index_ids(index: faiss.Index) -> np.ndarray:
    """The (ntotal,) int64 faiss ids stored in an IDMap index."""
    return faiss.vector_to_array(faiss.downcast_index(index).id_map).astype(np.int64) if index.ntotal else np.zeros(0, np.int64)


def write_index(index: faiss.Index, path: Path) -> None:
    """Atomic write: serialise, temp file beside ``path``, fsync, ``os.replace``."""
    buf = faiss.serialize_index(index)
    atomic_write(path, lambda f: f.write(buf.tobytes()))


def read_index(path: Path) -> faiss.Index:
    return faiss.read_index(str(path))


def to_search_device(index: faiss.Index) -> faiss.Index:
    """A GPU copy when faiss sees a GPU and supports the type, else the index itself."""
    if faiss.get_num_gpus() <= 0:
        return index
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except (RuntimeError, AttributeError):  # e.g. HNSW has no GPU implementation
        return index


def fingerprint(spec: str, dim: int, metric: str, model_sha256: str | None, backbone_weights: str | None) -> str:
    """Short hash naming the index file, so a file built for other settings is never mistaken as current."""
    key = json.dumps([normalize_index_type(spec), int(dim), metric, model_sha256, backbone_weights])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def index_file_name(fp: str) -> str:
    return f"index-{fp}.faiss"
