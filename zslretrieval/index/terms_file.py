"""The per-image correction terms file of an index: ``image-terms-<fp>.npz`` beside the FAISS file.

The terms themselves (what they are, how they are computed) are ``correction/terms.py``'s.
:func:`sync_terms` computes them when vectors enter the index (only for new entries) and writes
the file (name from ``layout.terms_file_name``) after the FAISS file: like the FAISS file it is
derived, and a file that does not match the catalog's entries is recomputed. A raw-feature
index's terms come from the general model its writer was handed, keyed by that model's
fingerprint (:func:`general_key`); the reader (:func:`index_terms`, :func:`index_general_terms`)
trusts a file only when its key and entries match, else computes the terms in memory.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..correction import ScoreCorrection
from ..correction.terms import (TERMS_BATCH, CorrectionTerms, card_correction, compute_terms, general_reference,
                                reference_class_embeddings)
from .layout import TERMS_GLOB, terms_file_name

TERMS_FORMAT = "zslr-image-terms/1"


def general_key(general) -> str:
    """What a raw index's terms file is keyed by: the general model it was computed with."""
    return f"general:{general.fingerprint}"


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
               model_sha256: str | None, general=None, keep_general: bool = False) -> CorrectionTerms | None:
    """Bring the terms file of FAISS file ``index_file`` in line with ``entry_ids`` (ascending); others are removed.

    ``vectors_of(positions)`` -> (len(positions), E) index-space vectors of those entries;
    ``card`` the index model's card (None for raw features); ``load_model()`` -> (model, card,
    class_semantics), called only when terms must be computed. Only entries missing from the
    current file are computed. ``general``: for an index without a model, the general model whose
    correction and reference queries give the terms (None: no terms). ``keep_general``: for an index
    without a model, the caller does not know the general model, so the current file is left as it
    is (the reader checks it before use) and only other FAISS files' terms are removed. Returns the
    terms, or None when no active correction applies (or the file was kept).
    """
    path = Path(folder) / terms_file_name(index_file)
    if keep_general and card is None:
        for p in Path(folder).glob(TERMS_GLOB):
            if p.name != path.name:
                p.unlink(missing_ok=True)
        return None
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
    if not correction.active:
        return None
    # general.reference (the 1000 names through the map, seconds to compute) only when the file does
    # not hold this index's terms: a query on an index written with the model reads them and is done
    return _open_index_terms(ix, correction, general_key(general),
                             lambda: None if general.reference is None else general_reference(general, ix.manifest.metric))


def _open_index_terms(ix, correction: ScoreCorrection, key: str | None,
                      reference: Callable[[], np.ndarray | None]) -> CorrectionTerms | None:
    """Terms of ``correction`` for an open index: its terms file when it was written for ``key`` and
    holds exactly the catalog's entries, else computed in memory against ``reference()`` (C, E)."""
    m = ix.manifest
    terms = read_terms(Path(ix.folder) / terms_file_name(m.index_file), correction, key)
    entry_ids, image_ids = ix.entry_ids()
    if terms is None or not np.array_equal(terms.entry_ids, entry_ids):
        ref = reference()
        if ref is None:   # a general model without reference queries: no correction
            return None
        _, vectors = ix.vectors()
        scale, offset = compute_terms(vectors, ref, m.metric, correction)
        terms = CorrectionTerms(correction, entry_ids, scale, offset)
    terms.image_ids = image_ids
    return terms
