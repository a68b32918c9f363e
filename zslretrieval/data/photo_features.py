"""xlsa17 image features computed from the benchmark's own photos (no ``res101.mat`` needed).

    feats, labels, info = photo_features("CUB", xlsa17_folder, att, data_root, backbone="efficientnet-lite0")

The rows of ``att_splits.mat``'s ``*_loc`` arrays index the images in the order of the benchmark's
``res101.mat``. That order is written down in ``image_index.tsv`` beside ``att_splits.mat``
(columns ``index_1based, image, label_1based, class, split``; for CUB the sorted relative paths).
Features are put in that order and the order is *checked*, never guessed, before anything is
extracted:

* every row's ``class`` is ``allclasses_names[label_1based - 1]`` of ``att_splits.mat``, its
  ``split`` is the split its row falls in by ``trainval_loc``/``test_seen_loc``/``test_unseen_loc``,
  and its path lies in the class's folder;
* CUB: every row's class agrees with the release's ``images.txt`` + ``image_class_labels.txt`` +
  ``classes.txt`` (beside ``images/``, else in the xlsa17 folder) when they are there;
* every listed photo exists; a photo that cannot be decoded is named and the load refuses (a
  skipped row would shift every later one).

Benchmarks whose index names no files (AWA1: rows ``class/#n``; APY: bounding boxes of VOC photos;
FLO: no index) cannot be checked and are refused. Features are cached by backbone and file content
(``feature_cache``), so a second load does no backbone pass.
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError
from .feature_cache import FeatureFn, backbone_feature_fn, cache_file, cached_features, default_cache_dir

log = logging.getLogger(__name__)

INDEX_FILE = "image_index.tsv"
INDEX_COLUMNS = ("index_1based", "image", "label_1based", "class", "split")

# Where each benchmark's photos sit under the data root, as its release unpacks them (first = the one named
# in messages), and how to get them.
PHOTO_FOLDERS: dict[str, tuple[str, ...]] = {
    "CUB": ("CUB_200_2011/images",),
    "AWA2": ("Animals_with_Attributes2/JPEGImages", "AWA2/JPEGImages"),
    "SUN": ("SUNAttributeDB_images/images", "SUN/images"),
}
PHOTO_SOURCES: dict[str, str] = {
    "CUB": "lay them out with ../shared/tools/get-cub.sh --photos GIT_DIR --dest <data root> (see its header), "
           "or unpack CUB_200_2011.tgz of the Caltech-UCSD Birds-200-2011 release into <data root>",
    "AWA2": "unpack AwA2-data.zip of the Animals with Attributes 2 release into <data root> "
            "(Animals_with_Attributes2/JPEGImages/<class>/<file>.jpg)",
    "SUN": "unpack SUNAttributeDB_images.tar.gz of the SUN Attribute release into <data root>/SUNAttributeDB_images "
           "(images/<letter>/<category>/<file>.jpg)",
}
# Why a benchmark's photos cannot be used: its index does not name the files in res101.mat order.
UNCHECKABLE: dict[str, str] = {
    "AWA1": "the AWA1 image index names no files (its photos are not public; rows are class/#n)",
    "APY": "APY features are of bounding-box crops of VOC/Yahoo photos, not of whole files",
    "FLO": "no image index for FLO gives the res101.mat order of its photos",
}


def _class_of_path(name: str, rel: str) -> str:
    """The class a release's folder layout puts ``rel`` in (SUN: ``a/airport/terminal/x.jpg`` -> airport_terminal)."""
    parts = rel.split("/")
    return "_".join(parts[1:-1]) if name == "SUN" else parts[0]


@dataclass
class ImageIndex:
    """``image_index.tsv``: relative paths (N,), 0-based labels (N,), class and split name per row."""

    path: Path
    images: list[str]
    labels: np.ndarray
    classes: list[str]
    splits: list[str]


def read_image_index(path: Path) -> ImageIndex:
    if not path.is_file():
        raise DataNotFoundError(f"image order file not found: {path}; it lists the photos in the row order of "
                                f"res101.mat (columns {', '.join(INDEX_COLUMNS)}), without it photo features "
                                "cannot be matched to att_splits.mat")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or tuple(c.strip() for c in rows[0]) != INDEX_COLUMNS:
        raise InvalidInputError(f"{path}: header {rows[0] if rows else None}; expected the tab-separated columns {', '.join(INDEX_COLUMNS)}")
    body = rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(INDEX_COLUMNS)]
    if bad:
        raise InvalidInputError(f"{path}: line(s) {bad[:5]} do not have {len(INDEX_COLUMNS)} tab-separated columns")
    try:
        idx = np.array([int(r[0]) for r in body])
        labels = np.array([int(r[2]) for r in body], np.int64) - 1
    except ValueError as e:
        raise InvalidInputError(f"{path}: index_1based and label_1based must be integers ({e})") from e
    if not np.array_equal(idx, np.arange(1, len(body) + 1)):
        first = int(np.flatnonzero(idx != np.arange(1, len(body) + 1))[0])
        raise InvalidInputError(f"{path}: line {first + 2} has index_1based {idx[first]}, expected {first + 1}; "
                                "rows must be listed in order 1..N")
    return ImageIndex(path, [r[1] for r in body], labels, [r[3] for r in body], [r[4] for r in body])


def check_index(name: str, index: ImageIndex, class_names: list[str], locs: dict[str, np.ndarray]) -> None:
    """Refuse unless ``index`` names plain files, agrees with ``att_splits.mat`` (classes and splits of every
    row) and puts every photo in its class's folder."""
    where = index.path
    if name in UNCHECKABLE:
        raise InvalidInputError(f"{name}: photo features cannot be used: {UNCHECKABLE[name]}; use res101.mat")
    odd = [p for p in index.images if "#" in p or p.startswith("/") or ".." in p.split("/")]
    if odd:
        raise InvalidInputError(f"{where}: entries like {odd[0]!r} do not name a file under the photo folder; "
                                "the order of photo features cannot be checked")
    if len(set(index.images)) != len(index.images):
        raise InvalidInputError(f"{where}: some images are listed twice")
    n, c = len(index.images), len(class_names)
    if index.labels.min() < 0 or index.labels.max() >= c:
        raise InvalidInputError(f"{where}: label_1based outside 1..{c} (the classes of att_splits.mat)")
    wrong = [i for i in range(n) if class_names[index.labels[i]] != index.classes[i]]
    if wrong:
        i = wrong[0]
        raise InvalidInputError(f"{where}: {len(wrong)} row(s) disagree with att_splits.mat allclasses_names, e.g. "
                                f"row {i + 1} ({index.images[i]}): label {index.labels[i] + 1} is "
                                f"{class_names[index.labels[i]]!r} there but {index.classes[i]!r} here")
    by_loc = np.full(n, "", dtype=object)
    for split in ("trainval", "test_seen", "test_unseen"):
        idx = locs[split]
        if len(idx) and idx.max() >= n:
            raise InvalidInputError(f"{where}: {n} images but att_splits.mat {split}_loc refers to row {idx.max() + 1}")
        by_loc[idx] = split
    wrong = np.flatnonzero(by_loc != np.array(index.splits, dtype=object))
    if wrong.size:
        i = int(wrong[0])
        raise InvalidInputError(f"{where}: {wrong.size} row(s) are in another split than att_splits.mat puts them, "
                                f"e.g. row {i + 1} ({index.images[i]}): {index.splits[i]!r} here, "
                                f"{by_loc[i] or 'no split'!r} by the *_loc arrays")
    misplaced = [p for p, cl in zip(index.images, index.classes) if _class_of_path(name, p) != cl]
    if misplaced:
        raise InvalidInputError(f"{where}: {len(misplaced)} image(s) lie outside their class's folder, e.g. "
                                f"{misplaced[0]!r}")


def check_release_labels(index: ImageIndex, folders: list[Path]) -> str | None:
    """CUB: the release's own ``images.txt`` + ``image_class_labels.txt`` + ``classes.txt`` (the first of
    ``folders`` that has all three) must give every indexed image the index's class. Returns the folder
    checked against, or None when none has the files."""
    names = ("images.txt", "image_class_labels.txt", "classes.txt")
    folder = next((f for f in folders if all((f / n).is_file() for n in names)), None)
    if folder is None:
        return None

    def pairs(fname: str) -> dict[str, str]:
        out = {}
        for ln in (folder / fname).read_text(encoding="utf-8").splitlines():
            parts = ln.split(maxsplit=1)
            if len(parts) == 2:
                out[parts[0]] = parts[1].strip()
        return out

    path_of, label_of, class_of = pairs("images.txt"), pairs("image_class_labels.txt"), pairs("classes.txt")
    release = {}
    for img_id, rel in path_of.items():
        if img_id not in label_of or label_of[img_id] not in class_of:
            raise InvalidInputError(f"{folder}: image {img_id} ({rel}) has no class in image_class_labels.txt/classes.txt")
        release[rel] = class_of[label_of[img_id]]
    absent = [p for p in index.images if p not in release]
    if absent:
        raise InvalidInputError(f"{index.path}: {len(absent)} image(s) are not in {folder / 'images.txt'}, "
                                f"e.g. {absent[0]!r}; the index and the release disagree")
    wrong = [(p, cl) for p, cl in zip(index.images, index.classes) if release[p] != cl]
    if wrong:
        p, cl = wrong[0]
        raise InvalidInputError(f"{index.path}: {len(wrong)} image(s) have another class than "
                                f"{folder / 'image_class_labels.txt'} gives them, e.g. {p!r}: {cl!r} here, "
                                f"{release[p]!r} there")
    return str(folder)


def find_photo_folder(name: str, root: Path) -> Path | None:
    return next((root / rel for rel in PHOTO_FOLDERS.get(name, ()) if (root / rel).is_dir()), None)


def missing_photos_message(name: str, root: Path) -> str:
    if name in UNCHECKABLE:
        return f"photo features are not available for {name}: {UNCHECKABLE[name]}"
    if name not in PHOTO_FOLDERS:
        return f"no photo layout is known for {name}"
    return (f"or the {name} photos, expected in {root / PHOTO_FOLDERS[name][0]} (or --images DIR): "
            + PHOTO_SOURCES[name])


def photo_features(name: str, folder: Path, class_names: list[str], locs: dict[str, np.ndarray], *,
                   images_dir: Path, data_root: Path | None, backbone: str, device: str = "auto",
                   feature_fn: FeatureFn | None = None, progress: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Features (N, D) float32 and labels (N,) 0-based of the photos in ``images_dir``, in the order of
    ``<folder>/image_index.tsv`` (checked against ``class_names``/``locs`` of att_splits.mat), plus a
    ``features`` provenance dict: source, backbone, weights_id, folder, cache, n_extracted, seconds."""
    t0 = time.perf_counter()
    index = read_image_index(folder / INDEX_FILE)
    check_index(name, index, class_names, locs)
    release = check_release_labels(index, [images_dir.parent, folder]) if name == "CUB" else None
    paths = [images_dir / p for p in index.images]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataNotFoundError(f"{name}: {len(absent)} of the {len(paths)} photos listed in {index.path} are missing "
                                f"from {images_dir}, e.g. {absent[0]}; " + PHOTO_SOURCES.get(name, ""))
    extract = feature_fn if feature_fn is not None else backbone_feature_fn(backbone, device, progress=progress)
    cache_path = cache_file(default_cache_dir(images_dir, data_root), backbone)
    got = cached_features(paths, extract, cache_path)
    if got.failures:
        shown = "; ".join(f"{p} ({why})" for p, why in got.failures[:5])
        raise InvalidInputError(f"{name}: {len(got.failures)} photo(s) could not be decoded: {shown}"
                                + (" ..." if len(got.failures) > 5 else "")
                                + "; replace or restore them (skipping one would shift every later row of "
                                  "the xlsa17 order). The other photos' features are cached.")
    info = {"source": "photos", "backbone": backbone, "weights_id": got.weights_id, "folder": str(images_dir),
            "order": str(index.path), "labels_checked_against": [str(index.path), "att_splits.mat"]
            + ([release] if release else []),
            "cache": str(got.cache_path), "n_images": len(paths), "n_extracted": got.n_extracted,
            "seconds": round(time.perf_counter() - t0, 3)}
    log.info("%s: %d photo features from %s (%d extracted)", name, len(paths), images_dir, got.n_extracted)
    return got.features, index.labels.copy(), info


def describe(info: dict) -> str:
    """One line naming the features a result used (for model cards and printed reports)."""
    if info.get("source") == "photos":
        return f"{info['backbone']} ({info.get('weights_id') or 'weights not recorded'}) on {info['folder']}"
    return f"res101.mat ({info.get('path', '?')})"


__all__ = ["INDEX_FILE", "PHOTO_FOLDERS", "UNCHECKABLE", "ImageIndex", "check_index", "check_release_labels",
           "describe", "find_photo_folder", "missing_photos_message", "photo_features", "read_image_index"]
