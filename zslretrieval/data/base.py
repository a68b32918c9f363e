"""The in-memory form of a zero-shot benchmark, shared by every loader."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidInputError
# re-exported: the data root is resolved below the data layer so that text caches use it too
from ..paths import DEFAULT_DATA_ROOT, resolve_data_root  # noqa: F401

SPLITS = ("trainval", "train", "val", "test_seen", "test_unseen")

@dataclass
class ZslDataset:
    """Image features, class semantics and the proposed splits of one benchmark.

    Shapes: ``features`` (N, D) float32; ``labels`` (N,) int64, 0-based indices into
    ``class_names``; ``attributes`` (C, A) float32, one row per class, normalised as the
    benchmark ships it (xlsa17: L2 per class); ``splits[name]`` 0-based row indices into
    ``features`` for each name in :data:`SPLITS`.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    attributes: np.ndarray
    attribute_names: list[str]
    splits: dict[str, np.ndarray]
    # Other class-level semantic modalities, e.g. {"sent": (C, 1024)} for CUB; DEM can fuse them.
    extra_semantics: dict[str, np.ndarray] = field(default_factory=dict)
    # How ``attributes`` rows were normalised ("l2" for xlsa17) so queries can match it.
    semantic_norm: str = "l2"
    # How raw image features were turned into ``features`` (e.g. "hellinger"); recorded in model cards.
    feature_transform: str = "none"
    # Free-form provenance: paths read, how val was derived, seed, ...
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, c = len(self.features), len(self.class_names)
        if self.labels.shape != (n,):
            raise InvalidInputError(f"{self.name}: labels shape {self.labels.shape} != ({n},)")
        if self.attributes.shape[0] != c:
            raise InvalidInputError(f"{self.name}: {self.attributes.shape[0]} attribute rows for {c} classes")
        if len(self.attribute_names) != self.attributes.shape[1]:
            raise InvalidInputError(
                f"{self.name}: {len(self.attribute_names)} attribute names for {self.attributes.shape[1]} attributes")

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def semantic_dim(self) -> int:
        return int(self.attributes.shape[1])

    def split_classes(self, split: str) -> np.ndarray:
        """Sorted unique class indices present in ``split``."""
        return np.unique(self.labels[self.split_indices(split)])

    def split_indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            raise InvalidInputError(f"{self.name}: unknown split {split!r}; have {sorted(self.splits)}")
        return self.splits[split]

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features[idx], labels[idx])`` of one split: shapes (n, D), (n,)."""
        idx = self.split_indices(split)
        return self.features[idx], self.labels[idx]

    def semantic_matrix(self, modalities: Sequence[str] = ("attributes",)) -> tuple[np.ndarray, list[int]]:
        """Class descriptors: the named modalities side by side -> ((C, sum dims) float32, [dim of each]).

        The one place that says how a model's class semantics are laid out; training
        (``protocol``), evaluation and the engine's benchmark path (``query.benchmark_map``) all use it.
        """
        parts = []
        for m in modalities:
            if m == "attributes":
                parts.append(np.asarray(self.attributes, np.float32))
            elif m in self.extra_semantics:
                parts.append(np.asarray(self.extra_semantics[m], np.float32))
            elif m == "text":
                # Class-name sentence embeddings (384-d, unit rows), computed on first use and
                # cached on disk by content hash (zslretrieval.text); kept for the next call.
                from ..text import encode_vocabulary
                from ..text.names import CLASS_TEMPLATE, class_text
                self.extra_semantics["text"] = encode_vocabulary([class_text(c) for c in self.class_names],
                                                                 template=CLASS_TEMPLATE)
                parts.append(self.extra_semantics["text"])
            elif m == "descriptions":
                # Mean sentence embedding of each class's human descriptions (data.descriptions; the
                # photos' text/ folder), computed on first use; sentence embeddings cached on disk.
                from .descriptions import dataset_descriptions
                self.extra_semantics["descriptions"] = dataset_descriptions(self)
                parts.append(self.extra_semantics["descriptions"])
            else:
                valid = ["attributes", "text", "descriptions", *sorted(self.extra_semantics)]
                raise InvalidInputError(f"{self.name}: unknown semantic modality {m!r}; valid: {', '.join(valid)}")
        return np.concatenate(parts, axis=1), [p.shape[1] for p in parts]


def semantic_matrix(dataset: ZslDataset, modalities: Sequence[str] = ("attributes",)) -> tuple[np.ndarray, list[int]]:
    """Function form of :meth:`ZslDataset.semantic_matrix` (kept for callers that pass any dataset-like object)."""
    return ZslDataset.semantic_matrix(dataset, modalities)
