import csv

import numpy as np
import pytest
from PIL import Image

from zslretrieval.demo.generator import (ATTRIBUTE_NAMES, VOCABULARY, choose_unseen, design_classes,
                                         generate_dataset)
from zslretrieval.errors import InvalidInputError


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_vocabulary_has_required_words():
    assert "stripes" in ATTRIBUTE_NAMES and "water" in ATTRIBUTE_NAMES
    assert len(ATTRIBUTE_NAMES) == len(set(ATTRIBUTE_NAMES)) == 16


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_design_is_orthogonal(seed):
    classes = design_classes(seed)
    assert len(classes) == 16 and len({c.name for c in classes}) == 16
    groups = list(VOCABULARY)
    # Every pair of values from two different groups occurs in exactly one class.
    for a in range(4):
        for b in range(a + 1, 4):
            pairs = [(c.attributes[a], c.attributes[b]) for c in classes]
            assert len(set(pairs)) == 16, (groups[a], groups[b])
    for c in classes:
        v = c.vector()
        assert v.sum() == 4 and [ATTRIBUTE_NAMES[i] for i in np.flatnonzero(v)] == sorted(
            c.attributes, key=ATTRIBUTE_NAMES.index)


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_demo_world_has_every_triple_once(seed):
    """The 64-class design `zslr demo` uses: an orthogonal array of strength 3, so each value is seen in
    many contexts and two classes share at most two values."""
    classes = design_classes(seed, 64)
    assert len({c.name for c in classes}) == 64
    for drop in range(4):
        triples = [tuple(a for g, a in enumerate(c.attributes) if g != drop) for c in classes]
        assert len(set(triples)) == 64, drop
    unseen = choose_unseen(classes, 4, seed)
    seen = [c for c in classes if c.name not in unseen]
    assert len(seen) == 60
    for name in unseen:
        spec = next(c for c in classes if c.name == name)
        for value in spec.attributes:  # 16 classes hold each value; at most 4 of them are unseen
            assert sum(value in s.attributes for s in seen) >= 12, (name, value)
        # its nearest seen classes differ in two values: no seen class gives it away
        assert max(len(set(spec.attributes) & set(s.attributes)) for s in seen) == 2
    values = [v for n in unseen for v in next(c for c in classes if c.name == n).attributes]
    assert len(values) == len(set(values))


def test_demo_world_is_what_generate_writes(tmp_path):
    g = generate_dataset(tmp_path, seed=2, images_per_class=2, image_size=32, n_classes=64)
    assert len(list(csv.reader(open(g.class_attributes_csv)))) == 65
    assert sorted(p.name for p in g.images_dir.iterdir()) == sorted(c.name for c in design_classes(2, 64))
    assert set(g.unseen) <= {c.name for c in g.classes} and len(g.unseen) == 4


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_unseen_are_new_combinations_of_seen_values(seed):
    classes = design_classes(seed)
    unseen = choose_unseen(classes, 4, seed)
    assert len(unseen) == 4
    seen = [c for c in classes if c.name not in unseen]
    for name in unseen:
        spec = next(c for c in classes if c.name == name)
        assert spec not in seen
        for value in spec.attributes:
            assert sum(value in s.attributes for s in seen) >= 2, (name, value)
    # Preferred choice: the unseen classes share no attribute value.
    values = [v for n in unseen for v in next(c for c in classes if c.name == n).attributes]
    assert len(values) == len(set(values))


def test_generate_is_deterministic_and_seed_dependent(tmp_path):
    a = generate_dataset(tmp_path / "a", seed=5, images_per_class=2, image_size=64)
    b = generate_dataset(tmp_path / "b", seed=5, images_per_class=2, image_size=64)
    generate_dataset(tmp_path / "c", seed=6, images_per_class=2, image_size=64)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb
    assert fa != fc
    assert a.unseen == b.unseen


def test_generated_layout_csv_and_split(tmp_path):
    g = generate_dataset(tmp_path, seed=0, images_per_class=3, image_size=96)
    rows = list(csv.reader(open(g.class_attributes_csv)))
    assert rows[0] == ["class", *ATTRIBUTE_NAMES]
    assert len(rows) == 17
    for row in rows[1:]:
        assert set(row[1:]) <= {"0", "1"} and row[1:].count("1") == 4
        folder = g.images_dir / row[0]
        imgs = sorted(folder.glob("*.jpg"))
        assert len(imgs) == 3
        with Image.open(imgs[0]) as im:
            assert im.size == (96, 96) and im.mode == "RGB"
    assert g.unseen_file.read_text().split() == g.unseen
    # Jitter: images of one class differ from each other.
    arrs = [np.asarray(Image.open(p), np.float32) for p in g.image_paths[g.unseen[0]]]
    assert np.abs(arrs[0] - arrs[1]).mean() > 5


def test_regenerate_removes_stale_files_only(tmp_path):
    generate_dataset(tmp_path, seed=0, images_per_class=3, image_size=48)
    mine = tmp_path / "notes.txt"
    mine.write_text("user file")
    g = generate_dataset(tmp_path, seed=1, images_per_class=2, image_size=48)
    folders = sorted(p.name for p in g.images_dir.iterdir() if p.is_dir())
    assert folders == sorted(c.name for c in g.classes)
    assert sum(1 for _ in g.images_dir.rglob("*.jpg")) == 32
    assert mine.read_text() == "user file"


def test_bad_arguments(tmp_path):
    with pytest.raises(InvalidInputError, match="images_per_class"):
        generate_dataset(tmp_path, images_per_class=1)
    with pytest.raises(InvalidInputError, match="image_format"):
        generate_dataset(tmp_path, image_format="gif")
    with pytest.raises(InvalidInputError, match="n_unseen"):
        choose_unseen(design_classes(0), 15)
    with pytest.raises(InvalidInputError, match=r"n_classes=32; accepted: 16, 64"):
        design_classes(0, 32)
