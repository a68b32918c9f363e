"""The xlsa17 loaders on the six real att_splits.mat files (with generated res101.mat) and on edge cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zslretrieval.data import DATASETS, load_dataset
from zslretrieval.data.matio import read_mat, write_mat
from zslretrieval.data.synthetic import make_synthetic, write_xlsa17
from zslretrieval.data.xlsa17 import load_xlsa17_folder
from zslretrieval.errors import DataNotFoundError, InvalidInputError

from .fakes import image_index, make_fake_root

# N images, C classes, A attributes, unseen classes, val rule, first attribute name (GBU paper, Table 1)
EXPECTED = {
    "APY": (15339, 32, 64, 12, "valclasses1", "a0"),
    "AWA1": (30475, 50, 85, 10, "train_loc", "black"),
    "AWA2": (37322, 50, 85, 10, "train_loc", "black"),
    "CUB": (11788, 200, 312, 50, "valclasses1", "has_bill_shape::curved_(up_or_down)"),
    "FLO": (8189, 102, 1024, 20, "train_loc", "a0"),
    "SUN": (14340, 717, 102, 72, "train_loc", "sailing/ boating"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_att_splits_load(name, fake_xlsa17_roots, shared_data):
    root, labels, features = fake_xlsa17_roots[name]
    n, c, a, n_unseen, rule, first_attr = EXPECTED[name]
    ds = load_dataset(name.lower(), root=root)
    assert ds.features.shape == (n, 4) and ds.features.dtype == np.float32
    np.testing.assert_array_equal(ds.features, features)
    np.testing.assert_array_equal(ds.labels, labels)
    assert len(ds.class_names) == c and ds.attributes.shape == (c, a) and ds.attributes.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ds.attributes, axis=1), 1.0, rtol=1e-5)
    assert ds.attribute_names[0] == first_attr and len(set(ds.attribute_names)) == a
    assert rule in ds.meta["val_split"]
    assert ds.meta["val_classes"] == [ds.class_names[c] for c in ds.split_classes("val")]
    assert ds.semantic_norm == "l2" and ds.feature_transform == "none"

    # splits are the file's 1-based locs, 0-based
    raw = read_mat(shared_data / "xlsa17" / name / "att_splits.mat")
    for split in ("trainval", "test_seen", "test_unseen"):
        np.testing.assert_array_equal(ds.splits[split], raw[f"{split}_loc"].ravel().astype(np.int64) - 1)
    tr, va, tu = (set(ds.split_classes(s).tolist()) for s in ("train", "val", "test_unseen"))
    assert not (tr & va) and not (tr & tu) and not (va & tu)
    assert tr | va == set(ds.split_classes("trainval").tolist())
    assert len(tu) == n_unseen
    # train/val never touch test images
    train_val = np.sort(np.concatenate([ds.splits["train"], ds.splits["val"]]))
    assert np.array_equal(train_val, np.sort(ds.splits["trainval"]))
    if name in ("AWA1", "AWA2", "SUN", "FLO"):
        assert np.isin(raw["train_loc"].ravel() - 1, ds.splits["test_seen"]).any()  # the file's quirk
    if name == "FLO":
        assert ds.class_names[:2] == ["class_001", "class_002"]
    else:
        assert ds.class_names == (shared_data / "xlsa17" / name / "allclasses.txt").read_text().split()
    if name in ("APY", "CUB"):
        val_names = (shared_data / "xlsa17" / name / "valclasses1.txt").read_text().split()
        assert sorted(ds.class_names[i] for i in ds.split_classes("val")) == sorted(val_names)
    if name == "CUB":
        _, files, _ = image_index(shared_data / "xlsa17" / name)
        assert ds.meta["image_files"] == files
    else:
        assert "image_files" not in ds.meta


def test_cub_maps_classes_by_name(fake_xlsa17_roots, shared_data):
    """CUB's att columns/labels follow allclasses.txt, not classes.txt; both must be matched by name."""
    cub = shared_data / "xlsa17" / "CUB"
    ds = load_dataset("cub", root=fake_xlsa17_roots["CUB"][0])
    raw_names = [ln.split()[1] for ln in (cub / "classes.txt").read_text().splitlines() if ln.strip()]
    raw = np.loadtxt(cub / "class_attribute_labels_continuous.txt")  # rows in classes.txt order
    assert ds.class_names != raw_names  # the trap is real
    moved = 0
    for pos, cls in enumerate(ds.class_names):
        row = raw[raw_names.index(cls)]
        np.testing.assert_allclose(ds.attributes[pos], row / np.linalg.norm(row), atol=1e-6)
        moved += raw_names.index(cls) != pos
    assert moved > 100
    # labels: image -> classes.txt label via the original CUB lists must name the same class
    images = dict(ln.split() for ln in (cub / "images.txt").read_text().splitlines() if ln.strip())
    by_path = {v: k for k, v in images.items()}
    img_label = dict(ln.split() for ln in (cub / "image_class_labels.txt").read_text().splitlines() if ln.strip())
    _, files, _ = image_index(cub)
    for row in range(0, len(files), 97):
        original_class = raw_names[int(img_label[by_path[files[row]]]) - 1]
        assert ds.class_names[ds.labels[row]] == original_class


def test_cub_sentences_mapped_by_name(shared_data, tmp_path):
    """extra_semantics['sent'] follows the dataset's class order even when the file's columns are permuted."""
    root, _, _ = make_fake_root(shared_data, tmp_path / "a", "CUB", dim=2)
    ds = load_dataset("cub", root=root)
    sent = read_mat(shared_data / "xlsa17" / "CUB" / "sent_splits_reed1024.mat")
    assert ds.extra_semantics["sent"].shape == (200, 1024)
    perm = np.random.default_rng(3).permutation(200)
    names = [str(n) for n in np.asarray(sent["allclasses_names"]).ravel()]
    sent_path = root / "xlsa17" / "CUB" / "sent_splits_reed1024.mat"
    sent_path.unlink()
    write_mat(sent_path, {"att": sent["att"][:, perm], "allclasses_names": [names[i] for i in perm]})
    permuted = load_dataset("cub", root=root)
    np.testing.assert_array_equal(permuted.extra_semantics["sent"], ds.extra_semantics["sent"])
    col = names.index(ds.class_names[7])
    np.testing.assert_allclose(ds.extra_semantics["sent"][7], sent["att"][:, col], rtol=1e-6)


def test_v73_reads_like_v5(shared_data, tmp_path, fake_xlsa17_roots):
    root73, _, _ = make_fake_root(shared_data, tmp_path, "CUB", v73=True)
    a = load_dataset("cub", root=fake_xlsa17_roots["CUB"][0])
    b = load_dataset("cub", root=root73)
    assert b.meta["features_format"] == "v7.3" and b.meta["att_splits_format"] == "v7.3"
    assert a.meta["features_format"] == "v5"
    for field in ("features", "labels", "attributes"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.class_names == b.class_names and a.attribute_names == b.attribute_names
    for split in a.splits:
        np.testing.assert_array_equal(a.splits[split], b.splits[split])
    np.testing.assert_array_equal(a.extra_semantics["sent"], b.extra_semantics["sent"])


def test_data_subfolder_layout(shared_data, tmp_path):
    root, labels, _ = make_fake_root(shared_data, tmp_path, "APY", layout="xlsa17/data")
    ds = load_dataset("apy", root=root)
    np.testing.assert_array_equal(ds.labels, labels)
    assert "/xlsa17/data/APY" in ds.meta["folder"]


def test_missing_features_names_expected_path(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cub", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "xlsa17" / "CUB" / "res101.mat") in msg
    assert "Xian" in msg and "att_splits.mat" in msg
    assert e.value.exit_code == 2


def test_missing_features_beside_real_splits(shared_data):
    with pytest.raises(DataNotFoundError, match=str(shared_data / "xlsa17" / "SUN" / "res101.mat")):
        load_dataset("sun", root=shared_data)


def test_missing_att_splits_names_expected_path(tmp_path):
    folder = write_xlsa17(make_synthetic(seed=0), tmp_path / "xlsa17" / "AWA1")
    (folder / "att_splits.mat").unlink()
    with pytest.raises(DataNotFoundError, match=str(folder / "att_splits.mat")):
        load_dataset("awa1", root=tmp_path)


def test_registered_names():
    for name in ("cub", "awa1", "awa2", "sun", "apy", "flo", "awa1-lampert", "synthetic"):
        assert name in DATASETS


# --- inconsistent files -------------------------------------------------------------------------------------


@pytest.fixture()
def syn_folder(tmp_path) -> tuple[Path, object]:
    ds = make_synthetic(n_classes=10, n_unseen=3, n_val=2, n_attributes=8, images_per_class=10, feature_dim=6, seed=5)
    return write_xlsa17(ds, tmp_path / "SYN"), ds


def _rewrite(path: Path, **changes) -> None:
    mat = read_mat(path)
    mat.update(changes)
    write_mat(path, mat)


def test_labels_contradicting_splits_are_rejected(syn_folder):
    folder, ds = syn_folder
    shuffled = np.random.default_rng(0).permutation(ds.labels) + 1
    _rewrite(folder / "res101.mat", labels=shuffled.astype(np.float64))
    with pytest.raises(InvalidInputError, match="appear in both trainval and test_unseen"):
        load_xlsa17_folder(folder)


def test_too_few_feature_rows_are_rejected(syn_folder):
    folder, ds = syn_folder
    mat = read_mat(folder / "res101.mat")
    keep = len(ds.labels) - 5
    _rewrite(folder / "res101.mat", features=mat["features"][:, :keep], labels=mat["labels"][:keep],
             image_files=mat["image_files"][:keep])
    with pytest.raises(InvalidInputError, match=f"features have {keep} rows"):
        load_xlsa17_folder(folder)


def test_label_out_of_range_is_rejected(syn_folder):
    folder, ds = syn_folder
    labels = ds.labels.astype(np.float64) + 1
    labels[0] = 11
    _rewrite(folder / "res101.mat", labels=labels)
    with pytest.raises(InvalidInputError, match=r"labels must be integers in 1..10"):
        load_xlsa17_folder(folder)


def test_feature_label_count_mismatch(syn_folder):
    folder, ds = syn_folder
    mat = read_mat(folder / "res101.mat")
    _rewrite(folder / "res101.mat", features=mat["features"][:, :-1])
    with pytest.raises(InvalidInputError, match=r"features have shape \(6, 99\) but there are 100 labels"):
        load_xlsa17_folder(folder)


def test_wrong_vocabulary_length(syn_folder):
    folder, _ = syn_folder
    (folder / "attribute_names.txt").write_text("a\nb\n")
    with pytest.raises(InvalidInputError, match="2 attribute names but att_splits.mat has 8"):
        load_xlsa17_folder(folder)


def test_missing_variable_and_class_list_mismatch(syn_folder):
    folder, _ = syn_folder
    (folder / "allclasses.txt").write_text("\n".join(f"x{i}" for i in range(10)))
    with pytest.raises(InvalidInputError, match="disagrees with allclasses_names"):
        load_xlsa17_folder(folder)
    mat = read_mat(folder / "att_splits.mat")
    del mat["test_unseen_loc"]
    write_mat(folder / "att_splits.mat", mat)
    with pytest.raises(InvalidInputError, match="missing variable.*test_unseen_loc"):
        load_xlsa17_folder(folder)


def test_val_split_rules(tmp_path):
    ds = make_synthetic(n_classes=20, n_unseen=5, n_val=3, n_attributes=10, images_per_class=6, feature_dim=4, seed=2)
    by_locs = load_xlsa17_folder(write_xlsa17(ds, tmp_path / "a"))
    by_lists = load_xlsa17_folder(write_xlsa17(ds, tmp_path / "b", train_val_locs=False))
    assert "train_loc" in by_locs.meta["val_split"] and "valclasses1" in by_lists.meta["val_split"]
    for split in ("train", "val"):
        np.testing.assert_array_equal(by_locs.splits[split], ds.splits[split])
        np.testing.assert_array_equal(by_lists.splits[split], ds.splits[split])
    folder = write_xlsa17(ds, tmp_path / "c", train_val_locs=False, class_lists=False)
    s0, s0b, s1 = (load_xlsa17_folder(folder, seed=s) for s in (0, 0, 1))
    assert "seeded" in s0.meta["val_split"]
    np.testing.assert_array_equal(s0.splits["val"], s0b.splits["val"])  # deterministic
    seen = set(ds.split_classes("trainval").tolist())
    vals = []
    for d in (s0, s1):
        va, tr = set(d.split_classes("val").tolist()), set(d.split_classes("train").tolist())
        assert len(va) == 3 and not (va & tr) and va | tr == seen  # 20% of 15 trainval classes
        vals.append(va)
    draws = {frozenset(load_xlsa17_folder(folder, seed=s).split_classes("val").tolist()) for s in range(2, 6)}
    assert len(draws | {frozenset(v) for v in vals}) > 1  # the seed matters
