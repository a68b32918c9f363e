"""Every entry of an index in its search space, for the searches that score a chosen set.

Relevance feedback needs the marked images' vectors, a filtered search scores exactly the
allowed images, and the relevance scale needs the collection's score moments: all read the
index-space vectors (``index.space.to_index_space`` of the stored features, the same vectors the
FAISS file holds) through one :class:`Gallery`, built on first use and kept per open index.

Memory rule: a gallery keeps its vectors in memory (read on first use by feedback or a filter)
only up to :data:`IN_MEMORY_BYTES` (50k x 1280 float32); a bigger one keeps just its ids and reads
vectors from the index's feature store when asked (``take``: a few rows; ``blocks``: :data:`BLOCK` rows at a time), so that a server of
a million images does not hold a second copy of every vector beside the FAISS file. Both paths
give the same vectors (tested by forcing the limit down).
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import InvalidInputError
from .protocols import SearchableIndex

IN_MEMORY_BYTES = 256 << 20     # vectors kept in memory up to this size (50k x 1280 float32)
BLOCK = 8_192                   # rows per block when streamed from the feature store (40 MB at 1280-d)
MOMENT_SAMPLE = 8_192           # rows the relevance scale's moments are estimated on past this size

# id(index) -> (weak reference to it, its gallery): by identity, so unhashable index objects work too;
# an entry goes when its index is collected
_CACHE: dict[int, tuple[weakref.ref, "Gallery"]] = {}
_LOCK = threading.Lock()


class Gallery:
    """Image ids (n,) ascending, their vectors (n, E) float32 in index space, and the metric.

    ``read(rows)`` -> (len(rows), E) float32 vectors of gallery rows ``rows`` (positions in ``ids``).
    """

    def __init__(self, ids: np.ndarray, metric: str, dim: int, read: Callable[[np.ndarray], np.ndarray], *,
                 in_memory_bytes: int | None = None):
        self.ids = np.asarray(ids, np.int64)
        if len(self.ids) > 1 and not bool(np.all(np.diff(self.ids) > 0)):
            raise ValueError("gallery ids must be ascending and unique")
        self.metric, self.dim = metric, int(dim)
        self._read = read
        self._vectors: np.ndarray | None = None   # read on the first take/blocks, when in_memory
        self._reading = threading.Lock()
        self._keep = len(self.ids) * self.dim * 4 <= (IN_MEMORY_BYTES if in_memory_bytes is None else in_memory_bytes)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def in_memory(self) -> bool:
        """Whether the vectors are kept in memory once read (small galleries), rather than read per use."""
        return self._keep

    def _checked(self, rows: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(self._read(rows), np.float32)
        if x.shape != (len(rows), self.dim):
            raise ValueError(f"gallery read {x.shape}; expected ({len(rows)}, {self.dim})")
        return x

    @property
    def vectors(self) -> np.ndarray:
        """All vectors (n, E): the in-memory copy, or every row read now (a big gallery: prefer :meth:`blocks`)."""
        return self.take(np.arange(len(self.ids)))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Vectors (m, E) float32 of gallery rows ``rows``."""
        rows = np.asarray(rows, np.int64)
        if self._keep:
            if self._vectors is None:
                with self._reading:   # two server threads asking at once read it once
                    if self._vectors is None:
                        self._vectors = self._checked(np.arange(len(self.ids)))
            return self._vectors[rows]
        return self._checked(rows) if len(rows) else np.zeros((0, self.dim), np.float32)

    def peek(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of ``rows`` without loading the gallery into memory for them (the kept copy when there
        is one, else just those rows read)."""
        rows = np.asarray(rows, np.int64)
        if self._vectors is not None:
            return self._vectors[rows]
        return self._checked(rows) if len(rows) else np.zeros((0, self.dim), np.float32)

    def blocks(self, rows: np.ndarray | None = None, size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows of the block, their vectors) for ``rows`` (default all), ``size`` (:data:`BLOCK`) rows at a
        time, in order."""
        rows = np.arange(len(self.ids)) if rows is None else np.asarray(rows, np.int64)
        size = BLOCK if size is None else int(size)
        for i in range(0, len(rows), size):
            r = rows[i:i + size]
            yield r, self.take(r)

    def rows(self, ids, what: str = "image id") -> np.ndarray:
        """Positions of catalog image ``ids`` in the gallery; InvalidInputError naming any id it lacks."""
        want = np.asarray(list(ids), np.int64).ravel()
        pos = np.clip(np.searchsorted(self.ids, want), 0, max(len(self.ids) - 1, 0))
        ok = (pos < len(self.ids)) & (self.ids[pos] == want) if len(self.ids) else np.zeros(len(want), bool)
        if not ok.all():
            bad = [int(i) for i in want[~ok][:5]]
            raise InvalidInputError(f"{what}(s) {bad} are not entries of this index; give catalog ids of its "
                                    "results (the 'id' of each hit)")
        return pos

    def sample_rows(self, cap: int | None = None) -> np.ndarray:
        """Every row up to ``cap`` rows, else ``cap`` rows evenly spaced over the ids (a stratified sample:
        ids follow indexing order, so every folder and every batch of the collection is represented)."""
        n, cap = len(self.ids), MOMENT_SAMPLE if cap is None else int(cap)
        if n <= cap:
            return np.arange(n)
        return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))

    def view(self, rows: np.ndarray) -> "RowView":
        """The vectors of ``rows`` as a read-on-slice array (``len``, ``shape``, ``view[i:j]``): a consumer
        working in blocks (``calibration.ScoreMoments``) then holds one block, not every row at once."""
        return RowView(self, np.asarray(rows, np.int64))


class RowView:
    """Rows of a :class:`Gallery`, read when sliced (see :meth:`Gallery.view`)."""

    def __init__(self, gallery: Gallery, rows: np.ndarray):
        self.gallery, self.rows = gallery, rows
        self.shape = (len(rows), gallery.dim)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, part: slice) -> np.ndarray:
        if not isinstance(part, slice):
            raise TypeError("a RowView is read by slices of rows")
        return self.gallery.peek(self.rows[part])


def block_scores(q: np.ndarray, x: np.ndarray, metric: str) -> np.ndarray:
    """(Q, E) float64 queries x (m, E) vectors -> (Q, m) float64 raw scores of ``metric``."""
    x64 = x.astype(np.float64)
    s = q @ x64.T
    if metric == "l2":
        s = 2.0 * s - np.square(x64).sum(1)[None, :] - np.square(q).sum(1)[:, None]
    return s


def gallery_of(index: SearchableIndex, *, in_memory_bytes: int | None = None) -> Gallery:
    """The :class:`Gallery` of ``index``, built once per open index object (thread-safe).

    Reads only the entry table here: vectors come from ``index.entry_vectors`` when asked (all of
    them at the first use when they fit :data:`IN_MEMORY_BYTES`, kept; else the rows asked).
    """
    key = id(index)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0]() is index:
        return hit[1]
    _, image_ids = index.entry_ids()
    order = np.argsort(np.asarray(image_ids, np.int64), kind="stable")   # gallery row -> entry position
    ref = weakref.ref(index)   # not the index itself: the cache must not keep a closed index alive

    def read(rows: np.ndarray) -> np.ndarray:
        ix = ref()
        if ix is None:
            raise RuntimeError("the index of this gallery was closed")
        return ix.entry_vectors(order[rows])

    g = Gallery(np.asarray(image_ids, np.int64)[order], index.manifest.metric, index.manifest.dim, read,
                in_memory_bytes=in_memory_bytes)
    with _LOCK:
        _CACHE[key] = (weakref.ref(index, lambda _r, key=key: _CACHE.pop(key, None)), g)
    return g
