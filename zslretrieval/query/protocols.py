"""What the query path reads from the objects it is given: an open index and a general model.

Typing Protocols, so the engine reads each field directly instead of guessing with defaults.
``index.reader.OpenIndex`` (with its ``IndexManifest`` and ``ImageRecord``) and
``text.general.GeneralModel`` implement them; the test fakes (``tests/query/fakes.py``) too.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class IndexManifestView(Protocol):
    """The manifest fields the engine reads (``index.reader.IndexManifest`` has them)."""

    name: str
    dim: int
    metric: str
    source: str                    # "images", or "dataset:<name>/<split>" (named when fusion is refused)
    backbone: str | None           # None: precomputed features, no backbone to embed query images
    backbone_weights: str | None   # weight id the images were encoded with (None: the backbone's default)


class IndexRecordView(Protocol):
    """A catalog record as the engine reads it (``index.reader.ImageRecord``)."""

    id: int
    path: str
    label: str | None
    status: str


class SearchableIndex(Protocol):
    """What :class:`~zslretrieval.query.engine.QueryEngine` needs from an index: ``index.reader.OpenIndex``.

    ``search`` takes (Q, dim) float32 queries already in index space and returns D, I (Q, k')
    scores descending and catalog ids (-1 pads), ``k=None`` the exact full ranking;
    ``search_unchecked`` the same for queries known to be finite C-contiguous float32 (it may
    leave the scores of -1 ids unset, and may simply be ``search``). ``model()`` is (model,
    card, class_semantics) or None for an index of raw features. ``correction_terms()`` and
    ``general_terms(general)`` are the per-image score-correction terms of the model's and of
    the general model's correction, or None where there are none.
    """

    @property
    def manifest(self) -> IndexManifestView: ...

    @property
    def ntotal(self) -> int: ...

    def model(self) -> tuple[Any, Any, Any] | None: ...

    def search(self, xq: np.ndarray, k: int | None = 10) -> tuple[np.ndarray, np.ndarray]: ...

    def search_unchecked(self, xq: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray]: ...

    def records(self, ids: Sequence[int]) -> Sequence[IndexRecordView]: ...

    def all_records(self, status: str | None = "ok") -> Sequence[IndexRecordView]: ...

    def record_tuples(self, status: str | None = "ok") -> list[tuple[int, str, str | None, str]]: ...

    def raw_features(self) -> tuple[np.ndarray, np.ndarray]: ...

    def entry_ids(self) -> tuple[np.ndarray, np.ndarray]: ...

    def entry_vectors(self, positions: np.ndarray) -> np.ndarray: ...

    def correction_terms(self) -> Any: ...

    def general_terms(self, general: Any) -> Any: ...

    def close(self) -> None: ...


class GeneralModelView(Protocol):
    """What the query path reads from a general model (``text.general.GeneralModel``)."""

    backbone: str
    backbone_weights: str | None
    feature_dim: int
    method: str
    reference: np.ndarray | None   # (C_ref, D) reference vocabulary of its hubness correction

    @property
    def correction(self) -> Any: ...   # a correction.ScoreCorrection (kind "none" when none helped)

    def embed_texts(self, texts: list[str], kind: str = "name") -> np.ndarray: ...

    def prompts(self, texts: list[str], kind: str = "name") -> list[str]: ...

    def glosses(self, texts: list[str], kind: str = "name") -> list[list[str]]: ...

    def anchors(self, texts: list[str], kind: str = "name") -> list[dict]: ...

    def nearest_classes(self, v: np.ndarray, k: int = 3) -> list[tuple[str, float]]: ...
