"""AwA1 with the original hand-crafted image features of Lampert et al. (CVPR 2009).

``<root>/awa1_lampert/features.npz`` holds, for the 30,475 AwA1 images, the bag-of-words histograms
``lss``, ``sift``, ``surf`` (uint16 counts, 2000-d), ``rgsift`` (float16, 2000-d), ``phog``
(float16, 252-d) and ``labels`` (1-based, in ``xlsa17/AWA1/allclasses.txt`` order). Its rows follow
the xlsa17 AWA1 image order, so ``<root>/xlsa17/AWA1/att_splits.mat`` indexes them directly and
provides the class attributes, names and proposed splits (see :mod:`.xlsa17` for how ``train``/``val``
are derived).

Preprocessing (``feature_transform="hellinger"``): each histogram group is L1-normalised per image,
square-rooted (Hellinger kernel map, so dot products become Bhattacharyya similarities) and the groups
are concatenated in the order lss, sift, surf, rgsift, phog -> (30475, 8252) float32.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError
from . import DATASETS
from .base import ZslDataset
from .xlsa17 import make_splits, read_att_splits, xlsa17_folder

FEATURE_GROUPS: tuple[str, ...] = ("lss", "sift", "surf", "rgsift", "phog")


def hellinger(groups: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    """L1-normalise each (N, d_g) histogram group per row, take sqrt, concatenate -> (N, sum d_g) float32.

    All-zero rows stay zero. ``out`` may be a preallocated (N, sum d_g) float32 array.
    """
    n = len(groups[0])
    total = sum(g.shape[1] for g in groups)
    if out is None:
        out = np.empty((n, total), dtype=np.float32)
    col = 0
    for g in groups:
        block = out[:, col:col + g.shape[1]]
        np.copyto(block, g, casting="unsafe")
        if np.any(block < 0):
            raise InvalidInputError(f"histogram group with {g.shape[1]} dims has negative entries; "
                                    "Hellinger needs non-negative counts")
        sums = block.sum(axis=1, keepdims=True, dtype=np.float64)
        # empty histograms (a few phog rows) would divide by zero; they stay all-zero
        np.divide(block, np.where(sums > 0, sums, 1.0).astype(np.float32), out=block)
        np.sqrt(block, out=block)
        col += g.shape[1]
    return out


def _member_shape(npz: np.lib.npyio.NpzFile, key: str) -> tuple[int, ...]:
    # Only the .npy header: decompressing a 120 MB member just to learn its shape would double load time.
    with npz.zip.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = reader(f)
    return tuple(shape)


@DATASETS.register("awa1-lampert", aliases=("awa1_lampert",))
def load_awa1_lampert(root: Path, *, seed: int = 0) -> ZslDataset:
    """AwA1 hand-crafted features (N=30475, D=8252, Hellinger) with the xlsa17 AWA1 splits."""
    return load_awa1_lampert_files(Path(root) / "awa1_lampert" / "features.npz", xlsa17_folder(root, "AWA1"),
                                   seed=seed)


def load_awa1_lampert_files(npz_path: str | os.PathLike, att_folder: str | os.PathLike, *,
                            seed: int = 0) -> ZslDataset:
    """Load from an explicit ``features.npz`` and the xlsa17 AWA1 folder holding ``att_splits.mat``."""
    npz_path, att_folder = Path(npz_path), Path(att_folder)
    if not npz_path.is_file():
        raise DataNotFoundError(
            f"awa1-lampert: features not found: expected {npz_path}, an .npz with arrays "
            f"{', '.join(FEATURE_GROUPS)}, labels (the AwA1 features of Lampert et al., "
            "Animals with Attributes v1.0, in xlsa17 AWA1 image order)")
    att = read_att_splits(att_folder, name="awa1-lampert")
    try:
        npz = np.load(npz_path, allow_pickle=False)
    except Exception as e:  # zip / format errors
        raise InvalidInputError(f"{npz_path}: not a readable .npz file ({type(e).__name__}: {e})") from e
    with npz:
        missing = [k for k in (*FEATURE_GROUPS, "labels") if k not in npz.files]
        if missing:
            raise InvalidInputError(f"{npz_path}: missing array(s) {', '.join(missing)}; expected "
                                    f"{', '.join(FEATURE_GROUPS)}, labels (has {', '.join(npz.files)})")
        raw_labels = np.asarray(npz["labels"]).ravel()
        n = raw_labels.size
        n_cls = len(att.class_names)
        if raw_labels.min() < 1 or raw_labels.max() > n_cls:
            raise InvalidInputError(f"{npz_path}: labels must be 1-based class ids in 1..{n_cls} "
                                    f"(allclasses order); found {raw_labels.min()}..{raw_labels.max()}")
        dims = {}
        for g in FEATURE_GROUPS:
            shape = _member_shape(npz, g)
            if len(shape) != 2 or shape[0] != n:
                raise InvalidInputError(f"{npz_path}: {g} has shape {shape}; expected ({n}, d) like labels")
            dims[g] = shape[1]
        features = np.empty((n, sum(dims.values())), dtype=np.float32)
        col = 0
        # One group at a time keeps peak memory near the 1 GB of the output.
        for g in FEATURE_GROUPS:
            hellinger([npz[g]], out=features[:, col:col + dims[g]])
            col += dims[g]
    labels = raw_labels.astype(np.int64) - 1
    splits, split_meta = make_splits(att, labels, seed=seed, folder=att_folder)
    meta = {"source": "awa1_lampert", "features_path": str(npz_path), "feature_groups": dims,
            "seed": seed, **att.meta, **split_meta}
    return ZslDataset(name="awa1-lampert", features=features, labels=labels, class_names=att.class_names,
                      attributes=att.attributes, attribute_names=att.attribute_names, splits=splits,
                      extra_semantics=att.extra_semantics, semantic_norm="l2", feature_transform="hellinger",
                      meta=meta)
