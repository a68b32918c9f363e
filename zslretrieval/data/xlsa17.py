"""The six GBU benchmarks (CUB, AWA1, AWA2, SUN, APY, FLO) in the xlsa17 "proposed splits" layout.

Xian et al., "Zero-Shot Learning - A Comprehensive Evaluation of the Good, the Bad and the Ugly"
(TPAMI 2018) publish, per benchmark, a folder with

* ``res101.mat``: ``features`` (2048, N) ResNet-101 features, ``labels`` (N, 1) 1-based class ids,
  ``image_files`` (N, 1) cell;
* ``att_splits.mat``: ``att`` (A, C) class semantics with L2-normalised columns, ``original_att``,
  ``trainval_loc``, ``test_seen_loc``, ``test_unseen_loc`` (and for AWA1/AWA2/SUN/FLO ``train_loc``,
  ``val_loc``) as 1-based row indices into ``features``, and ``allclasses_names`` (C, 1) cell.

The loaders accept ``<root>/xlsa17/<NAME>/`` and ``<root>/xlsa17/data/<NAME>/`` and both MATLAB v5 and
v7.3 files. Everything is converted to 0-based indices and ``attributes`` becomes (C, A).

Class order: the columns of ``att`` and the ``labels`` of ``res101.mat`` follow ``allclasses_names``
(= ``allclasses.txt``), which for CUB is *not* the order of ``classes.txt``. Every other file that
refers to classes (``valclasses1.txt``, ``sent_splits_reed1024.mat``) is therefore mapped by class
*name*, never by position. FLO ships no names: its classes are called ``class_001`` ... unless an
``allclasses.txt`` with one name per class lies beside ``att_splits.mat``.

Validation split (``meta["val_split"]`` records which rule applied), always class-disjoint and always
inside ``trainval`` so hyper-parameters are never chosen on test images:

1. ``train_loc``/``val_loc`` when the file has them (AWA1, AWA2, SUN, FLO). The published arrays also
   contain the ``test_seen`` images of those classes; they are intersected with ``trainval_loc`` so
   the GZSL seen-class test images stay untouched during selection.
2. Otherwise (CUB, APY) ``trainclasses1.txt``/``valclasses1.txt`` beside ``att_splits.mat``: the
   standard GBU class split 1.
3. Otherwise a seeded, deterministic choice of 20% of the ``trainval`` classes
   (``numpy.random.default_rng(seed)``); the rest are ``train``.

Features: ``res101.mat`` when present; otherwise (or with ``images=``) the benchmark's own photos
through an offline backbone, in the ``image_index.tsv`` order checked against ``att_splits.mat``
(``photo_features``; CUB, AWA2, SUN), cached by backbone and content in the cache folder.
``meta["features"]`` and ``meta["feature_source"]`` say which were used.

Attribute names (the query vocabulary): AWA ``predicates.txt``, CUB ``attributes.txt`` (index column
stripped), SUN ``attribute_names.txt``, any dataset ``attribute_names.txt``; otherwise ``a0``...
CUB additionally exposes the Reed et al. 1024-d sentence descriptors from ``sent_splits_reed1024.mat``
as ``extra_semantics["sent"]`` (C, 1024) when the file is present.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError
from . import DATASETS
from .base import ZslDataset
from .matio import cellstr, is_v73, read_mat

# Registered name -> folder name under <root>/xlsa17/
XLSA17_NAMES: dict[str, str] = {"cub": "CUB", "awa1": "AWA1", "awa2": "AWA2", "sun": "SUN", "apy": "APY", "flo": "FLO"}
_ATTRIBUTE_NAME_FILES: dict[str, tuple[str, ...]] = {
    "AWA1": ("predicates.txt",), "AWA2": ("predicates.txt",), "CUB": ("attributes.txt",),
    "SUN": ("attribute_names.txt",),
}
_GENERIC_ATTRIBUTE_FILE = "attribute_names.txt"
SENTENCE_FILE = "sent_splits_reed1024.mat"
VAL_FRACTION = 0.2
_SOURCE_HINT = (
    "res101.mat and att_splits.mat come with the xlsa17 'proposed splits' download of Xian et al., "
    "'Zero-Shot Learning - A Comprehensive Evaluation of the Good, the Bad and the Ugly' (GBU, TPAMI 2018); "
    "unpack it so that res101.mat sits beside att_splits.mat in <data root>/xlsa17/{name}/ "
    "(or <data root>/xlsa17/data/{name}/; data root: --data-root, else $ZSLR_DATA)")


@dataclass
class AttSplits:
    """What ``att_splits.mat`` (plus the class/attribute lists beside it) says about one benchmark.

    ``attributes`` (C, A) float32; ``locs[split]`` 0-based row indices exactly as in the file for
    ``trainval``, ``test_seen``, ``test_unseen`` and, when present, ``train``, ``val``.
    """

    path: Path
    class_names: list[str]
    attributes: np.ndarray
    attribute_names: list[str]
    locs: dict[str, np.ndarray]
    extra_semantics: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def xlsa17_folder(root: str | os.PathLike, folder_name: str) -> Path:
    """``<root>/xlsa17/<NAME>`` if it exists, else ``<root>/xlsa17/data/<NAME>`` if that does, else the former."""
    root = Path(root)
    primary, alt = root / "xlsa17" / folder_name, root / "xlsa17" / "data" / folder_name
    if not primary.is_dir() and alt.is_dir():
        return alt
    return primary


def read_att_splits(folder: str | os.PathLike, *, name: str | None = None) -> AttSplits:
    """Read ``<folder>/att_splits.mat`` and the class/attribute name files beside it."""
    folder = Path(folder)
    label = name or folder.name
    path = folder / "att_splits.mat"
    if not path.is_file():
        raise DataNotFoundError(
            f"{label}: class attributes and splits not found: expected {path}. "
            + _SOURCE_HINT.format(name=folder.name))
    mat = read_mat(path)
    need = ("att", "trainval_loc", "test_seen_loc", "test_unseen_loc")
    missing = [k for k in need if k not in mat]
    if missing:
        raise InvalidInputError(f"{path}: missing variable(s) {', '.join(missing)}; an xlsa17 att_splits.mat has "
                                f"{', '.join(need)} (+ train_loc, val_loc, allclasses_names)")
    att = _numeric(mat["att"], f"{path}:att", ndim=2)
    n_attr, n_cls = att.shape
    if not np.all(np.isfinite(att)):
        raise InvalidInputError(f"{path}:att contains NaN or Inf values")
    class_names, names_source = _class_names(mat, folder, n_cls, path)
    attribute_names, attr_source = _attribute_names(folder, n_attr)
    locs: dict[str, np.ndarray] = {}
    for split in ("trainval", "test_seen", "test_unseen", "train", "val"):
        key = f"{split}_loc"
        if key in mat:
            locs[split] = _locs(mat[key], f"{path}:{key}")
    if ("train" in locs) != ("val" in locs):
        raise InvalidInputError(f"{path}: has only one of train_loc/val_loc; need both or neither")
    extra: dict[str, np.ndarray] = {}
    meta = {"att_splits_path": str(path), "att_splits_format": "v7.3" if is_v73(path) else "v5",
            "class_names_source": names_source, "attribute_names_source": attr_source}
    sent_path = folder / SENTENCE_FILE
    if sent_path.is_file():
        extra["sent"] = _sentence_semantics(sent_path, class_names)
        meta["sent_path"] = str(sent_path)
    return AttSplits(path=path, class_names=class_names, attributes=np.ascontiguousarray(att.T, dtype=np.float32),
                     attribute_names=attribute_names, locs=locs, extra_semantics=extra, meta=meta)


def make_splits(att: AttSplits, labels: np.ndarray, *, seed: int = 0,
                folder: Path | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Check the file's splits against ``labels`` (N,) (0-based) and derive ``train``/``val``.

    Returns ``(splits, meta)``; raises InvalidInputError when the locs are out of range or the
    splits are not class-consistent (which is what wrong labels or a mismatched file look like).
    """
    n = len(labels)
    where = str(att.path)
    for split, idx in att.locs.items():
        if len(idx) and (idx.min() < 0 or idx.max() >= n):
            raise InvalidInputError(
                f"{where}: {split}_loc refers to row {int(idx.max()) + 1} (1-based) but the features have {n} rows; "
                "res101.mat and att_splits.mat must come from the same xlsa17 folder")
        if len(np.unique(idx)) != len(idx):
            raise InvalidInputError(f"{where}: {split}_loc lists some rows more than once")
    trainval, test_seen, test_unseen = att.locs["trainval"], att.locs["test_seen"], att.locs["test_unseen"]
    if np.intersect1d(trainval, test_seen).size:
        raise InvalidInputError(f"{where}: trainval_loc and test_seen_loc share "
                                f"{np.intersect1d(trainval, test_seen).size} rows; they must be disjoint")
    seen = np.unique(labels[trainval])
    unseen = np.unique(labels[test_unseen])
    both = np.intersect1d(seen, unseen)
    if both.size:
        raise InvalidInputError(
            f"{where}: classes {[att.class_names[c] for c in both[:5]]} appear in both trainval and test_unseen "
            "images; the labels do not match these splits (wrong res101.mat, or labels not in allclasses order)")
    extra_seen = np.setdiff1d(np.unique(labels[test_seen]), seen)
    if extra_seen.size:
        raise InvalidInputError(
            f"{where}: test_seen images of classes {[att.class_names[c] for c in extra_seen[:5]]} have no trainval "
            "images; the labels do not match these splits")
    if folder is not None:
        # A relabelling of whole classes keeps the splits class-consistent; the class lists catch it.
        for fname, classes in (("testclasses.txt", unseen), ("trainvalclasses.txt", seen)):
            if (folder / fname).is_file():
                listed = set(_read_lines(folder / fname))
                found = {att.class_names[c] for c in classes}
                if listed != found:
                    diff = sorted(found ^ listed)
                    raise InvalidInputError(
                        f"{where}: the labels put classes {sorted(found - listed)[:5]} in the split that "
                        f"{folder / fname} lists as {sorted(listed - found)[:5]} ({len(diff)} differ); labels must be "
                        "1-based ids in allclasses_names order")
    splits = {"trainval": trainval, "test_seen": test_seen, "test_unseen": test_unseen}
    meta: dict = {}
    if "train" in att.locs:
        # The published train/val locs also hold the test_seen images; keep selection inside trainval.
        train = np.intersect1d(att.locs["train"], trainval)
        val = np.intersect1d(att.locs["val"], trainval)
        tr_c, va_c = np.unique(labels[train]), np.unique(labels[val])
        if np.intersect1d(tr_c, va_c).size or len(train) + len(val) != len(trainval):
            raise InvalidInputError(
                f"{where}: train_loc/val_loc restricted to trainval_loc are not a class-disjoint partition of "
                f"trainval ({len(train)} + {len(val)} rows for {len(trainval)}, "
                f"{np.intersect1d(tr_c, va_c).size} shared classes)")
        meta["val_split"] = "train_loc/val_loc of att_splits.mat, restricted to trainval_loc rows"
    else:
        val_classes, meta["val_split"] = _val_classes(att, seen, folder, seed)
        in_val = np.isin(labels[trainval], val_classes)
        train, val = trainval[~in_val], trainval[in_val]
    splits["train"], splits["val"] = train, val
    meta["val_classes"] = [att.class_names[c] for c in np.unique(labels[val])]
    return splits, meta


def load_xlsa17_folder(folder: str | os.PathLike, *, name: str | None = None, seed: int = 0,
                       features_path: str | os.PathLike | None = None) -> ZslDataset:
    """Load one benchmark from an xlsa17 folder (``res101.mat`` + ``att_splits.mat``).

    ``features_path`` overrides ``<folder>/res101.mat``; ``seed`` is used only when the validation
    classes have to be drawn (see the module docstring).
    """
    folder = Path(folder)
    label = name or folder.name
    res_path = Path(features_path) if features_path is not None else folder / "res101.mat"
    if not res_path.is_file():
        raise DataNotFoundError(f"{label}: image features not found: expected {res_path}. "
                                + _SOURCE_HINT.format(name=folder.name))
    att = read_att_splits(folder, name=label)
    features, labels, image_files = read_res101(res_path, len(att.class_names))
    splits, split_meta = make_splits(att, labels, seed=seed, folder=folder)
    meta = {"source": "xlsa17", "folder": str(folder), "features_path": str(res_path),
            "features_format": "v7.3" if is_v73(res_path) else "v5", "seed": seed, **att.meta, **split_meta}
    if image_files is not None:
        meta["image_files"] = image_files
    return ZslDataset(name=label, features=features, labels=labels, class_names=att.class_names,
                      attributes=att.attributes, attribute_names=att.attribute_names, splits=splits,
                      extra_semantics=att.extra_semantics, semantic_norm="l2", feature_transform="none", meta=meta)


def read_res101(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """``(features (N, D) float32, labels (N,) int64 0-based, image_files or None)`` from a res101.mat."""
    mat = read_mat(path, ["features", "labels", "image_files"])
    missing = [k for k in ("features", "labels") if k not in mat]
    if missing:
        raise InvalidInputError(f"{path}: missing variable(s) {', '.join(missing)}; an xlsa17 res101.mat has "
                                "features (D x N), labels (N x 1, 1-based) and image_files")
    feats = _numeric(mat["features"], f"{path}:features", ndim=2)
    raw_labels = _numeric(mat["labels"], f"{path}:labels")
    if raw_labels.ndim != 2 or 1 not in raw_labels.shape:
        raise InvalidInputError(f"{path}:labels has shape {raw_labels.shape}; expected (N, 1)")
    raw_labels = raw_labels.ravel()
    n = raw_labels.size
    if feats.shape[1] != n:
        # xlsa17 stores one image per column; a row-per-image matrix is accepted when unambiguous
        if feats.shape[0] == n:
            feats = feats.T
        else:
            raise InvalidInputError(f"{path}: features have shape {feats.shape} but there are {n} labels; "
                                    f"expected (D, {n})")
    features = np.ascontiguousarray(feats.T, dtype=np.float32)
    if not np.all(np.isfinite(features)):
        raise InvalidInputError(f"{path}:features contains NaN or Inf values")
    if np.any(raw_labels != np.round(raw_labels)) or raw_labels.min() < 1 or raw_labels.max() > n_classes:
        raise InvalidInputError(
            f"{path}:labels must be integers in 1..{n_classes} (1-based, one per class of att_splits.mat); "
            f"found values in {raw_labels.min():g}..{raw_labels.max():g}")
    labels = raw_labels.astype(np.int64) - 1
    image_files = None
    if "image_files" in mat:
        image_files = cellstr(mat["image_files"], f"{path}:image_files")
        if len(image_files) != n:
            raise InvalidInputError(f"{path}: {len(image_files)} image_files for {n} labels")
    return features, labels, image_files


def load_xlsa17(root: str | os.PathLike, folder_name: str, *, name: str | None = None, seed: int = 0,
                images: str | os.PathLike | None = None, backbone: str | None = None, device: str = "auto",
                feature_fn=None, progress: bool = True) -> ZslDataset:
    """One benchmark under ``root``: features from ``res101.mat`` when it is there, else from the
    benchmark's photos (``images``, else their release folder under ``root``; see ``photo_features``)
    through the offline ``backbone``. ``images`` given means photos even when ``res101.mat`` exists.
    ``meta["features"]`` says which features were used; ``feature_fn`` replaces the backbone (tests)."""
    from .photo_features import describe, find_photo_folder, missing_photos_message

    root = Path(root)
    folder = xlsa17_folder(root, folder_name)
    label = name or folder_name
    res_path = folder / "res101.mat"
    if images is None and res_path.is_file():
        ds = load_xlsa17_folder(folder, name=label, seed=seed)
        ds.meta["features"] = {"source": "res101.mat", "path": str(res_path)}
        ds.meta["feature_source"] = describe(ds.meta["features"])
        return ds
    images_dir = Path(images).expanduser() if images is not None else find_photo_folder(folder_name, root)
    if images_dir is None or not images_dir.is_dir():
        what = f"--images {images_dir} is not a folder" if images is not None else \
            f"image features not found: expected {res_path}. " + _SOURCE_HINT.format(name=folder.name)
        raise DataNotFoundError(f"{label}: {what}; {missing_photos_message(folder_name, root)}")
    return load_xlsa17_photos(folder, images_dir, name=label, seed=seed, data_root=root, backbone=backbone,
                              device=device, feature_fn=feature_fn, progress=progress)


# The backbone a benchmark's photos go through when none is named, chosen on its *val* classes
# (docs/results.md, CUB section): on CUB (seed 0) EfficientNet-Lite2 beat Lite0 for ESZSL 0.541 vs 0.519,
# SSL 0.589 vs 0.574, ACMR 0.568 vs 0.551, DML 0.572 vs 0.551 (DEM 0.582 vs 0.589). Per benchmark, not
# global: raw-feature indexes and the general model keep features.DEFAULT_BACKBONE.
PHOTO_BACKBONES: dict[str, str] = {"CUB": "efficientnet-lite2"}


def load_xlsa17_photos(folder: str | os.PathLike, images_dir: str | os.PathLike, *, name: str | None = None,
                       seed: int = 0, data_root: str | os.PathLike | None = None, backbone: str | None = None,
                       device: str = "auto", feature_fn=None, progress: bool = True) -> ZslDataset:
    """An xlsa17 benchmark with features of its photos in ``images_dir`` (N, D) float32, in the
    checked ``image_index.tsv`` order, and the proposed split of ``att_splits.mat``."""
    from ..features import DEFAULT_BACKBONE
    from .descriptions import describe_meta, find_text_folder
    from .feature_cache import feature_groups_meta
    from .photo_features import describe, photo_features, read_image_index

    folder = Path(folder)
    label = name or folder.name
    backbone = backbone or PHOTO_BACKBONES.get(folder.name.upper(), DEFAULT_BACKBONE)
    att = read_att_splits(folder, name=label)
    features, labels, info = photo_features(folder.name.upper(), folder, att.class_names, att.locs,
                                            images_dir=Path(images_dir), data_root=data_root, backbone=backbone,
                                            device=device, feature_fn=feature_fn, progress=progress)
    splits, split_meta = make_splits(att, labels, seed=seed, folder=folder)
    meta = {"source": "xlsa17", "folder": str(folder), "features": info, "feature_source": describe(info),
            "backbone": backbone, "seed": seed, **feature_groups_meta(backbone, features.shape[1]), **att.meta,
            **split_meta}
    # the photos' human descriptions (CUB: text/ beside images/), read on first use of the modality
    meta.update(describe_meta(find_text_folder(Path(images_dir)), read_image_index(Path(info["order"])).images))
    return ZslDataset(name=label, features=features, labels=labels, class_names=att.class_names,
                      attributes=att.attributes, attribute_names=att.attribute_names, splits=splits,
                      extra_semantics=att.extra_semantics, semantic_norm="l2", feature_transform="none", meta=meta)


def _make_loader(reg_name: str, folder_name: str):
    def load(root: Path, *, seed: int = 0, images: str | os.PathLike | None = None, backbone: str | None = None,
             device: str = "auto") -> ZslDataset:
        return load_xlsa17(root, folder_name, name=reg_name, seed=seed, images=images, backbone=backbone,
                           device=device)

    load.__name__ = f"load_{reg_name}"
    load.__doc__ = (f"{folder_name} from ``<root>/xlsa17/{folder_name}/``: res101.mat + att_splits.mat, or the "
                    "photos through an offline backbone (see load_xlsa17); attributes (C, A) L2-normalised.")
    load.photo_features = True  # type: ignore[attr-defined]  (load_dataset passes --images/--backbone)
    return load


for _reg, _folder in XLSA17_NAMES.items():
    DATASETS.register(_reg)(_make_loader(_reg, _folder))


# ---------------------------------------------------------------------------------------------------------
# helpers


def _numeric(value, what: str, ndim: int | None = None) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise InvalidInputError(f"{what}: expected a numeric matrix, got {type(value).__name__}"
                                + (f" of {value.dtype}" if isinstance(value, np.ndarray) else ""))
    if ndim is not None and value.ndim != ndim:
        raise InvalidInputError(f"{what}: expected a {ndim}-D matrix, got shape {value.shape}")
    return value


def _locs(value, what: str) -> np.ndarray:
    arr = _numeric(value, what)
    if arr.ndim != 2 or (arr.size and 1 not in arr.shape):
        raise InvalidInputError(f"{what}: expected an (n, 1) vector of 1-based row indices, got shape {arr.shape}")
    flat = arr.ravel()
    if flat.size and (np.any(flat != np.round(flat)) or flat.min() < 1):
        raise InvalidInputError(f"{what}: row indices must be integers >= 1 (1-based); found {flat.min():g}")
    return flat.astype(np.int64) - 1


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]


def _class_names(mat: dict, folder: Path, n_cls: int, path: Path) -> tuple[list[str], str]:
    listed = folder / "allclasses.txt"
    file_names = _read_lines(listed) if listed.is_file() else None
    if "allclasses_names" in mat:
        names = [s.strip() for s in cellstr(mat["allclasses_names"], f"{path}:allclasses_names")]
        if len(names) != n_cls:
            raise InvalidInputError(f"{path}: {len(names)} allclasses_names for {n_cls} columns of att")
        if file_names is not None and file_names != names:
            raise InvalidInputError(f"{listed} disagrees with allclasses_names of {path}; both must list the "
                                    "classes in the same order (use the files of one xlsa17 download)")
        source = "allclasses_names"
    elif file_names is not None and len(file_names) == n_cls:
        names, source = file_names, str(listed)
    else:
        width = max(3, len(str(n_cls)))
        names, source = [f"class_{i + 1:0{width}d}" for i in range(n_cls)], "generated (file has no class names)"
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InvalidInputError(f"{path}: class names must be unique; repeated: {dup[:5]}")
    return names, source


def _strip_index(lines: list[str]) -> list[str]:
    """Drop a leading 1..n index column (``predicates.txt``, ``attributes.txt``) when every line has one."""
    parts = [ln.split(maxsplit=1) for ln in lines]
    indexed = all(len(p) == 2 and p[0].isdigit() for p in parts)
    if indexed and [int(p[0]) for p in parts] == list(range(1, len(parts) + 1)):
        return [p[1].strip() for p in parts]
    return lines


def _attribute_names(folder: Path, n_attr: int) -> tuple[list[str], str]:
    candidates = _ATTRIBUTE_NAME_FILES.get(folder.name.upper(), ()) + (_GENERIC_ATTRIBUTE_FILE,)
    for fname in dict.fromkeys(candidates):
        path = folder / fname
        if path.is_file():
            names = _strip_index(_read_lines(path))
            if len(names) != n_attr:
                raise InvalidInputError(f"{path}: {len(names)} attribute names but att_splits.mat has {n_attr} "
                                        "attributes; the vocabulary file must list one name per row of att")
            return names, str(path)
    return [f"a{i}" for i in range(n_attr)], "generated (no attribute name file)"


def _sentence_semantics(path: Path, class_names: list[str]) -> np.ndarray:
    """(C, 1024) sentence descriptors in ``class_names`` order, matched by class name."""
    mat = read_mat(path, ["att", "allclasses_names"])
    if "att" not in mat or "allclasses_names" not in mat:
        raise InvalidInputError(f"{path}: expected variables att (1024 x C) and allclasses_names")
    sent = _numeric(mat["att"], f"{path}:att", ndim=2)
    names = [s.strip() for s in cellstr(mat["allclasses_names"], f"{path}:allclasses_names")]
    if sent.shape[1] != len(names):
        raise InvalidInputError(f"{path}: att has {sent.shape[1]} columns for {len(names)} allclasses_names")
    col = {n: i for i, n in enumerate(names)}
    absent = [c for c in class_names if c not in col]
    if absent:
        raise InvalidInputError(f"{path}: no sentence descriptor for classes {absent[:5]} of att_splits.mat")
    return np.ascontiguousarray(sent[:, [col[c] for c in class_names]].T, dtype=np.float32)


def _val_classes(att: AttSplits, seen: np.ndarray, folder: Path | None, seed: int) -> tuple[np.ndarray, str]:
    """Validation classes (0-based) for files without train_loc/val_loc; see the module docstring."""
    if folder is not None and (folder / "valclasses1.txt").is_file() and (folder / "trainclasses1.txt").is_file():
        index = {n: i for i, n in enumerate(att.class_names)}
        picked = {}
        for fname in ("trainclasses1.txt", "valclasses1.txt"):
            names = _read_lines(folder / fname)
            unknown = [n for n in names if n not in index]
            if unknown:
                raise InvalidInputError(f"{folder / fname}: classes {unknown[:5]} are not in allclasses_names")
            picked[fname] = np.array(sorted(index[n] for n in names), dtype=np.int64)
        tr, va = picked["trainclasses1.txt"], picked["valclasses1.txt"]
        if np.intersect1d(tr, va).size or not np.array_equal(np.union1d(tr, va), seen):
            raise InvalidInputError(
                f"{folder}: trainclasses1.txt + valclasses1.txt ({len(tr)} + {len(va)} classes) must split the "
                f"{len(seen)} trainval classes without overlap")
        return va, "valclasses1.txt/trainclasses1.txt (GBU class split 1)"
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(VAL_FRACTION * len(seen))))
    val = np.sort(rng.choice(seen, size=n_val, replace=False))
    return val, f"seeded: {n_val} of {len(seen)} trainval classes drawn with numpy default_rng({seed})"
