"""A user's own zero-shot dataset: class folders of images + a class-attribute CSV + unseen list.

    images/<class>/*.jpg|png|...      one sub-folder per class (hidden folders are ignored)
    class_attributes.csv              class,attr1,attr2,...   one row per class, numeric cells
    unseen.txt                        names of the classes held out from training, one per line

:func:`load_custom_dataset` extracts image features with an offline backbone (cached by file
content in the cache folder, never inside ``images/``, so re-runs skip extraction; see feature_cache), L2-normalises the attribute rows like xlsa17 and builds
the standard splits:

* ``test_unseen``: every image of the unseen classes;
* seen classes: per class a seeded 80/20 split into ``trainval`` / ``test_seen``;
* ``train`` / ``val``: a class-disjoint split of the seen classes (about 20% of them, at least
  2, for validation), preferring val classes whose attributes all occur in train classes, so
  hyper-parameters are tuned on the same kind of task as the unseen classes pose.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError, UnknownNameError
from ..features import DEFAULT_BACKBONE
from ..features.images import IMAGE_EXTENSIONS
from .base import ZslDataset
from .descriptions import describe_meta, find_text_folder
from .feature_cache import (FeatureFn, backbone_feature_fn, cache_file, cached_features, default_cache_dir,
                            feature_groups_meta, prime_feature_cache)

log = logging.getLogger(__name__)

# the feature cache lives in the cache folder (feature_cache); these names are re-exported for callers
__all__ = ["FeatureFn", "backbone_feature_fn", "cached_features", "default_cache_dir", "load_custom_dataset",
           "prime_feature_cache", "read_class_attributes", "read_unseen", "list_class_images", "make_splits",
           "choose_val_classes"]


def read_class_attributes(csv_path: str | os.PathLike) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``class,attr1,...`` -> (class_names, attribute_names, raw values (C, A) float32)."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataNotFoundError(f"class-attribute CSV not found: {path} (expected a file 'class,attr1,attr2,...')")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidInputError(f"{path}: not UTF-8 text ({e}); expected a CSV 'class,attr1,attr2,...'") from e
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise InvalidInputError(f"{path}: needs a header 'class,attr1,...' and at least one class row; got {len(rows)} row(s)")
    header = [h.strip() for h in rows[0]]
    attrs = header[1:]
    if not attrs:
        raise InvalidInputError(f"{path}: header {rows[0]!r} has no attribute columns; expected 'class,attr1,attr2,...'")
    if any(not a for a in attrs):
        raise InvalidInputError(f"{path}: empty attribute name in header column {attrs.index('') + 2}")
    dup = sorted({a for a in attrs if attrs.count(a) > 1})
    if dup:
        raise InvalidInputError(f"{path}: attribute column(s) {dup} appear more than once in the header")
    names: list[str] = []
    values = np.zeros((len(rows) - 1, len(attrs)), np.float32)
    for r, row in enumerate(rows[1:]):
        line = r + 2  # 1-based, header is line 1
        name = row[0].strip()
        if not name:
            raise InvalidInputError(f"{path}: row {line} has an empty class name")
        if name in names:
            raise InvalidInputError(f"{path}: class {name!r} appears twice (rows {names.index(name) + 2} and {line})")
        if len(row) != len(header):
            raise InvalidInputError(
                f"{path}: row {line} (class {name!r}) has {len(row) - 1} values; the header has {len(attrs)} attributes")
        for a, cell in enumerate(row[1:]):
            try:
                v = float(cell)
            except ValueError:
                v = math.nan
            if not math.isfinite(v):
                raise InvalidInputError(f"{path}: row {line} (class {name!r}), column {attrs[a]!r}: "
                                        f"{cell!r} is not a finite number; expected e.g. 0 or 1")
            values[r, a] = v
        if not np.any(values[r]):
            raise InvalidInputError(f"{path}: row {line} (class {name!r}) is all zeros; a class needs at least "
                                    "one non-zero attribute to be described")
        names.append(name)
    return names, attrs, values


def read_unseen(unseen_file: str | os.PathLike, class_names: Sequence[str]) -> list[str]:
    """Class names listed one per line (blank lines and ``#`` comments ignored), checked against ``class_names``."""
    path = Path(unseen_file)
    if not path.is_file():
        raise DataNotFoundError(f"unseen-classes file not found: {path} (expected one class name per line)")
    names: list[str] = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        name = line.split("#", 1)[0].strip()
        if name and name not in names:
            names.append(name)
    unknown = [n for n in names if n not in class_names]
    if len(unknown) == 1:
        raise UnknownNameError(f"unseen class (in {path.name}, not in the CSV)", unknown[0], class_names)
    if unknown:
        raise InvalidInputError(f"{path}: unseen classes {unknown} are not rows of the class-attribute CSV; "
                                f"valid: {', '.join(class_names)}")
    return names


def list_class_images(images_dir: str | os.PathLike) -> dict[str, list[Path]]:
    """``{folder name: sorted image paths}`` for every non-hidden sub-folder (recursive inside it).
    Hidden folders are skipped, so an old ``.zslr-cache/`` (where features were cached before) is no class."""
    root = Path(images_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"images folder not found: {root} (expected one sub-folder of images per class)")
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        out[sub.name] = sorted(p for p in sub.rglob("*")
                               if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                               and not any(part.startswith(".") for part in p.relative_to(sub).parts))
    return out


def load_custom_dataset(images_dir: str | os.PathLike, class_attributes_csv: str | os.PathLike,
                        unseen_file: str | os.PathLike, *, backbone: str = DEFAULT_BACKBONE, seed: int = 0,
                        device: str = "auto", cache_dir: str | os.PathLike | None = None,
                        feature_fn: FeatureFn | None = None, test_seen_fraction: float = 0.2,
                        val_fraction: float = 0.2, name: str | None = None) -> ZslDataset:
    """Build a :class:`ZslDataset` from class folders, a class-attribute CSV and an unseen list.

    ``feature_fn`` replaces the backbone (tests inject a fast one); features are cached under
    ``cache_dir`` (default: ``feature_cache.default_cache_dir(images_dir)``, in the cache folder and
    keyed by the folder's path, never inside ``images_dir``) by ``backbone`` and file content.
    Unreadable images are skipped, logged and listed in ``meta["failures"]``.
    Result: features (N, D) float32 in class order then path order, attributes (C, A)
    L2-normalised rows, ``meta["paths"]`` the image path of every row.
    """
    images_dir = Path(images_dir)
    if not 0.0 < test_seen_fraction < 1.0 or not 0.0 < val_fraction < 1.0:
        raise InvalidInputError(f"test_seen_fraction={test_seen_fraction}, val_fraction={val_fraction}; "
                                "both must be in (0, 1)")
    class_names, attr_names, raw = read_class_attributes(class_attributes_csv)
    unseen = read_unseen(unseen_file, class_names)
    folders = list_class_images(images_dir)

    no_folder = [c for c in class_names if c not in folders]
    if no_folder:
        raise DataNotFoundError(f"{images_dir}: no image folder for CSV class(es) {no_folder}; "
                                f"folders found: {sorted(folders) or 'none'}")
    no_row = [f for f in folders if f not in class_names]
    if no_row:
        raise InvalidInputError(f"{images_dir}: folder(s) {no_row} have no row in {Path(class_attributes_csv).name}; "
                                "add a row per folder or move the folder out")
    empty = [c for c in class_names if not folders[c]]
    if empty:
        raise InvalidInputError(f"{images_dir}: class folder(s) {empty} contain no images "
                                f"(accepted extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    seen = [c for c in class_names if c not in unseen]
    if len(unseen) < 2 or len(seen) < 2:
        raise InvalidInputError(f"{len(seen)} seen and {len(unseen)} unseen classes; zero-shot needs at least 2 of "
                                f"each (unseen: {unseen or 'none'})")

    all_paths = [p for c in class_names for p in folders[c]]
    extract = feature_fn if feature_fn is not None else backbone_feature_fn(backbone, device)
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir(images_dir)
    got = cached_features(all_paths, extract, cache_file(cdir, backbone))
    feats, ok_paths, failures, n_extracted = got.features, got.ok_paths, got.failures, got.n_extracted
    for p, why in failures:
        log.warning("skipping unreadable image %s: %s", p, why)
    class_of = {str(p): ci for ci, c in enumerate(class_names) for p in folders[c]}
    labels = np.array([class_of[str(p)] for p in ok_paths], np.int64)
    lost = [c for ci, c in enumerate(class_names) if not np.any(labels == ci)]
    if lost:
        raise InvalidInputError(f"no readable image in class folder(s) {lost}; {len(failures)} image(s) failed, "
                                f"first: {failures[0][0]} ({failures[0][1]})" if failures else f"class(es) {lost} empty")

    splits = make_splits(labels, [class_names.index(c) for c in seen], [class_names.index(c) for c in unseen],
                         raw > 0, seed=seed, test_seen_fraction=test_seen_fraction, val_fraction=val_fraction)
    attributes = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    return ZslDataset(
        name=name or f"custom:{images_dir.name}",
        features=feats,
        labels=labels,
        class_names=list(class_names),
        attributes=attributes.astype(np.float32),
        attribute_names=list(attr_names),
        splits=splits,
        semantic_norm="l2",
        feature_transform="none",
        meta={
            "source": "custom",
            "images_dir": str(images_dir),
            "class_attributes_csv": str(class_attributes_csv),
            "unseen_file": str(unseen_file),
            "feature_source": backbone,
            "features": {"source": "photos", "backbone": backbone, "weights_id": got.weights_id,
                         "folder": str(images_dir), "cache": str(got.cache_path), "n_images": len(all_paths),
                         "n_extracted": n_extracted},
            **feature_groups_meta(backbone, feats.shape[1]),
            "paths": [str(p) for p in ok_paths],
            "failures": [(str(p), why) for p, why in failures],
            # human descriptions in text/<class>/<file>.txt beside images/, read on first use of the modality
            **describe_meta(find_text_folder(images_dir), [p.relative_to(images_dir).as_posix() for p in ok_paths]),
            "n_extracted": n_extracted,
            "cache_dir": str(cdir),
            "seed": seed,
            "val_classes": [class_names[c] for c in np.unique(labels[splits["val"]])],
            "val_split": (f"{len(np.unique(labels[splits['val']]))} of {len(seen)} seen classes (seeded, class-disjoint; "
                          "val attributes covered by train classes when possible)"),
        },
    )


def make_splits(labels: np.ndarray, seen: Sequence[int], unseen: Sequence[int], active: np.ndarray, *,
                seed: int = 0, test_seen_fraction: float = 0.2, val_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """The five standard splits as sorted row indices.

    labels (N,) class ids; active (C, A) bool, which attributes describe each class (used to
    pick val classes whose attributes the train classes still cover).
    """
    rng = np.random.default_rng([seed, 17])
    trainval, test_seen = [], []
    for c in seen:
        rows = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(rows) - 1, max(1, round(test_seen_fraction * len(rows)))) if len(rows) > 1 else 0
        test_seen.extend(rows[:n_test].tolist())
        trainval.extend(rows[n_test:].tolist())
    val_classes = choose_val_classes(list(seen), active, rng, val_fraction)
    tv = np.array(sorted(trainval), np.int64)
    in_val = np.isin(labels[tv], val_classes)
    return {
        "trainval": tv,
        "train": tv[~in_val],
        "val": tv[in_val],
        "test_seen": np.array(sorted(test_seen), np.int64),
        "test_unseen": np.flatnonzero(np.isin(labels, list(unseen))).astype(np.int64),
    }


def choose_val_classes(seen: list[int], active: np.ndarray, rng: np.random.Generator,
                       val_fraction: float = 0.2) -> list[int]:
    """About ``val_fraction`` of the seen classes (at least 2, leaving at least 2 to train on).

    Greedy over a seeded order: a class joins val only if every attribute of every val class is
    still active in some remaining train class (a val class is then a new combination of known
    attributes, as the unseen classes are); if too few qualify the rest are taken in order.
    With 2 or 3 seen classes only one can be held out.
    """
    n = len(seen)
    n_val = min(max(2, round(val_fraction * n)), n - 2) if n >= 4 else 1
    order = [seen[k] for k in rng.permutation(n)]
    val: list[int] = []
    for c in order:
        if len(val) == n_val:
            break
        train = [t for t in seen if t not in val and t != c]
        if train and np.all(active[train].any(axis=0)[active[val + [c]].any(axis=0)]):
            val.append(c)
    for c in order:
        if len(val) == n_val:
            break
        if c not in val:
            val.append(c)
    return sorted(val)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
