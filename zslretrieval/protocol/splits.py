"""Which rows and classes the protocol may read: the split checks that keep test data out of
selection, the seeded per-class held-out part of ``train``, and feature rows as float32."""
from __future__ import annotations

import numpy as np

from ..data.base import ZslDataset
from ..errors import InvalidInputError


def feature_rows(dataset: ZslDataset, idx: np.ndarray) -> np.ndarray:
    """(len(idx), D) float32 C-contiguous features of rows ``idx``."""
    return np.ascontiguousarray(dataset.features[idx], dtype=np.float32)


def holdout_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``labels``) to fit on and to hold out: ``fraction`` of each class, >= 1 image left to fit."""
    fit, held = [], []
    for c in np.unique(labels):
        pos = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(pos) - 1, int(round(fraction * len(pos))))
        held.append(pos[:k])
        fit.append(pos[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


def check_protocol_splits(dataset: ZslDataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and val classes; refuse splits that would let test data into selection."""
    for name in ("train", "val", "trainval", "test_unseen"):
        if name not in dataset.splits or len(dataset.splits[name]) == 0:
            raise InvalidInputError(f"{dataset.name}: split {name!r} is missing or empty; the protocol needs "
                                    "train, val, trainval and test_unseen")
    train_c, val_c = dataset.split_classes("train"), dataset.split_classes("val")
    test_c = dataset.split_classes("test_unseen")
    overlap = np.intersect1d(train_c, val_c)
    if overlap.size:
        raise InvalidInputError(f"{dataset.name}: classes {[dataset.class_names[c] for c in overlap[:5]]} are in both "
                                "train and val; validation classes must be disjoint from training classes")
    leak = np.intersect1d(np.union1d(train_c, val_c), test_c)
    if leak.size:
        raise InvalidInputError(f"{dataset.name}: unseen test classes {[dataset.class_names[c] for c in leak[:5]]} "
                                "appear in train/val")
    test_rows = np.concatenate([dataset.splits["test_unseen"], dataset.splits.get("test_seen", np.zeros(0, np.int64))])
    for name in ("train", "val", "trainval"):
        shared = np.intersect1d(dataset.splits[name], test_rows)
        if shared.size:
            raise InvalidInputError(f"{dataset.name}: {shared.size} rows of {name} are also test rows")
    return train_c, val_c
