"""xlsa17 benchmarks from their photos: checked order, cache reuse, refusals (tiny generated CUB)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zslretrieval.data import load_dataset
from zslretrieval.data.matio import write_mat
from zslretrieval.data.photo_features import check_index, read_image_index
from zslretrieval.data.xlsa17 import PHOTO_BACKBONES, load_xlsa17, read_att_splits
from zslretrieval.errors import DataNotFoundError, InvalidInputError

from .photo_fakes import ALLCLASSES, ColourFeatures, make_fake_cub, photo_colour, write_index

# CUB's photos go through the backbone chosen for it on val classes unless one is named
CUB_BACKBONE = PHOTO_BACKBONES["CUB"]
OTHER_BACKBONE = "efficientnet-lite0" if CUB_BACKBONE != "efficientnet-lite0" else "efficientnet-lite2"


@pytest.fixture
def cub(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    return make_fake_cub(tmp_path)


def _load(g, fn, **kw):
    return load_xlsa17(g.root, "CUB", name="cub", feature_fn=fn, progress=False, **kw)


def _no_backbone(paths):
    pytest.fail(f"backbone pass over {len(paths)} photos; expected every feature from the cache")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_features_follow_the_index_order_with_its_labels(cub):
    fn = ColourFeatures()
    ds = _load(cub, fn)
    assert ds.features.shape == (24, 3)
    # row i is the photo on line i of image_index.tsv (sorted paths), not the release's images.txt order
    np.testing.assert_allclose(ds.features, np.stack([photo_colour(p) for p in cub.rel_paths]), atol=0.02)
    np.testing.assert_array_equal(ds.labels, cub.labels)
    assert ds.class_names == ALLCLASSES
    # the xlsa17 proposed split of att_splits.mat, val = GBU class split 1
    assert {ds.class_names[c] for c in ds.split_classes("test_unseen")} == {"005.Eps_bird", "006.Zeta_bird"}
    assert {ds.class_names[c] for c in ds.split_classes("val")} == {"004.Delta_bird"}
    assert len(ds.splits["trainval"]) == 12 and len(ds.splits["test_seen"]) == 4
    info = ds.meta["features"]
    assert info["source"] == "photos" and info["backbone"] == CUB_BACKBONE
    assert info["weights_id"] == "test:colour-mean" and info["folder"] == str(cub.images_dir)
    assert info["n_extracted"] == 24 and str(cub.root / "CUB_200_2011") in info["labels_checked_against"]
    assert ds.meta["feature_source"] == f"{CUB_BACKBONE} (test:colour-mean) on {cub.images_dir}"


def test_second_load_does_no_backbone_pass_and_cache_stays_out_of_the_photos(cub, tmp_path):
    before = _files(cub.images_dir)
    first = _load(cub, ColourFeatures())
    again = _load(cub, _no_backbone)
    np.testing.assert_array_equal(again.features, first.features)
    assert again.meta["features"]["n_extracted"] == 0
    assert again.meta["features"]["weights_id"] == "test:colour-mean"  # read back from the cache
    assert _files(cub.images_dir) == before
    cache = Path(again.meta["features"]["cache"])
    assert cache.is_file() and cache.is_relative_to(tmp_path / "cache" / "features")
    # another backbone is another cache entry, never a mix
    other = ColourFeatures()
    _load(cub, other, backbone=OTHER_BACKBONE)
    assert other.seen == 24


def test_without_zslr_cache_the_cache_goes_under_the_data_root(cub, monkeypatch):
    monkeypatch.delenv("ZSLR_CACHE")
    ds = _load(cub, ColourFeatures())
    assert Path(ds.meta["features"]["cache"]).is_relative_to(cub.root / "cache" / "features")


def test_missing_photo_folder_names_it_and_how_to_get_it(cub, tmp_path):
    empty = tmp_path / "empty"
    (empty / "xlsa17").mkdir(parents=True)
    (empty / "xlsa17" / "CUB").symlink_to(cub.xlsa17)
    with pytest.raises(DataNotFoundError) as e:
        load_xlsa17(empty, "CUB", name="cub", feature_fn=_no_backbone)
    msg = str(e.value)
    assert e.value.exit_code == 2
    assert str(empty / "CUB_200_2011" / "images") in msg and "get-cub.sh" in msg and "res101.mat" in msg
    with pytest.raises(DataNotFoundError, match="nowhere"):
        _load(cub, _no_backbone, images=tmp_path / "nowhere")


def test_a_missing_listed_photo_is_refused_by_name(cub):
    (cub.images_dir / cub.rel_paths[5]).unlink()
    with pytest.raises(DataNotFoundError, match=cub.rel_paths[5].split("/")[1]):
        _load(cub, ColourFeatures())


def test_undecodable_photo_is_named_and_refused_the_rest_cached(cub):
    bad = cub.images_dir / cub.rel_paths[7]
    bad.write_bytes(b"not a jpeg at all")
    fn = ColourFeatures()
    with pytest.raises(InvalidInputError) as e:
        _load(cub, fn)
    assert str(bad) in str(e.value) and e.value.exit_code == 2
    # fixing the photo costs one extraction, not 24
    Image.new("RGB", (40, 32), (1, 2, 3)).save(bad)
    fixed = ColourFeatures()
    ds = _load(cub, fixed)
    assert fixed.seen == 1 and ds.features.shape == (24, 3)


def test_index_that_disagrees_with_the_labels_or_splits_is_refused(cub):
    index = read_image_index(cub.xlsa17 / "image_index.tsv")
    split = list(index.splits)
    # a class swapped between two rows: labels no longer match allclasses_names
    labels = cub.labels.copy()
    labels[[0, 20]] = labels[[20, 0]]
    write_index(cub.xlsa17 / "image_index.tsv", cub.rel_paths, labels, split)
    with pytest.raises(InvalidInputError, match="outside their class's folder|disagree"):
        _load(cub, _no_backbone)
    # a row in another split than the *_loc arrays put it
    split2 = list(split)
    split2[1] = "test_seen" if split2[1] == "trainval" else "trainval"
    write_index(cub.xlsa17 / "image_index.tsv", cub.rel_paths, cub.labels, split2)
    with pytest.raises(InvalidInputError, match="another split"):
        _load(cub, _no_backbone)


def test_release_labels_must_agree_with_the_index(cub):
    write_index(cub.xlsa17 / "image_index.tsv", cub.rel_paths, cub.labels,
                read_image_index(cub.xlsa17 / "image_index.tsv").splits)
    labels_file = cub.root / "CUB_200_2011" / "image_class_labels.txt"
    lines = labels_file.read_text().splitlines()
    img_id, cls = lines[0].split()
    lines[0] = f"{img_id} {int(cls) % 6 + 1}"
    labels_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match="image_class_labels.txt"):
        _load(cub, _no_backbone)


def test_res101_mat_wins_unless_photos_are_asked_for(cub):
    n = len(cub.rel_paths)
    feats = np.random.default_rng(0).random((n, 7)).astype(np.float32)
    write_mat(cub.xlsa17 / "res101.mat", {"features": feats.T.copy(), "labels": (cub.labels + 1).astype(np.float64)})
    ds = _load(cub, _no_backbone)
    assert ds.features.shape == (n, 7) and ds.meta["features"]["source"] == "res101.mat"
    assert "res101.mat" in ds.meta["feature_source"]
    photos = _load(cub, ColourFeatures(), images=cub.images_dir)
    assert photos.features.shape == (n, 3) and photos.meta["features"]["source"] == "photos"


def test_load_dataset_passes_photo_options_only_to_benchmarks_with_photos(cub, tmp_path):
    with pytest.raises(InvalidInputError, match="ships its own features"):
        load_dataset("awa1-lampert", tmp_path, images=cub.images_dir)


@pytest.mark.parametrize("name", ["CUB", "AWA2", "SUN"])
def test_real_image_indexes_agree_with_att_splits(shared_data, name):
    folder = shared_data / "xlsa17" / name
    att = read_att_splits(folder)
    check_index(name, read_image_index(folder / "image_index.tsv"), att.class_names, att.locs)


@pytest.mark.parametrize("name", ["AWA1", "APY"])
def test_benchmarks_whose_order_cannot_be_checked_are_refused(shared_data, name):
    folder = shared_data / "xlsa17" / name
    att = read_att_splits(folder)
    with pytest.raises(InvalidInputError, match="cannot"):
        check_index(name, read_image_index(folder / "image_index.tsv"), att.class_names, att.locs)


def test_cli_eval_and_train_from_photos_reuse_the_cache(cub, tmp_path, monkeypatch):
    """``zslr eval --dataset cub`` with photos and no res101.mat; the second run and ``zslr train`` read the cache."""
    from click.testing import CliRunner

    from zslretrieval.cli import cli
    from zslretrieval.data import photo_features

    fns: list[ColourFeatures] = []

    def fake_backbone(backbone, device="auto", progress=False):
        fns.append(ColourFeatures())
        return fns[-1]

    monkeypatch.setattr(photo_features, "backbone_feature_fn", fake_backbone)
    monkeypatch.setenv("ZSLR_DATA", str(cub.root))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["eval", "--dataset", "cub", "--model", "eszsl", "--metric", "top1", "--no-engine"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert f"{CUB_BACKBONE} (test:colour-mean) on {cub.images_dir}" in first.output
    assert "24 of 24 extracted" in first.output and fns[-1].seen == 24
    second = runner.invoke(cli, args + ["--json"])
    assert second.exit_code == 0, second.output
    import json
    report = json.loads(second.output.strip().splitlines()[-1])
    assert report["features"]["n_extracted"] == 0 and report["features"]["folder"] == str(cub.images_dir)
    assert all(fn.seen == 0 for fn in fns[1:])
    train = runner.invoke(cli, ["train", "--dataset", "cub", "--model", "eszsl", "--out", str(tmp_path / "m.pt")])
    assert train.exit_code == 0, train.output
    assert "0 of 24 extracted" in train.output and all(fn.seen == 0 for fn in fns[1:])
    card = json.loads((tmp_path / "m.pt.card.json").read_text())
    assert card["feature_source"] == f"{CUB_BACKBONE} (test:colour-mean) on {cub.images_dir}"
    # no photos and no res101.mat: exit 2 naming the folder and the script
    monkeypatch.setenv("ZSLR_DATA", str(tmp_path / "elsewhere"))
    gone = runner.invoke(cli, args)
    assert gone.exit_code == 2 and "CUB_200_2011/images" in gone.output and "get-cub.sh" in gone.output


def test_features_of_other_weights_are_recomputed_not_mixed(cub):
    _load(cub, ColourFeatures())
    (cub.images_dir / cub.rel_paths[0]).unlink()
    Image.new("RGB", (40, 32), (9, 9, 9)).save(cub.images_dir / cub.rel_paths[0])  # one new photo -> backbone runs

    class Retrained(ColourFeatures):
        weights_id = "test:other-weights"

    fn = Retrained()
    ds = _load(cub, fn)
    assert fn.seen == 24 and ds.meta["features"]["weights_id"] == "test:other-weights"


def test_awa2_photos_are_found_in_the_release_layout_and_checked_for_completeness(shared_data, tmp_path, monkeypatch):
    """AWA2 goes through the same path: its release folder is found under the root, its real index checked,
    and a partial photo set (the 30 shared photos) is refused before any backbone pass, naming what is missing."""
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "xlsa17").mkdir()
    (tmp_path / "xlsa17" / "AWA2").symlink_to(shared_data / "xlsa17" / "AWA2")
    (tmp_path / "Animals_with_Attributes2").mkdir()
    (tmp_path / "Animals_with_Attributes2" / "JPEGImages").symlink_to(shared_data / "photos" / "awa2" / "JPEGImages")
    with pytest.raises(DataNotFoundError) as e:
        load_xlsa17(tmp_path, "AWA2", name="awa2", feature_fn=_no_backbone)
    assert "of the 37322 photos" in str(e.value) and "Animals_with_Attributes2/JPEGImages" in str(e.value)
