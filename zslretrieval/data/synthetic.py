"""A small generated zero-shot benchmark, and a writer that saves any dataset in the xlsa17 layout.

:func:`make_synthetic` draws, from one seed:

* a unique, non-empty binary attribute vector per class; ``attributes`` are these rows L2-normalised
  (``semantic_norm="l2"``, like xlsa17), the binary matrix stays in ``meta["original_attributes"]``;
* a random 2-layer ReLU network ``f``; each image of class ``c`` is ``f(2 b_c - 1 + attribute_noise * e)
  + feature_noise * n`` (``e``, ``n`` standard normal, features scaled to unit std before adding ``n``),
  so images depend on the class only through its attributes, non-linearly, with per-image variation;
* xlsa17-style splits: ``n_unseen`` classes are ``test_unseen``; each seen class keeps
  ``test_seen_fraction`` of its images as ``test_seen`` and the rest as ``trainval``; ``train``/``val`` are a
  class-disjoint split of ``trainval`` with ``n_val`` validation classes. Rows are shuffled and every split
  is sorted ascending.

A model that maps attributes to image features (even a closed-form ridge map) recognises the unseen
classes far above chance; with the class/attribute pairing shuffled it does not (tests/data check both).

:func:`write_xlsa17` saves a :class:`ZslDataset` as ``res101.mat`` + ``att_splits.mat`` (+ the class and
attribute lists) exactly as the GBU download lays them out, so tests run the real xlsa17 loader on it;
``v73=True`` writes MATLAB v7.3 (HDF5) files.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from . import DATASETS
from .base import ZslDataset
from .matio import write_mat


def make_synthetic(n_classes: int = 24, n_unseen: int = 6, n_val: int = 4, n_attributes: int = 32,
                   images_per_class: int = 50, feature_dim: int = 96, hidden_dim: int = 128,
                   attribute_noise: float = 0.5, feature_noise: float = 1.0, test_seen_fraction: float = 0.2,
                   seed: int = 0) -> ZslDataset:
    """Generate a benchmark: features (C * images_per_class, feature_dim) float32, attributes (C, A)."""
    if n_unseen < 1 or n_val < 1 or n_classes - n_unseen - n_val < 1:
        raise InvalidInputError(
            f"synthetic: n_classes={n_classes}, n_unseen={n_unseen}, n_val={n_val} leave "
            f"{n_classes - n_unseen - n_val} training classes; need n_unseen >= 1, n_val >= 1 and >= 1 train class")
    if n_classes > 2 ** n_attributes - 1:
        raise InvalidInputError(f"synthetic: {n_attributes} binary attributes cannot give {n_classes} distinct classes")
    n_test_seen = int(round(test_seen_fraction * images_per_class))
    if images_per_class < 2 or not 1 <= n_test_seen < images_per_class:
        raise InvalidInputError(
            f"synthetic: images_per_class={images_per_class} with test_seen_fraction={test_seen_fraction} must leave "
            "at least one trainval and one test_seen image per seen class")
    if min(feature_dim, hidden_dim) < 1 or attribute_noise < 0 or feature_noise < 0:
        raise InvalidInputError("synthetic: feature_dim and hidden_dim must be >= 1 and noise levels >= 0")

    rng = np.random.default_rng(seed)
    binary = np.zeros((0, n_attributes))
    while len(binary) < n_classes:  # redraw until every class has a distinct, non-empty vector
        cand = (rng.random((n_classes, n_attributes)) < 0.5).astype(np.float64)
        binary = np.unique(np.vstack([binary, cand[cand.sum(1) > 0]]), axis=0)
    binary = binary[rng.permutation(len(binary))[:n_classes]]

    w1 = rng.standard_normal((n_attributes, hidden_dim)) / np.sqrt(n_attributes)
    w2 = rng.standard_normal((hidden_dim, feature_dim)) / np.sqrt(hidden_dim)
    labels = np.repeat(np.arange(n_classes), images_per_class)
    latent = (2.0 * binary - 1.0)[labels] + attribute_noise * rng.standard_normal((len(labels), n_attributes))
    clean = np.maximum(latent @ w1, 0.0) @ w2
    features = clean / clean.std() + feature_noise * rng.standard_normal(clean.shape)

    order = rng.permutation(len(labels))
    features, labels = features[order].astype(np.float32), labels[order]

    classes = rng.permutation(n_classes)
    unseen, val_classes = np.sort(classes[:n_unseen]), np.sort(classes[n_unseen:n_unseen + n_val])
    is_unseen = np.isin(labels, unseen)
    test_seen_rows = []
    for c in np.setdiff1d(np.arange(n_classes), unseen):
        rows = np.flatnonzero(labels == c)
        test_seen_rows.append(rng.choice(rows, size=n_test_seen, replace=False))
    is_test_seen = np.zeros(len(labels), dtype=bool)
    is_test_seen[np.concatenate(test_seen_rows)] = True
    is_trainval = ~is_unseen & ~is_test_seen
    is_val = is_trainval & np.isin(labels, val_classes)
    splits = {"trainval": np.flatnonzero(is_trainval), "train": np.flatnonzero(is_trainval & ~is_val),
              "val": np.flatnonzero(is_val), "test_seen": np.flatnonzero(is_test_seen),
              "test_unseen": np.flatnonzero(is_unseen)}

    width = len(str(n_classes - 1))
    class_names = [f"class_{i:0{max(2, width)}d}" for i in range(n_classes)]
    attribute_names = [f"attr_{j:0{max(2, len(str(n_attributes - 1)))}d}" for j in range(n_attributes)]
    attributes = (binary / np.linalg.norm(binary, axis=1, keepdims=True)).astype(np.float32)
    image_files = [f"synthetic/{class_names[c]}/{i:05d}.jpg" for i, c in enumerate(labels)]
    meta = {
        "source": "synthetic", "seed": seed, "original_attributes": binary.astype(np.float32),
        "image_files": image_files,
        "val_split": f"synthetic: {n_val} validation classes drawn with the generator seed {seed}",
        "val_classes": [class_names[c] for c in val_classes],
        "params": dict(n_classes=n_classes, n_unseen=n_unseen, n_val=n_val, n_attributes=n_attributes,
                       images_per_class=images_per_class, feature_dim=feature_dim, hidden_dim=hidden_dim,
                       attribute_noise=attribute_noise, feature_noise=feature_noise,
                       test_seen_fraction=test_seen_fraction),
    }
    return ZslDataset(name="synthetic", features=features, labels=labels.astype(np.int64), class_names=class_names,
                      attributes=attributes, attribute_names=attribute_names, splits=splits,
                      semantic_norm="l2", feature_transform="none", meta=meta)


@DATASETS.register("synthetic")
def load_synthetic(root: Path | None = None, *, seed: int = 0) -> ZslDataset:
    """The default :func:`make_synthetic` benchmark for ``seed`` (24 classes, 1200 images); reads no files."""
    return make_synthetic(seed=seed)


def write_xlsa17(dataset: ZslDataset, folder: str | os.PathLike, *, v73: bool = False,
                 train_val_locs: bool = True, class_lists: bool = True) -> Path:
    """Save ``dataset`` as an xlsa17 folder: ``res101.mat``, ``att_splits.mat`` and text lists.

    ``res101.mat``: ``features`` (D, N) double, ``labels`` (N, 1) double 1-based, ``image_files`` (N, 1) cell.
    ``att_splits.mat``: ``att``/``original_att`` (A, C) double, ``*_loc`` (n, 1) 1-based (uint16 when
    N < 65536, as in the GBU files, else int32), ``allclasses_names`` (C, 1) cell. Text files:
    ``allclasses.txt``, ``trainvalclasses.txt``, ``testclasses.txt``, ``attribute_names.txt`` and,
    with ``class_lists``, ``trainclasses1.txt``/``valclasses1.txt``. ``train_val_locs=False`` omits
    ``train_loc``/``val_loc`` like the CUB and APY files. Returns the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(dataset.features)
    image_files = dataset.meta.get("image_files") or [f"{dataset.name}/{i:06d}.jpg" for i in range(n)]
    if len(image_files) != n:
        raise InvalidInputError(f"{dataset.name}: meta['image_files'] has {len(image_files)} entries for {n} images")
    write_mat(folder / "res101.mat", {
        "image_files": list(image_files),
        "features": np.asarray(dataset.features, dtype=np.float64).T,
        "labels": (np.asarray(dataset.labels, dtype=np.float64) + 1).reshape(-1, 1),
    }, v73=v73)
    loc_dtype = np.uint16 if n < 2 ** 16 else np.int32
    original = dataset.meta.get("original_attributes")
    original = dataset.attributes if original is None else np.asarray(original)
    variables = {
        "allclasses_names": list(dataset.class_names),
        "att": np.asarray(dataset.attributes, dtype=np.float64).T,
        "original_att": np.asarray(original, dtype=np.float64).T,
    }
    split_names = ("trainval", "test_seen", "test_unseen") + (("train", "val") if train_val_locs else ())
    for split in split_names:
        one_based = np.asarray(dataset.splits[split], dtype=np.int64) + 1
        variables[f"{split}_loc"] = one_based.astype(loc_dtype).reshape(-1, 1)
    write_mat(folder / "att_splits.mat", variables, v73=v73)

    def names_of(split: str) -> list[str]:
        return [dataset.class_names[c] for c in dataset.split_classes(split)]

    lists = {"allclasses.txt": list(dataset.class_names), "trainvalclasses.txt": names_of("trainval"),
             "testclasses.txt": names_of("test_unseen"), "attribute_names.txt": list(dataset.attribute_names)}
    if class_lists:
        lists["trainclasses1.txt"], lists["valclasses1.txt"] = names_of("train"), names_of("val")
    for fname, lines in lists.items():
        tmp = folder / f".{fname}.tmp"
        tmp.write_text("".join(f"{ln}\n" for ln in lines), encoding="utf-8")
        os.replace(tmp, folder / fname)
    return folder
