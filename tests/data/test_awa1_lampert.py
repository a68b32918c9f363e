"""awa1-lampert: the real AwA1 hand-crafted features with the xlsa17 AWA1 splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zslretrieval.data import load_dataset
from zslretrieval.data.awa1_lampert import FEATURE_GROUPS, hellinger, load_awa1_lampert_files
from zslretrieval.errors import DataNotFoundError, InvalidInputError

from .fakes import image_index


@pytest.fixture(scope="module")
def awa1(shared_data):
    return load_dataset("awa1-lampert", root=shared_data)


def test_shapes_and_splits(awa1, shared_data):
    assert awa1.features.shape == (30475, 8252) and awa1.features.dtype == np.float32
    assert awa1.feature_transform == "hellinger" and awa1.semantic_norm == "l2"
    assert awa1.attributes.shape == (50, 85) and awa1.attribute_names[:2] == ["black", "white"]
    unseen = set(awa1.split_classes("test_unseen").tolist())
    seen = set(awa1.split_classes("trainval").tolist())
    assert len(unseen) == 10 and len(seen) == 40 and not unseen & seen
    test_names = (shared_data / "xlsa17" / "AWA1" / "testclasses.txt").read_text().split()
    assert sorted(awa1.class_names[c] for c in unseen) == sorted(test_names)
    train, val = set(awa1.split_classes("train").tolist()), set(awa1.split_classes("val").tolist())
    assert (len(train), len(val)) == (27, 13) and not train & val and train | val == seen
    assert len(awa1.splits["train"]) + len(awa1.splits["val"]) == len(awa1.splits["trainval"]) == 19832
    assert not np.isin(awa1.splits["val"], awa1.splits["test_seen"]).any()
    labels, _, _ = image_index(shared_data / "xlsa17" / "AWA1")
    np.testing.assert_array_equal(awa1.labels, labels)


def test_hellinger_matches_reference(awa1, shared_data):
    with np.load(shared_data / "awa1_lampert" / "features.npz") as npz:
        phog = npz["phog"].astype(np.float64)
        sift = npz["sift"].astype(np.float64)
    rows = [0, 1234, 30474] + np.flatnonzero(phog.sum(1) == 0).tolist()
    offsets = dict(zip(FEATURE_GROUPS, np.cumsum([0, 2000, 2000, 2000, 2000])))
    for group, raw in (("sift", sift), ("phog", phog)):
        block = awa1.features[:, offsets[group]:offsets[group] + raw.shape[1]]
        for r in rows:
            total = raw[r].sum()
            expected = np.sqrt(raw[r] / total) if total > 0 else np.zeros(raw.shape[1])
            np.testing.assert_allclose(block[r], expected, rtol=1e-5, atol=1e-7)
    # every group of a non-empty row has unit L2 norm after L1 + sqrt
    np.testing.assert_allclose(np.linalg.norm(awa1.features[:50, :2000], axis=1), 1.0, rtol=1e-5)


def test_hellinger_hand_worked():
    counts = np.array([[1, 3], [0, 0]], dtype=np.uint16)  # second row empty: stays zero
    out = hellinger([counts, np.array([[4.0, 0.0, 0.0]] * 2, dtype=np.float16)])
    np.testing.assert_allclose(out, [[0.5, np.sqrt(3) / 2, 1, 0, 0], [0, 0, 1, 0, 0]], rtol=1e-6)
    with pytest.raises(InvalidInputError, match="negative"):
        hellinger([np.array([[1.0, -1.0]])])


def _fake_npz(path: Path, labels: np.ndarray, dim: int = 2) -> None:
    rng = np.random.default_rng(0)
    arrays = {g: rng.integers(0, 5, (len(labels), dim)).astype(np.uint16) for g in FEATURE_GROUPS}
    np.savez(path, labels=(labels + 1).astype(np.int16), **arrays)


def test_labels_must_agree_with_splits(shared_data, tmp_path):
    att_folder = shared_data / "xlsa17" / "AWA1"
    labels, _, _ = image_index(att_folder)
    _fake_npz(tmp_path / "ok.npz", labels)
    ds = load_awa1_lampert_files(tmp_path / "ok.npz", att_folder)
    assert ds.features.shape == (30475, 10)
    _fake_npz(tmp_path / "bad.npz", (labels + 1) % 50)  # labels in the wrong class order
    with pytest.raises(InvalidInputError, match="testclasses.txt lists as"):
        load_awa1_lampert_files(tmp_path / "bad.npz", att_folder)
    shuffled = np.random.default_rng(0).permutation(labels)  # rows no longer in class blocks
    _fake_npz(tmp_path / "shuffled.npz", shuffled)
    with pytest.raises(InvalidInputError, match="appear in both trainval and test_unseen"):
        load_awa1_lampert_files(tmp_path / "shuffled.npz", att_folder)
    _fake_npz(tmp_path / "short.npz", labels[:30000])
    with pytest.raises(InvalidInputError, match="features have 30000 rows"):
        load_awa1_lampert_files(tmp_path / "short.npz", att_folder)


def test_missing_files(tmp_path, shared_data):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "awa1_lampert" / "features.npz")):
        load_dataset("awa1-lampert", root=tmp_path)
    (tmp_path / "awa1_lampert").mkdir()
    (tmp_path / "awa1_lampert" / "features.npz").symlink_to(shared_data / "awa1_lampert" / "features.npz")
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "xlsa17" / "AWA1" / "att_splits.mat")):
        load_dataset("awa1-lampert", root=tmp_path)
