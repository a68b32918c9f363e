"""Reading an index: ``open_index(name) -> OpenIndex`` (search, records, model), used by query/ and demo/."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import select

from ..errors import ConsistencyError, DataNotFoundError, InvalidInputError
from .catalog import Catalog, ImageRow, entries_table
from .layout import (FEATURES_DIR, WriteLock, catalog_url, index_file_name, index_folder, load_index_model,
                     require_index)
from .searchers.faiss_files import apply_search_params, default_search_params, index_ids, read_index, split_rerank
from .searchers.faiss_searcher import FaissSearcher
from .space import to_index_space
from .store import FeatureStore
from .sync import faiss_is_current

# What a query needs is imported above; the rest where it is used, so that a text query process loads
# neither torch nor the ingestion pipeline: the writer (repairing a FAISS file a crash left behind; it
# never imports the reader), the exact-ranking searchers (k=None), the model card (an index with a model).
if TYPE_CHECKING:
    from ..scoring import Searcher


@dataclass(frozen=True)
class ImageRecord:
    """One catalog image. ``path`` is a file path, or ``<dataset>/<split>/<row>`` for benchmark features."""

    id: int
    path: str
    label: str | None
    status: str
    sha256: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class IndexManifest:
    """What an index holds and how it searches (a snapshot of the catalog's manifest row)."""

    name: str
    folder: Path
    db_url: str
    source: str                     # "images", or "dataset:<name>/<split>"
    backbone: str | None
    backbone_weights: str | None
    feature_dim: int                # raw feature dimension in the store
    dim: int                        # dimension of the indexed vectors (= query vectors)
    metric: str                     # "ip" (vectors L2-normalised) or "l2" (scores = -squared distance)
    index_type: str                 # FAISS factory string (always wrapped in IDMap2)
    search_params: str | None
    model_checkpoint: str | None    # path the model was given as; a copy lives in the folder
    model_sha256: str | None
    model_card: object | None       # models.checkpoint.ModelCard, or None for raw features
    model_card_json: str | None
    n_images: int
    n_ok: int
    n_failed: int
    n_removed: int
    n_entries: int
    index_file: str
    created: _dt.datetime
    updated: _dt.datetime


class OpenIndex:
    """A searchable index. ``search`` returns catalog image ids; ``k=None`` is the exact full ranking."""

    def __init__(self, folder: Path, name: str | None = None, db: str | None = None, *, repair: bool = True):
        self.folder, self.name = Path(folder), name or Path(folder).name
        require_index(self.folder, self.name)
        if repair:
            self._repair_if_needed(db)
        self.catalog = Catalog(catalog_url(self.folder, db), create=False)
        self._load(db)
        self._model = None
        self._terms: tuple | None = None         # (CorrectionTerms | None,) once loaded
        self._general_terms: tuple | None = None  # (general model key, CorrectionTerms | None) once loaded
        self._exact: Searcher | None = None      # exact full ranking over the stored features (k=None)
        self._knn: FaissSearcher | None = None   # the FAISS file, on a GPU when FAISS sees one (k-NN)
        self._rerank = 0                          # rerank=N of the search params, read with _knn

    # ------------------------------------------------------------------ loading
    def _repair_if_needed(self, db: str | None) -> None:
        """Re-sync the FAISS file with the catalog when a crash left it behind (if no writer is active)."""
        cat = Catalog(catalog_url(self.folder, db), create=False)
        try:
            with cat.session() as s:
                m = cat.manifest(s)
                if m is None:
                    raise DataNotFoundError(f"index {self.name!r} has no manifest (interrupted before its first "
                                            f"commit?); re-run `zslr index ... --name {self.name}`")
                path = self.folder / index_file_name(m)
                fids = np.asarray(entries_table(s)[0], np.int64)
        finally:
            cat.close()
        if faiss_is_current(path, fids):
            return
        probe = WriteLock(self.folder)
        if not probe.acquire(blocking=False):
            return  # a writer is running and will sync the index itself
        probe.release()
        from .writer import IndexWriter
        with IndexWriter(self.folder, self.name, db, create=False) as w:
            w.sync_index()

    def _load(self, db: str | None) -> None:
        m = self.catalog.manifest()
        if m is None:
            raise DataNotFoundError(f"index {self.name!r} has no manifest; re-run `zslr index ... --name {self.name}`")
        index_file = index_file_name(m)
        self.manifest = IndexManifest(
            name=self.name, folder=self.folder, db_url=self.catalog.url, source=m.source, backbone=m.backbone,
            backbone_weights=m.backbone_weights, feature_dim=m.feature_dim, dim=m.dim, metric=m.metric,
            index_type=m.index_type, search_params=m.search_params, model_checkpoint=m.model_checkpoint,
            model_sha256=m.model_sha256, model_card=_model_card(m.model_card) if m.model_card else None,
            model_card_json=m.model_card, n_images=m.n_images, n_ok=m.n_ok, n_failed=m.n_failed,
            n_removed=m.n_removed, n_entries=m.n_entries, index_file=index_file, created=m.created, updated=m.updated)
        self._row = m
        path = self.folder / index_file
        if not path.is_file():
            raise DataNotFoundError(f"index file missing: {path}; rebuild it with `zslr index --name {self.name} --rebuild`")
        try:
            self.index = read_index(path, mmap=True)   # a reader never adds to its index
        except RuntimeError as e:   # FAISS's own message: which read failed, at which offset
            why = str(e).splitlines()[-1].split("Error: ")[-1][:200]
            raise ConsistencyError(f"index file {path} is unreadable ({why}); "
                                   f"`zslr check --name {self.name} --repair` rebuilds it from the feature store") from None
        self._ntotal = int(self.index.ntotal)  # the reader never adds to its snapshot: read once, not per search
        apply_search_params(self.index, m.search_params)
        with self.catalog.session() as s:
            fids, img, shard_ids, rows = (np.asarray(a, np.int64) for a in entries_table(s))
        self._fids, self._img, self._shards, self._rows = fids, img, shard_ids, rows
        # sized to every id the FAISS file can return, so that search_unchecked indexes it without clipping
        file_ids = index_ids(self.index)
        self._lut = _id_lookup_table(fids, img, int(file_ids.max()) if len(file_ids) else -1)

    @property
    def ntotal(self) -> int:
        return self._ntotal

    def in_sync(self) -> bool:
        """True when the loaded FAISS index holds exactly the catalog entries loaded with it.

        False while a writer is between its catalog commit and its FAISS sync (or after a crash
        there, when opened with ``repair=False``): searches then miss new entries or hit stale ones.
        """
        have = index_ids(self.index)
        return len(have) == len(self._fids) and bool(np.array_equal(np.sort(have), self._fids))

    def close(self) -> None:
        self.catalog.close()
        self._exact = self._knn = None

    def __enter__(self) -> "OpenIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"OpenIndex({self.name!r}, n={self.ntotal}, dim={m.dim}, metric={m.metric!r}, type={m.index_type!r})"

    # ------------------------------------------------------------------ search
    def _to_image_ids(self, fid: np.ndarray) -> np.ndarray:
        if self._lut is not None:
            # -1 padding and ids the catalog no longer lists (a writer removed them after the FAISS
            # file was read) land on the table's trailing -1
            return self._lut[np.minimum(fid, len(self._lut) - 1)]
        pos = np.clip(np.searchsorted(self._fids, fid), 0, max(len(self._fids) - 1, 0))
        ok = (fid >= 0) & (len(self._fids) > 0)
        if len(self._fids):
            ok &= self._fids[pos] == fid
        return np.where(ok, self._img[pos] if len(self._img) else -1, -1).astype(np.int64)

    def _check_queries(self, xq: np.ndarray) -> np.ndarray:
        """(nq, dim) C-contiguous float32 finite queries, or InvalidInputError naming what is wrong."""
        # attribute checks first: the engine's queries pass them and skip every conversion
        if not (type(xq) is np.ndarray and xq.dtype is _F32 and xq.ndim == 2 and xq.flags.c_contiguous):
            xq = np.asarray(xq, dtype=np.float32)
            if xq.ndim == 1:
                xq = xq[None, :]
            xq = np.ascontiguousarray(xq)
        if xq.ndim != 2 or xq.shape[1] != self.manifest.dim:
            raise InvalidInputError(f"query shape {xq.shape}; index {self.name!r} expects (nq, {self.manifest.dim}) "
                                    f"vectors in its {'model embedding' if self.manifest.model_sha256 else 'raw feature'} space")
        if not _all(np.isfinite(xq), axis=None):
            raise InvalidInputError(f"query vectors contain NaN or inf; index {self.name!r} ranks finite vectors only")
        return xq

    def search(self, xq: np.ndarray, k: int | None = 10) -> tuple[np.ndarray, np.ndarray]:
        """(nq, dim) float32 queries -> D (nq, k) scores descending, I (nq, k) catalog image ids (-1 pads).

        Scores: inner product for "ip" (cosine when the queries are L2-normalised), negative
        squared distance for "l2". ``k=None``: exact ranking of every entry, computed from the
        stored features (no FAISS k cap, exact even for approximate index types).
        """
        xq = self._check_queries(xq)
        if k is None:
            return self._search_exact(xq)
        if int(k) < 1:
            raise InvalidInputError(f"k={k}; expected a positive number of results or None for the full ranking")
        k = int(k)
        if self.ntotal == 0:
            return np.full((len(xq), k), -np.inf, np.float32), np.full((len(xq), k), -1, np.int64)
        if self._knn is None:
            # one FAISS wrapper for every search: GPU copy when FAISS sees a GPU, and an exact
            # chunked path past the GPU's k limit (FaissSearcher.max_k)
            params = self.manifest.search_params
            self._knn = FaissSearcher.from_faiss_index(
                self.index, device="auto", params=default_search_params(self.index) if params is None else params)
            self._rerank = split_rerank(params)[1]
        rerank = self._rerank
        if rerank:
            # approximate codes (PQ) only shortlist: re-score max(k, rerank) candidates exactly from
            # the stored features, so the scores and order returned are exact ones
            D, fid = self._knn.search_checked(xq, max(k, rerank))
            from .autotune import rerank as _rerank
            D, fid = _rerank(D, fid, xq, self._exact_scores, k)
        else:
            D, fid = self._knn.search_checked(xq, k)
        return D, self._to_image_ids(fid)

    def search_unchecked(self, xq: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for queries known to be (nq, dim) C-contiguous finite float32 (the query
        engine's own unit vectors), without checking them again; scores where the id is -1 are left
        as FAISS wrote them instead of -inf (the engine ends each ranking at its first -1).

        One query's checks and padding fix are a quarter of the engine's own work around a 50k-vector scan.
        """
        if self._knn is None or self._rerank or self._lut is None or k is None or type(k) is not int or k < 1:
            return self.search(xq, k)  # first search (sets up _knn), re-ranking, or an odd k: the full path
        D, fid = self._knn.search_unpadded(xq, k)
        return D, self._lut[fid]  # -1 lands on the table's trailing -1

    def _exact_scores(self, xq: np.ndarray, fid: np.ndarray) -> np.ndarray:
        """(nq, dim) queries x (nq, c) faiss ids -> (nq, c) exact scores from the stored features (-inf for -1)."""
        uniq = np.unique(fid[fid >= 0])
        pos = np.searchsorted(self._fids, uniq)
        raw = FeatureStore(self.folder / FEATURES_DIR).gather(self._shards[pos], self._rows[pos],
                                                              self.manifest.feature_dim)
        v = to_index_space(raw, self.model()[0] if self._row.model_sha256 else None, self.manifest.metric)
        at = np.searchsorted(uniq, np.maximum(fid, 0)).clip(0, max(len(uniq) - 1, 0))
        cand = v[at]                                                    # (nq, c, dim)
        if self.manifest.metric == "ip":
            s = np.einsum("qd,qcd->qc", xq, cand)
        else:
            s = -np.square(cand - xq[:, None, :]).sum(-1)
        return np.where(fid < 0, -np.inf, s).astype(np.float32)

    def raw_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry's stored backbone features: image ids (n,) int64, features (n, feature_dim) float32."""
        store = FeatureStore(self.folder / FEATURES_DIR)
        return self._img.copy(), store.gather(self._shards, self._rows, self.manifest.feature_dim)

    def entry_vectors(self, positions) -> np.ndarray:
        """Vectors (m, dim) float32 in index space of the entries at ``positions`` (into :meth:`entry_ids`'s
        order), read from the feature store: only those rows, so a few or a block of a million."""
        pos = np.asarray(positions, np.int64)
        raw = FeatureStore(self.folder / FEATURES_DIR).gather(self._shards[pos], self._rows[pos],
                                                              self.manifest.feature_dim)
        return to_index_space(raw, self.model()[0] if self._row.model_sha256 else None, self.manifest.metric)

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry in index space: image ids (n,) int64 and vectors (n, dim) float32."""
        ids, raw = self.raw_features()
        model = load_index_model(self.folder, self._row)[0] if self._row.model_sha256 else None
        return ids, to_index_space(raw, model, self.manifest.metric)

    def _search_exact(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._exact is None:
            from .searchers import make_searcher
            ids, x = self.vectors()
            searcher = make_searcher("auto", self.manifest.dim, self.manifest.metric)
            if len(ids):
                searcher.add(x, ids)
            self._exact = searcher
        if self._exact.ntotal == 0:
            return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
        D, I = self._exact.rank_all(xq)
        return np.asarray(D, np.float32), np.asarray(I, np.int64)

    # ------------------------------------------------------------------ catalog
    def records(self, ids) -> list[ImageRecord]:
        """Catalog records for image ids, in the given order (-1 padding is skipped)."""
        want = [int(i) for i in np.asarray(ids, dtype=np.int64).ravel() if i >= 0]
        found: dict[int, ImageRow] = {}
        uniq = sorted(set(want))
        with self.catalog.session() as s:
            for i in range(0, len(uniq), 500):
                for r in s.scalars(select(ImageRow).where(ImageRow.id.in_(uniq[i:i + 500]))):
                    found[r.id] = r
        missing = [i for i in uniq if i not in found]
        if missing:
            raise InvalidInputError(f"image id(s) {missing[:5]} not in the catalog of index {self.name!r}")
        return [ImageRecord(r.id, r.path, r.label, r.status, r.sha256, r.error) for r in (found[i] for i in want)]

    def all_records(self, status: str | None = "ok") -> list[ImageRecord]:
        """Every catalog image (with ``status``; None = all), by id."""
        with self.catalog.session() as s:
            q = select(ImageRow).order_by(ImageRow.id)
            if status is not None:
                q = q.where(ImageRow.status == status)
            return [ImageRecord(r.id, r.path, r.label, r.status, r.sha256, r.error) for r in s.scalars(q)]

    def record_tuples(self, status: str | None = "ok") -> list[tuple[int, str, str | None, str]]:
        """(id, path, label, status) of every catalog image (with ``status``; None = all), by id.

        :meth:`all_records` without ORM objects: one Core select, rows as plain tuples (a
        million rows in seconds, where building ORM objects takes a minute).
        """
        q = select(ImageRow.id, ImageRow.path, ImageRow.label, ImageRow.status).order_by(ImageRow.id)
        if status is not None:
            q = q.where(ImageRow.status == status)
        shared: dict = {}   # one string object per distinct label and status (a class has many images)
        with self.catalog.session() as s:
            return [(i, path, shared.setdefault(label, label), shared.setdefault(st, st))
                    for i, path, label, st in s.execute(q)]

    def entry_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """Catalog entry ids (n,) ascending and the image id of each (n,)."""
        return self._fids.copy(), self._img.copy()

    def correction_terms(self):
        """Per-image score-correction terms (``correction.terms.CorrectionTerms``) of the model's correction, or None."""
        if self._terms is None:
            from .terms_file import index_terms
            self._terms = (index_terms(self),)
        return self._terms[0]

    def general_terms(self, general):
        """Per-image terms of the general model's hubness correction on this raw-feature index, or None."""
        key = ("general", general.fingerprint)
        if self._general_terms is None or self._general_terms[0] != key:
            from .terms_file import index_general_terms
            self._general_terms = (key, index_general_terms(self, general))
        return self._general_terms[1]

    def model(self):
        """(ZslModel, ModelCard, class_semantics) of the index's embedding model, or None (raw features)."""
        if not self._row.model_sha256:
            return None
        if self._model is None:
            self._model = load_index_model(self.folder, self._row)
        return self._model


def _model_card(text: str):
    """The manifest's model card (``models.checkpoint.ModelCard``; torch comes with it: the index has a model)."""
    from ..models.checkpoint import ModelCard
    return ModelCard.from_json(text)


_F32 = np.dtype(np.float32)
_all = np.logical_and.reduce  # ndarray.all() without its Python-level wrapper (numpy/_core/_methods.py)


def _id_lookup_table(fids: np.ndarray, img: np.ndarray, top: int = -1) -> np.ndarray | None:
    """faiss id -> image id as one array (-1 where none, and at position -1 for FAISS's padding), when
    the faiss ids are dense enough for it (they are allocated in sequence); else None (searchsorted).

    ``top``: the largest id the FAISS file holds (it may hold ids the catalog no longer lists); the
    table covers it, so every id a search returns indexes it directly.
    """
    if not len(fids) or fids[0] < 0:
        return None
    top = max(int(fids[-1]), top)
    if top >= 2 * len(fids) + 4096:
        return None
    lut = np.full(top + 2, -1, np.int64)  # the last slot stays -1
    lut[fids] = img
    return lut


def open_index(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None, *, db: str | None = None,
               repair: bool = True) -> OpenIndex:
    """Open an index by name (under ``root`` / $ZSLR_INDEXES / ./indexes) or folder path.

    A FAISS file left behind by a crash is brought up to date from the feature store first, unless
    ``repair=False`` (read-only users such as ``zslr serve``, which must never write the index).
    Missing index -> DataNotFoundError naming the folder and how to create it.
    """
    folder = index_folder(name_or_path, root)
    if not folder.is_dir():
        raise DataNotFoundError(f"index {str(name_or_path)!r} not found: {folder.absolute()} does not exist; "
                                f"create it with `zslr index DIR --name {folder.name}` or `zslr index --dataset D --name {folder.name}`")
    return OpenIndex(folder, folder.name, db, repair=repair)
