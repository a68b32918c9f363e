"""The generated benchmark: structure, determinism, xlsa17 round trip, learnability."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.data import load_dataset
from zslretrieval.data.synthetic import make_synthetic, write_xlsa17
from zslretrieval.data.xlsa17 import load_xlsa17_folder
from zslretrieval.errors import InvalidInputError


def _assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.dtype == b.features.dtype == np.float32
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.attributes, b.attributes)
    assert a.class_names == b.class_names and a.attribute_names == b.attribute_names
    assert set(a.splits) == set(b.splits)
    for split in a.splits:
        np.testing.assert_array_equal(a.splits[split], b.splits[split])
    assert a.meta["image_files"] == b.meta["image_files"]


def test_structure_and_determinism(tmp_path):
    ds = load_dataset("synthetic", root=tmp_path / "nothing-here", seed=3)
    assert ds.features.shape == (24 * 50, 96) and ds.features.dtype == np.float32
    assert ds.attributes.shape == (24, 32) and len(ds.class_names) == 24
    np.testing.assert_allclose(np.linalg.norm(ds.attributes, axis=1), 1.0, rtol=1e-6)
    assert len(np.unique(ds.attributes, axis=0)) == 24
    rows = np.concatenate([ds.splits[s] for s in ("trainval", "test_seen", "test_unseen")])
    assert np.array_equal(np.sort(rows), np.arange(len(ds.labels)))  # a partition of all rows
    tr, va, tu = (set(ds.split_classes(s).tolist()) for s in ("train", "val", "test_unseen"))
    assert (len(tr), len(va), len(tu)) == (14, 4, 6) and not (tr & va) and not (tu & (tr | va))
    assert set(ds.split_classes("test_seen").tolist()) == tr | va
    assert np.array_equal(np.sort(np.concatenate([ds.splits["train"], ds.splits["val"]])), ds.splits["trainval"])
    assert len(ds.splits["test_seen"]) == 18 * 10
    _assert_same(ds, make_synthetic(seed=3))
    other = make_synthetic(seed=4)
    assert not np.array_equal(other.features, ds.features)


def test_size_parameters():
    ds = make_synthetic(n_classes=8, n_unseen=2, n_val=2, n_attributes=5, images_per_class=5, feature_dim=3, seed=1)
    assert ds.features.shape == (40, 3) and ds.attributes.shape == (8, 5)
    assert len(ds.split_classes("test_unseen")) == 2 and len(ds.split_classes("val")) == 2
    with pytest.raises(InvalidInputError, match="leave 0 training classes"):
        make_synthetic(n_classes=5, n_unseen=3, n_val=2)
    with pytest.raises(InvalidInputError, match="3 binary attributes cannot give 10 distinct classes"):
        make_synthetic(n_classes=10, n_unseen=2, n_val=2, n_attributes=3)


@pytest.mark.parametrize("v73", [False, True])
def test_xlsa17_round_trip(tmp_path, v73):
    ds = make_synthetic(seed=7)
    folder = write_xlsa17(ds, tmp_path / "SYN", v73=v73)
    assert {p.name for p in folder.iterdir()} >= {"res101.mat", "att_splits.mat", "allclasses.txt",
                                                   "trainclasses1.txt", "valclasses1.txt", "attribute_names.txt"}
    back = load_xlsa17_folder(folder, name="synthetic")
    _assert_same(ds, back)
    assert back.meta["features_format"] == ("v7.3" if v73 else "v5")


def test_v5_and_v73_read_identically(tmp_path):
    ds = make_synthetic(n_classes=12, n_unseen=3, n_val=2, images_per_class=8, seed=11)
    a = load_xlsa17_folder(write_xlsa17(ds, tmp_path / "v5", train_val_locs=False))
    b = load_xlsa17_folder(write_xlsa17(ds, tmp_path / "v73", v73=True, train_val_locs=False))
    _assert_same(a, b)
    assert a.meta["val_split"] == b.meta["val_split"]


def _ridge_unseen_top1(ds, attributes: np.ndarray, lam: float = 1.0) -> float:
    """Closed-form ridge map from class attributes to seen class-mean features; nearest unseen prototype."""
    tv = ds.splits["trainval"]
    seen, unseen = ds.split_classes("trainval"), ds.split_classes("test_unseen")
    means = np.stack([ds.features[tv][ds.labels[tv] == c].mean(0) for c in seen])
    s = np.hstack([attributes[seen], np.ones((len(seen), 1))])
    w = np.linalg.solve(s.T @ s + lam * np.eye(s.shape[1]), s.T @ means)
    protos = np.hstack([attributes[unseen], np.ones((len(unseen), 1))]) @ w
    x, y = ds.subset("test_unseen")
    pred = unseen[((x[:, None, :] - protos[None]) ** 2).sum(-1).argmin(1)]
    return float(np.mean([np.mean(pred[y == c] == c) for c in unseen]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learnable_from_attributes(seed):
    ds = make_synthetic(seed=seed)
    chance = 1 / len(ds.split_classes("test_unseen"))
    assert _ridge_unseen_top1(ds, ds.attributes) > 3 * chance
    # the signal is the class/attribute pairing: with it shuffled the same model is near chance
    rng = np.random.default_rng(100 + seed)
    shuffled = [_ridge_unseen_top1(ds, ds.attributes[rng.permutation(len(ds.attributes))]) for _ in range(8)]
    assert np.mean(shuffled) < 1.6 * chance
