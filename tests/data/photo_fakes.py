"""A tiny CUB-200-2011 in the release's layout: a data root with photos, the xlsa17 files and an image index.

    root/CUB_200_2011/images/<NNN.Class>/<Class>_<k>.jpg      tiny JPEGs, one colour per class
    root/CUB_200_2011/{images.txt, image_class_labels.txt, classes.txt}
    root/xlsa17/CUB/{att_splits.mat, image_index.tsv, trainclasses1.txt, valclasses1.txt, ...}

As in the real benchmark, ``allclasses_names`` (the order of att columns and labels) is *not* the order
of ``classes.txt``, and the image index lists the sorted relative paths.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

CLASSES = ["001.Alpha_bird", "002.Beta_bird", "003.Gamma_bird", "004.Delta_bird", "005.Eps_bird", "006.Zeta_bird"]
# att column order: a permutation of classes.txt, like xlsa17's allclasses.txt
ALLCLASSES = ["003.Gamma_bird", "001.Alpha_bird", "006.Zeta_bird", "002.Beta_bird", "005.Eps_bird", "004.Delta_bird"]
UNSEEN = ["005.Eps_bird", "006.Zeta_bird"]
VAL = ["004.Delta_bird"]
PER_CLASS = 4
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


@dataclass
class FakeCub:
    root: Path
    images_dir: Path
    xlsa17: Path
    rel_paths: list[str]          # image_index order (sorted relative paths)
    labels: np.ndarray            # (N,) 0-based, allclasses order


def photo_colour(rel: str) -> np.ndarray:
    """The RGB (0..1) each test photo is painted with: its class colour, nudged by its number."""
    cls, fname = rel.split("/")
    k = int(fname.rsplit("_", 1)[1].split(".")[0])
    r, g, b = COLOURS[CLASSES.index(cls)]
    return np.array([r, g, min(255, b + 10 * k)], np.float32) / 255


def make_fake_cub(tmp: Path, *, n_attr: int = 5) -> FakeCub:
    root = tmp / "data"
    images = root / "CUB_200_2011" / "images"
    rel = []
    for cls in CLASSES:
        (images / cls).mkdir(parents=True)
        for k in range(PER_CLASS):
            name = f"{cls}/{cls.split('.')[1]}_{k}.jpg"
            colour = tuple(int(round(v * 255)) for v in photo_colour(name))
            Image.new("RGB", (40, 32), colour).save(images / name, quality=95)
            rel.append(name)
    rel.sort()
    # the release's lists, in its own (unsorted) order
    cub = root / "CUB_200_2011"
    order = rel[::-1]
    (cub / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(order)))
    (cub / "image_class_labels.txt").write_text(
        "".join(f"{i + 1} {CLASSES.index(p.split('/')[0]) + 1}\n" for i, p in enumerate(order)))
    (cub / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))

    labels = np.array([ALLCLASSES.index(p.split("/")[0]) for p in rel], np.int64)
    n = len(rel)
    # seen classes: 3 of 4 photos trainval, 1 test_seen; unseen: all test_unseen
    split = []
    for i, p in enumerate(rel):
        cls = p.split("/")[0]
        if cls in UNSEEN:
            split.append("test_unseen")
        else:
            split.append("test_seen" if p.endswith("_0.jpg") else "trainval")
    split = np.array(split)
    xl = root / "xlsa17" / "CUB"
    xl.mkdir(parents=True)
    rng = np.random.default_rng(0)
    att = rng.random((n_attr, len(ALLCLASSES))) + 0.1
    att /= np.linalg.norm(att, axis=0, keepdims=True)
    names = np.empty((len(ALLCLASSES), 1), dtype=object)
    for i, c in enumerate(ALLCLASSES):
        names[i, 0] = c
    locs = {f"{s}_loc": (np.flatnonzero(split == s) + 1).astype(np.float64).reshape(-1, 1)
            for s in ("trainval", "test_seen", "test_unseen")}
    scipy.io.savemat(xl / "att_splits.mat", {"att": att, "original_att": att * 100, "allclasses_names": names, **locs})
    (xl / "allclasses.txt").write_text("".join(c + "\n" for c in ALLCLASSES))
    (xl / "testclasses.txt").write_text("".join(c + "\n" for c in UNSEEN))
    seen = [c for c in ALLCLASSES if c not in UNSEEN]
    (xl / "trainvalclasses.txt").write_text("".join(c + "\n" for c in seen))
    (xl / "valclasses1.txt").write_text("".join(c + "\n" for c in VAL))
    (xl / "trainclasses1.txt").write_text("".join(c + "\n" for c in seen if c not in VAL))
    write_index(xl / "image_index.tsv", rel, labels, split)
    return FakeCub(root, images, xl, rel, labels)


def write_index(path: Path, rel: list[str], labels: np.ndarray, split) -> None:
    lines = ["index_1based\timage\tlabel_1based\tclass\tsplit\n"]
    lines += [f"{i + 1}\t{p}\t{labels[i] + 1}\t{ALLCLASSES[labels[i]]}\t{split[i]}\n" for i, p in enumerate(rel)]
    path.write_text("".join(lines))


class ColourFeatures:
    """(n, 3) float32: the mean colour of each photo. Counts calls and files to prove the cache works."""

    weights_id = "test:colour-mean"

    def __init__(self):
        self.calls, self.seen = 0, 0

    def __call__(self, paths):
        self.calls += 1
        self.seen += len(paths)
        feats, ok, failures = [], [], []
        for p in paths:
            try:
                with Image.open(p) as im:
                    feats.append(np.asarray(im.convert("RGB"), np.float32).mean(axis=(0, 1)) / 255)
                ok.append(p)
            except OSError as e:
                failures.append((p, f"{type(e).__name__}: {e}"))
        return np.array(feats, np.float32).reshape(len(ok), 3), ok, failures
