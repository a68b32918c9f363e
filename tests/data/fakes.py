"""Helpers that build xlsa17 folders around the real att_splits.mat files of ../shared/data.

The real res101.mat features cannot be shipped, so a fake one with the right number of rows is
written next to symlinks of the real files; its labels come from the real ``image_index.tsv`` (the
public image lists in res101.mat row order), and its first two feature columns encode the row index
and the label, so tests can see that rows were neither reordered nor mislabelled.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from zslretrieval.data.matio import read_mat, write_mat

XLSA17 = ("APY", "AWA1", "AWA2", "CUB", "FLO", "SUN")


def image_index(folder: Path) -> tuple[np.ndarray, list[str], list[str]] | None:
    """(labels 0-based (N,), image paths, class names) from image_index.tsv, or None when absent."""
    path = folder / "image_index.tsv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return (np.array([int(r["label_1based"]) - 1 for r in rows], dtype=np.int64),
            [r["image"] for r in rows], [r["class"] for r in rows])


def split_consistent_labels(att_splits: dict, n_classes: int) -> np.ndarray:
    """Labels for a benchmark without an image list (FLO): class-consistent with its locs."""
    locs = {k: att_splits[f"{k}_loc"].ravel().astype(np.int64) - 1 for k in ("test_unseen", "train", "val")}
    n = int(max(v.max() for v in locs.values())) + 1
    labels = np.full(n, 40, dtype=np.int64)
    labels[locs["train"]] = 40 + np.arange(len(locs["train"])) % (n_classes - 40)
    labels[locs["val"]] = 20 + np.arange(len(locs["val"])) % 20
    labels[locs["test_unseen"]] = np.arange(len(locs["test_unseen"])) % 20
    return labels


def make_fake_root(shared: Path, tmp: Path, name: str, *, dim: int = 4, v73: bool = False,
                   layout: str = "xlsa17", image_files: bool = False) -> tuple[Path, np.ndarray, np.ndarray]:
    """Root with ``<layout>/<name>/`` = symlinks to the real files + a generated res101.mat.

    Returns (root, labels 0-based (N,), features (N, dim) float32 as written). ``v73`` also rewrites
    att_splits.mat (and the CUB sentence file) as MATLAB v7.3 instead of linking the v5 originals.
    ``image_files`` adds the (N, 1) cell of image paths (optional in res101.mat; slow to write).
    """
    real = shared / "xlsa17" / name
    folder = tmp / layout / name
    folder.mkdir(parents=True)
    converted = {"att_splits.mat", "sent_splits_reed1024.mat"} if v73 else set()
    for f in real.iterdir():
        if f.name in converted:
            write_mat(folder / f.name, read_mat(f), v73=True)
        else:
            (folder / f.name).symlink_to(f)
    att = read_mat(real / "att_splits.mat")
    index = image_index(real)
    if index is not None:
        labels, files, _ = index
    else:
        labels = split_consistent_labels(att, att["att"].shape[1])
        files = [f"{name}/img_{i:05d}.jpg" for i in range(len(labels))]
    n = len(labels)
    rng = np.random.default_rng(0)
    features = rng.random((n, dim)).astype(np.float32)
    features[:, 0] = np.arange(n)
    features[:, 1] = labels
    res = {"features": features.T.copy(), "labels": (labels + 1).astype(np.float64)}
    if image_files:
        res["image_files"] = files
    write_mat(folder / "res101.mat", res, v73=v73)
    return tmp, labels, features
