"""FAISS backend: ``IndexIDMap2`` over a flat (exact) or factory-built (approximate) index.

On a machine where ``faiss.get_num_gpus() > 0`` the inner index is cloned to the GPU. FAISS GPU
cannot select more than 2048 neighbours per query, so ``search`` with a larger k and ``rank_all``
score every stored vector exactly in chunks (vectors read back with ``reconstruct_n``) instead of
silently returning a truncated list. The same chunked path serves ``rank_all`` for approximate index
types, whose own search would miss vectors.

The persisted form used by ``zslretrieval.index`` (``IDMap2`` files: build, read, write, ids,
search parameters) is ``faiss_files.py``. ``OpenIndex`` searches a loaded file through
:meth:`FaissSearcher.from_faiss_index`, so there is one GPU k limit and one device-copy path.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ...errors import IncompatibleError, InvalidInputError
from ...scoring import Searcher
from .faiss_files import faiss_module, split_rerank

log = logging.getLogger(__name__)

#: FAISS GPU's compile-time limit on k (and nprobe) per search (GPU_MAX_SELECTION_K).
FAISS_GPU_MAX_K = 2048

# Bytes of float32 scratch one chunk of the exact path may use (scores + reconstructed vectors).
_CHUNK_BYTES = 256 << 20


def faiss_num_gpus() -> int:
    """GPUs FAISS can use (0 for faiss-cpu builds or when faiss is not importable)."""
    try:
        return int(faiss_module().get_num_gpus())
    except IncompatibleError:
        return 0


def _want_gpu(device: str | None) -> tuple[bool, int]:
    """Parse ``device`` (None/"auto", "cpu", "cuda", "cuda:N", "gpu") into (use_gpu, gpu_id)."""
    d = "auto" if device is None else str(device).lower()
    if d == "auto":
        return faiss_num_gpus() > 0, 0
    if d == "cpu":
        return False, 0
    if d in ("cuda", "gpu") or d.startswith(("cuda:", "gpu:")):
        gpu_id = int(d.split(":")[1]) if ":" in d else 0
        n = faiss_num_gpus()
        if n == 0:
            raise IncompatibleError(
                f"device {device!r} asked for FAISS on a GPU but this faiss build sees no GPU "
                "(faiss.get_num_gpus() == 0); install faiss-gpu-cu12 (docs/gpu.md), or use "
                "--searcher torch, or device 'cpu'")
        if gpu_id >= n:
            raise InvalidInputError(f"device {device!r}: faiss sees {n} GPU(s); accepted: cuda:0..cuda:{n - 1}")
        return True, gpu_id
    raise InvalidInputError(f"device {device!r}; accepted: auto, cpu, cuda, cuda:N")


def _idmap2_over(inner: Any, ids: np.ndarray) -> Any:
    """An ``IndexIDMap2`` over an already filled index (faiss's constructor insists on an empty one)."""
    faiss = faiss_module()
    m = faiss.IndexIDMap2(faiss.IndexFlat(inner.d, inner.metric_type))  # empty placeholder, swapped out
    m.own_fields = False
    m.index = inner
    m.ntotal, m.is_trained = inner.ntotal, inner.is_trained
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, np.int64), m.id_map)
    m.construct_rev_map()
    m.referenced_objects.append(inner)
    return m


class FaissSearcher(Searcher):
    """FAISS ``IndexIDMap2`` searcher; exact for ``index_type="Flat"``.

    Args:
        dim, metric: see :class:`Searcher`.
        index_type: a ``faiss.index_factory`` string, e.g. ``"Flat"`` (exact), ``"IVF1024,Flat"``,
            ``"HNSW32"``, ``"IVF4096,PQ32"``. Non-flat types are trained on the first ``add``.
        device: ``"auto"`` (GPU when FAISS sees one), ``"cpu"``, ``"cuda"``/``"cuda:N"``.
        params: search-time parameters for approximate types, e.g. ``"nprobe=32"`` or ``"efSearch=128"``.
        fp16: store vectors in float16 on the GPU (FAISS ``useFloat16``); halves memory, not exact.
    """

    def __init__(self, dim: int, metric: str = "ip", *, index_type: str = "Flat", device: str | None = "auto",
                 params: str | None = None, fp16: bool = False):
        super().__init__(dim, metric)
        faiss = faiss_module()
        self.index_type = index_type
        self._faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        try:
            inner = faiss.index_factory(self.dim, index_type, self._faiss_metric)
        except RuntimeError as e:
            raise InvalidInputError(
                f"index_type {index_type!r} is not a valid faiss index_factory string; accepted e.g. "
                f"'Flat', 'IVF1024,Flat', 'HNSW32', 'IVF4096,PQ32' ({str(e).splitlines()[-1][-120:]})") from e
        # faiss objects that own the indexes we point into; dropping them would free those indexes
        self._keep: list[Any] = [inner]
        if isinstance(inner, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            inner = faiss.downcast_index(inner.index)  # we add our own IDMap2 below
        # Exact when every stored vector is scored in full precision by the index's own search.
        self.exact = isinstance(inner, faiss.IndexFlat) and not fp16
        self.on_gpu, self.gpu_id = _want_gpu(device)
        self._res = None
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()
            co = faiss.GpuClonerOptions()
            co.useFloat16 = bool(fp16)
            try:
                inner = faiss.index_cpu_to_gpu(self._res, self.gpu_id, inner, co)
            except RuntimeError as e:  # e.g. HNSW has no GPU implementation
                log.warning("faiss index %r cannot run on the GPU (%s); keeping it on the CPU", index_type, e)
                self.on_gpu, self._res = False, None
            else:
                self.max_k = FAISS_GPU_MAX_K
        self._inner = inner
        self._index = faiss.IndexIDMap2(inner)
        self._ids = np.zeros(0, np.int64)
        self._swig_ptr = faiss.swig_ptr  # per search: an attribute read, not the cached faiss_module() call
        self.params = params
        if params:
            self._set_params(params)

    # -- construction from / export to a persisted faiss index ------------------------------------
    @classmethod
    def from_faiss_index(cls, index: Any, *, device: str | None = "auto", params: str | None = None) -> FaissSearcher:
        """Wrap an index read with ``faiss.read_index`` (IDMap/IDMap2 keeps its ids; a bare index
        gets ids 0..n-1). The whole index is cloned to the GPU when ``device`` asks for it."""
        faiss = faiss_module()
        # a new proxy does not own the C++ object: ``index`` must stay referenced (self._keep)
        idx = faiss.downcast_index(index)
        if isinstance(idx, faiss.IndexIDMap2):
            m = idx
        elif isinstance(idx, faiss.IndexIDMap):
            m = _idmap2_over(faiss.downcast_index(idx.index), faiss.vector_to_array(idx.id_map))
        else:
            m = _idmap2_over(idx, np.arange(idx.ntotal, dtype=np.int64))
        inner = faiss.downcast_index(m.index)
        if inner.metric_type == faiss.METRIC_INNER_PRODUCT:
            metric = "ip"
        elif inner.metric_type == faiss.METRIC_L2:
            metric = "l2"
        else:
            raise IncompatibleError(f"faiss metric_type {inner.metric_type}; accepted: inner product, L2")
        self = cls.__new__(cls)
        Searcher.__init__(self, inner.d, metric)
        self._keep = [index, idx, m, inner]  # they own the C++ objects we point into
        self.index_type, self._faiss_metric, self.params = "(loaded)", inner.metric_type, params
        self.exact = isinstance(inner, faiss.IndexFlat)
        self.on_gpu, self.gpu_id = _want_gpu(device)
        self._res = None
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()
            try:
                m = faiss.downcast_index(faiss.index_cpu_to_gpu(self._res, self.gpu_id, m))
                self.max_k = FAISS_GPU_MAX_K
            except RuntimeError as e:
                log.warning("loaded faiss index cannot run on the GPU (%s); keeping it on the CPU", e)
                self.on_gpu, self._res = False, None
        self._index, self._inner = m, faiss.downcast_index(m.index)
        self._ids = faiss.vector_to_array(m.id_map).astype(np.int64)
        self._swig_ptr = faiss.swig_ptr
        if params:
            self._set_params(params)
        return self

    def faiss_index_cpu(self) -> Any:
        """A CPU ``IndexIDMap2`` holding the same vectors and ids, ready for ``faiss.write_index``."""
        if not self.on_gpu:
            return self._index
        return faiss_module().index_gpu_to_cpu(self._index)

    def _set_params(self, params: str) -> None:
        params = split_rerank(params)[0]  # rerank=N is the reader's exact re-scoring, not FAISS's
        if not params:
            return
        faiss = faiss_module()
        ps = faiss.GpuParameterSpace() if self.on_gpu else faiss.ParameterSpace()
        try:
            ps.set_index_parameters(self._index, params)
        except RuntimeError as e:
            raise InvalidInputError(
                f"search params {params!r} do not apply to index_type {self.index_type!r}; accepted e.g. "
                "'nprobe=32' (IVF), 'efSearch=128' (HNSW)") from e

    # -- Searcher contract -------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, xb: np.ndarray, ids: np.ndarray) -> None:
        xb = self._check(xb, "xb")
        ids = self._check_ids(ids, len(xb))
        if len(xb) == 0:
            return
        if not self._index.is_trained:
            try:
                self._index.train(xb)
            except RuntimeError as e:
                raise InvalidInputError(
                    f"index_type {self.index_type!r} could not be trained on the first {len(xb)} vectors "
                    f"({str(e).splitlines()[-1][-160:]}); add more vectors at once or use 'Flat'") from e
        self._index.add_with_ids(xb, ids)
        self._ids = np.concatenate([self._ids, ids])

    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        k = self._check_k(k)
        if self.max_k is not None and k > self.max_k:
            return self._exact_topk(xq, k)
        D, I = self._index.search(xq, k)
        return self._to_similarity(D, I)

    def search_checked(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for a caller that has already checked its input: ``xq`` (n, dim) C-contiguous
        finite float32, ``k`` an int >= 1 (``OpenIndex.search`` does). Same results as ``search``.

        Skips the re-validation here and in faiss's Python wrapper (``search`` -> ``search_c``):
        for one query those numpy calls cost ~5-10% of a 50k-vector Flat scan.
        """
        D, I = self.search_unpadded(xq, k)
        np.putmask(D, I < 0, -np.inf)
        return D, I

    def search_unpadded(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_checked` without setting the scores of -1 ids to -inf: there they are whatever
        FAISS wrote, for a caller that ends each ranking at its first -1 (the query engine)."""
        if self.max_k is not None and k > self.max_k:
            return self._exact_topk(xq, k)
        n = len(xq)
        D, I = np.empty((n, k), np.float32), np.empty((n, k), np.int64)
        ptr = self._swig_ptr
        self._index.search_c(n, ptr(xq), k, ptr(D), ptr(I), None)
        if self.metric == "l2":
            np.negative(D, out=D)
        return D, I

    def rank_all(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact (nq, ntotal) ranking; chunked exact scoring whenever the index's own search is
        capped (GPU) or approximate."""
        xq = self._check(xq, "xq")
        if self.ntotal == 0:
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        if self.exact and self.max_k is None:
            D, I = self._index.search(xq, self.ntotal)
            return self._to_similarity(D, I)
        return self._exact_topk(xq, self.ntotal)

    # -- helpers -----------------------------------------------------------------------------------
    def _to_similarity(self, D: np.ndarray, I: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FAISS output -> (similarity descending, ids); ``D`` is FAISS's fresh array: changed in place."""
        D = np.asarray(D, np.float32)
        if self.metric == "l2":
            np.negative(D, out=D)
        np.putmask(D, I < 0, -np.inf)
        return D, np.asarray(I, np.int64)

    def _chunks(self, nq: int):
        """Yield (start, (rows, d) float32 vectors) over the stored vectors in insertion order."""
        n = self.ntotal
        rows = max(1024, _CHUNK_BYTES // (4 * max(self.dim, nq, 1)))
        for i0 in range(0, n, rows):
            yield i0, np.asarray(self._inner.reconstruct_n(i0, min(rows, n - i0)), np.float32)

    def _chunk_scores(self, xq: np.ndarray, xb: np.ndarray) -> np.ndarray:
        s = xq @ xb.T
        if self.metric == "l2":
            # same expansion as exact_scores; float32 like FAISS itself
            s = 2 * s - np.square(xb).sum(1)[None, :] - np.square(xq).sum(1)[:, None]
        return s

    def _exact_topk(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (k may exceed max_k or equal ntotal) by scoring every stored vector.

        Approximate indexes score their reconstructed vectors: exact for Flat/IVF-Flat/HNSW-Flat
        storage, and exact over the decoded codes for lossy storage (PQ, SQ, fp16).
        """
        nq, n = len(xq), self.ntotal
        kk = min(k, n)
        D = np.full((nq, k), -np.inf, np.float32)
        I = np.full((nq, k), -1, np.int64)
        if kk == n:  # full ranking: fill one (nq, n) matrix and sort once
            S = np.empty((nq, n), np.float32)
            for i0, xb in self._chunks(nq):
                S[:, i0:i0 + len(xb)] = self._chunk_scores(xq, xb)
            order = np.argsort(-S, axis=1, kind="stable")  # ties: insertion order
            D[:, :n], I[:, :n] = np.take_along_axis(S, order, 1), self._ids[order]
            return D, I
        best_s = np.full((nq, 0), -np.inf, np.float32)
        best_p = np.zeros((nq, 0), np.int64)
        for i0, xb in self._chunks(nq):
            s = self._chunk_scores(xq, xb).astype(np.float32, copy=False)
            p = np.broadcast_to(np.arange(i0, i0 + len(xb), dtype=np.int64), s.shape)
            cs, cp = np.concatenate([best_s, s], 1), np.concatenate([best_p, p], 1)
            if cs.shape[1] > kk:
                part = np.argpartition(-cs, kk - 1, axis=1)[:, :kk]
                cs, cp = np.take_along_axis(cs, part, 1), np.take_along_axis(cp, part, 1)
            best_s, best_p = cs, cp
        # order by score desc, then insertion position (deterministic ties)
        order = np.lexsort((best_p, -best_s), axis=-1)
        best_s, best_p = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_p, order, 1)
        D[:, :kk], I[:, :kk] = best_s, self._ids[best_p]
        return D, I
