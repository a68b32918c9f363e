"""Per-image score-correction terms: what a correction needs of each image, computed once.

The index's model card names a :class:`~zslretrieval.correction.ScoreCorrection` chosen on
validation classes (``card.selection["retrieval_correction"]``, :func:`card_correction`). Its
per-image terms ``scale(x), offset(x)`` depend only on image x's scores against the model's classes
(its seen classes; for ``posterior`` also the unseen classes its card names:
:func:`reference_class_embeddings`), so they are computed when vectors enter an index
(:func:`compute_terms`) and stored beside its FAISS file (``index/terms_file.py``);
``correction/search.py`` then corrects any query without an extra pass over the collection.

An index of raw backbone features (no model) is queried through the general model
(``text/general``); its terms come the same way from each image's scores against the general
model's reference queries (the projected ImageNet names, :func:`general_reference`) with the
correction chosen on held-out ImageNet classes. Models, cards and general models are used through
their attributes only (``embed_classes``, ``seen_classes``, ``reference``...): nothing here imports them.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..scoring import exact_scores
from .scores import ScoreCorrection

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


def general_reference(general, metric: str) -> np.ndarray:
    """(1000, D) float32 reference queries of a general model in index space (unit rows: its queries are)."""
    ref = np.asarray(general.reference, np.float32)
    if metric == "ip":
        ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(ref, np.float32)


def compute_terms(vectors: np.ndarray, ref: np.ndarray, metric: str, correction: ScoreCorrection) -> tuple[np.ndarray, np.ndarray]:
    """scale, offset (n,) of index-space vectors (n, E) against reference-class embeddings ref (C, E)."""
    parts = [correction.terms(exact_scores(vectors[i:i + TERMS_BATCH], ref, metric))
             for i in range(0, len(vectors), TERMS_BATCH)]
    if not parts:
        return np.ones(0), np.zeros(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
