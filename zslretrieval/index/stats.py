"""Per-image score-correction terms, computed at index time and stored beside the FAISS file.

The index's model card names a :class:`~zslretrieval.correction.ScoreCorrection` chosen on
validation classes (``card.selection["retrieval_correction"]``). Its per-image terms
``scale(x), offset(x)`` depend only on image x's scores against the model's classes (its seen
classes; for ``posterior`` also the unseen classes its card names), so
:func:`sync_terms` computes them when vectors enter the index (only for new entries) and writes
``image-terms-<fp>.npz`` (name from ``layout.terms_file_name``) after the FAISS file: like the
FAISS file it is derived, and a file that does not match the catalog's entries is recomputed.
:func:`search_corrected` then returns the exact top-k under the corrected scores from top-k'
searches under the raw ones: a query needs no extra pass over the collection.

An index of raw backbone features (no model) is queried through the general model
(``text/general.py``); its terms come the same way from each image's scores against the general
model's reference queries (the projected ImageNet names) with the correction chosen on held-out
ImageNet classes, keyed by the general model's fingerprint (``general_key``).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..correction import ScoreCorrection, apply_terms
from .layout import TERMS_GLOB, terms_file_name

TERMS_FORMAT = "zslr-image-terms/1"
TERMS_BATCH = 65536


@dataclasses.dataclass
class CorrectionTerms:
    """Terms of one index: entry ids (n,) int64 ascending, scale/offset (n,) float64."""

    correction: ScoreCorrection
    entry_ids: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    image_ids: np.ndarray | None = None   # (n,) catalog image id of each entry, set by the reader
    _order: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def lookup(self, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """scale, offset of catalog image ids (any shape; -1 padding gets scale 1, offset 0)."""
        ids = np.asarray(image_ids, np.int64)
        if self._order is None:
            self._order = np.argsort(self.image_ids, kind="stable")
        order = self._order
        sorted_ids = self.image_ids[order]
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = (ids >= 0) & (len(sorted_ids) > 0)
        if len(sorted_ids):
            found &= sorted_ids[pos] == ids
        rows = order[pos] if len(order) else np.zeros_like(ids)
        scale = np.where(found, self.scale[rows] if len(rows) else 1.0, 1.0)
        offset = np.where(found, self.offset[rows] if len(rows) else 0.0, 0.0)
        return scale, offset


def card_correction(card) -> ScoreCorrection:
    """The correction a model card records (``selection["retrieval_correction"]``); ``none`` when absent."""
    sel = getattr(card, "selection", None) or {}
    return ScoreCorrection.from_dict(sel.get("retrieval_correction"))


def reference_class_embeddings(model, card, class_semantics, metric: str,
                               correction: ScoreCorrection | None = None) -> np.ndarray:
    """(C_ref, E) float32 query embeddings, in index space, of the classes a correction scores each
    image against: the card's seen classes, then (``posterior``) its unseen classes."""
    import torch

    names = list(card.class_names)
    wanted = list(card.seen_classes)
    if correction is not None and correction.reference == "all":
        wanted += list(card.unseen_classes)
    rows = [names.index(c) for c in wanted if c in names and names.index(c) < len(class_semantics)]
    sem = torch.as_tensor(np.asarray(class_semantics, np.float32)[rows])
    model.eval()
    with torch.no_grad():
        emb = model.embed_classes(sem).float().cpu().numpy()
    if metric == "ip":
        n = np.linalg.norm(emb, axis=1, keepdims=True)
        emb = emb / np.where(n > 0, n, 1.0)
    return np.ascontiguousarray(emb, np.float32)


def general_key(general) -> str:
    """What a raw index's terms file is keyed by: the general model it was computed with."""
    return f"general:{general.fingerprint}"


def general_reference(general, metric: str) -> np.ndarray:
    """(1000, D) float32 reference queries of a general model in index space (unit rows: its queries are)."""
    ref = np.asarray(general.reference, np.float32)
    if metric == "ip":
        ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(ref, np.float32)


def compute_terms(vectors: np.ndarray, ref: np.ndarray, metric: str, correction: ScoreCorrection) -> tuple[np.ndarray, np.ndarray]:
    """scale, offset (n,) of index-space vectors (n, E) against reference-class embeddings ref (C, E)."""
    from .searchers import exact_scores

    parts = [correction.terms(exact_scores(vectors[i:i + TERMS_BATCH], ref, metric))
             for i in range(0, len(vectors), TERMS_BATCH)]
    if not parts:
        return np.ones(0), np.zeros(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _header(correction: ScoreCorrection, model_sha256: str | None) -> str:
    return json.dumps({"format": TERMS_FORMAT, "correction": correction.to_dict(), "model_sha256": model_sha256})


def read_terms(path: Path, correction: ScoreCorrection, model_sha256: str | None) -> CorrectionTerms | None:
    """The terms in ``path`` if it exists, is readable and was made for this correction and model."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["header"]) != _header(correction, model_sha256):
                return None
            return CorrectionTerms(correction, z["entry_ids"].astype(np.int64), z["scale"].astype(np.float64),
                                   z["offset"].astype(np.float64))
    except (OSError, ValueError, KeyError):
        return None


def write_terms(path: Path, terms: CorrectionTerms, model_sha256: str | None) -> None:
    from ..fileio import atomic_write

    def dump(f) -> None:
        np.savez(f, header=np.array(_header(terms.correction, model_sha256)), entry_ids=terms.entry_ids,
                 scale=terms.scale, offset=terms.offset)
    atomic_write(path, dump)


def sync_terms(folder: Path, index_file: str, entry_ids: np.ndarray, vectors_of: Callable[[np.ndarray], np.ndarray],
               card, load_model: Callable[[], tuple] | None, metric: str,
               model_sha256: str | None, general=None) -> CorrectionTerms | None:
    """Bring the terms file of FAISS file ``index_file`` in line with ``entry_ids`` (ascending); others are removed.

    ``vectors_of(positions)`` -> (len(positions), E) index-space vectors of those entries;
    ``card`` the index model's card (None for raw features); ``load_model()`` -> (model, card,
    class_semantics), called only when terms must be computed. Only entries missing from the
    current file are computed. ``general``: for an index without a model, the general model whose
    correction and reference queries give the terms (None: no terms). Returns the terms, or None
    when no active correction applies.
    """
    path = Path(folder) / terms_file_name(index_file)
    if card is not None and load_model is not None:
        correction = card_correction(card)

        def reference() -> np.ndarray:
            return reference_class_embeddings(*load_model(), metric, correction)
    elif general is not None and general.reference is not None:
        correction, model_sha256 = general.correction, general_key(general)

        def reference() -> np.ndarray:
            return general_reference(general, metric)
    else:
        correction = ScoreCorrection()
    for p in Path(folder).glob(TERMS_GLOB):
        if p.name != path.name or not correction.active:
            p.unlink(missing_ok=True)
    if not correction.active:
        return None
    entry_ids = np.asarray(entry_ids, np.int64)
    old = read_terms(path, correction, model_sha256)
    if old is not None and np.array_equal(old.entry_ids, entry_ids):
        return old
    scale, offset = np.ones(len(entry_ids)), np.zeros(len(entry_ids))
    todo = np.arange(len(entry_ids))
    if old is not None and len(old.entry_ids):
        pos = np.clip(np.searchsorted(old.entry_ids, entry_ids), 0, len(old.entry_ids) - 1)
        have = old.entry_ids[pos] == entry_ids
        scale[have], offset[have] = old.scale[pos[have]], old.offset[pos[have]]
        todo = np.flatnonzero(~have)
    if len(todo):
        ref = reference()
        for i in range(0, len(todo), TERMS_BATCH):
            sl = todo[i:i + TERMS_BATCH]
            scale[sl], offset[sl] = compute_terms(vectors_of(sl), ref, metric, correction)
    terms = CorrectionTerms(correction, entry_ids, scale, offset)
    write_terms(path, terms, model_sha256)
    return terms


def index_terms(ix) -> CorrectionTerms | None:
    """The correction terms of an open index (``OpenIndex``): read from its file, or -- when the file
    is missing or behind the catalog (a crash between the FAISS file and it) -- computed in memory."""
    loaded = ix.model()
    if loaded is None:
        return None
    correction = card_correction(loaded[1])
    if not correction.active:
        return None
    return _open_index_terms(ix, correction, ix.manifest.model_sha256,
                             lambda: reference_class_embeddings(*loaded, ix.manifest.metric, correction))


def index_general_terms(ix, general) -> CorrectionTerms | None:
    """The general model's correction terms of an open raw-feature index: read from its file (written
    at index time when the general model was already built), else computed in memory once."""
    correction = general.correction
    if not correction.active or general.reference is None:
        return None
    return _open_index_terms(ix, correction, general_key(general),
                             lambda: general_reference(general, ix.manifest.metric))


def _open_index_terms(ix, correction: ScoreCorrection, key: str | None,
                      reference: Callable[[], np.ndarray]) -> CorrectionTerms:
    """Terms of ``correction`` for an open index: its terms file when it was written for ``key`` and
    holds exactly the catalog's entries, else computed in memory against ``reference()`` (C, E)."""
    m = ix.manifest
    terms = read_terms(Path(ix.folder) / terms_file_name(m.index_file), correction, key)
    entry_ids, image_ids = ix.entry_ids()
    if terms is None or not np.array_equal(terms.entry_ids, entry_ids):
        _, vectors = ix.vectors()
        scale, offset = compute_terms(vectors, reference(), m.metric, correction)
        terms = CorrectionTerms(correction, entry_ids, scale, offset)
    terms.image_ids = image_ids
    return terms


def search_corrected(search: Callable[[np.ndarray, int | None], tuple[np.ndarray, np.ndarray]], xq: np.ndarray,
                     k: int | None, terms: CorrectionTerms, ntotal: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every query under the corrected scores: D (Q, k) float32 descending, I (Q, k) image ids.

    ``search(xq, k')`` is the index's raw search (``k'=None``: exact full ranking). For the
    top-k' raw results of a query, with t the k'-th raw score, no image outside them can score
    more than ``max_x scale(x) * t + offset(x)`` after correction (scale > 0); when the k-th
    corrected score among them reaches that bound the top-k is exact, else k' grows (x4) up to
    the full ranking. Ties keep the raw order.
    """
    xq = np.asarray(xq, np.float32)
    if k is None or ntotal == 0:
        D, I = search(xq, None)
        return _reorder(D, I, terms, D.shape[1])
    k = int(k)
    kk = min(ntotal, max(4 * k, k + 64))
    while True:
        D, I = search(xq, kk)
        if kk >= ntotal:
            return _reorder(D, I, terms, k)
        valid = I >= 0
        complete = valid.sum(axis=1) < kk          # the index returned everything it has
        scale, offset = terms.lookup(I)
        adj = np.where(valid, scale * D + offset, -np.inf)
        kth = -np.sort(-adj, axis=1)[:, k - 1]
        t = D[:, -1].astype(np.float64)
        bound = np.max(terms.scale[None, :] * t[:, None] + terms.offset[None, :], axis=1)
        if np.all(complete | (kth >= bound)):
            return _reorder(D, I, terms, k)
        kk = min(ntotal, kk * 4)
        if kk >= ntotal:
            D, I = search(xq, None)
            return _reorder(D, I, terms, k)


def _reorder(D: np.ndarray, I: np.ndarray, terms: CorrectionTerms, k: int) -> tuple[np.ndarray, np.ndarray]:
    scale, offset = terms.lookup(I)
    adj = np.where(I >= 0, scale * np.asarray(D, np.float64) + offset, -np.inf)
    order = np.argsort(-adj, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(adj, order, axis=1).astype(np.float32),
            np.take_along_axis(np.asarray(I, np.int64), order, axis=1))
