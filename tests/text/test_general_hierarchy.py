"""WordNet hierarchy anchors (text/general/hierarchy.py): a tiny hand-made WordNet, the real one, and none."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.text import general as gen
from zslretrieval.text.general import hierarchy, lexicon

# offset, words, pointers (symbol, target): a WordNet 3.0 data.noun in miniature
SYNSETS = [
    (100, ["entity"], []),
    (200, ["bird"], [("@", 100)]),
    (300, ["piciform_bird"], [("@", 200)]),
    (301, ["jacamar"], [("@", 300)]),                   # class 0
    (302, ["toucan"], [("@", 300)]),                    # class 1
    (303, ["woodpecker", "peckerwood"], [("@", 300)]),
    (304, ["downy_woodpecker"], [("@", 303)]),
    (400, ["passerine"], [("@", 200)]),
    (401, ["finch"], [("@", 400)]),                     # class 2
    (402, ["wren"], [("@", 400)]),
    (403, ["house_wren"], [("@", 402)]),
    (500, ["Wren", "Christopher_Wren"], [("@i", 600)]),  # an instance: a person
    (600, ["architect"], [("@", 100)]),
    (700, ["cup"], [("@", 100)]),                       # class 3
    (800, ["ostrich"], [("@", 200)]),                   # class 4
]
CLASSES = (301, 302, 401, 700, 800)


def _write_wordnet(folder):
    folder.mkdir()
    lines = ["  1 This software and database is being provided ... (licence header)"]
    senses: dict[str, list[int]] = {}
    for off, words, ptrs in SYNSETS:
        ws = " ".join(f"{w} 0" for w in words)
        ps = " ".join(f"{sym} {t:08d} n 0000" for sym, t in ptrs)
        lines.append(f"{off:08d} 03 n {len(words):02x} {ws} {len(ptrs):03d} {ps} | gloss of {words[0]}  ")
        for w in words:
            senses.setdefault(w.lower(), []).append(off)
    (folder / "data.noun").write_text("\n".join(lines) + "\n")
    # the architect first, as WordNet lists "wren"
    senses["wren"] = [500, 402]
    idx = ["  1 licence header"] + [f"{k} n {len(v)} 1 @ {len(v)} 0 " + " ".join(f"{o:08d}" for o in v)
                                    for k, v in sorted(senses.items())]
    (folder / "index.noun").write_text("\n".join(idx) + "\n")


@pytest.fixture
def tiny_wordnet(tmp_path, monkeypatch):
    _write_wordnet(tmp_path / "wn")
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "wn"))
    monkeypatch.setattr(hierarchy, "imagenet_offsets", lambda: CLASSES)
    hierarchy._load.cache_clear()
    hierarchy._class_ancestors.cache_clear()
    yield
    hierarchy._load.cache_clear()
    hierarchy._class_ancestors.cache_clear()


def test_tree_anchors_hand_worked(tiny_wordnet):
    nouns = hierarchy.noun_hierarchy()
    assert nouns.senses["wren"] == (402,)                  # the instance (the architect) is left out
    assert nouns.ancestors(403) == {403: 0, 402: 1, 400: 2, 200: 3, 100: 4}
    assert 303 in nouns.categories and 402 in nouns.categories and 403 not in nouns.categories
    assert hierarchy.tree_anchors("woodpecker") == ([0, 1], [1.0, 1.0], "woodpecker -> piciform bird")
    # the head noun where WordNet lacks the whole name; case, hyphens and plurals as for every name
    assert hierarchy.tree_anchors("Red-bellied Woodpeckers") == ([0, 1], [1.0, 1.0], "woodpecker -> piciform bird")
    assert hierarchy.tree_anchors("wren") == ([2], [1.0], "wren -> passerine")
    # only categories are anchored: a kind with none under it (a leaf) is not, even an ImageNet class
    assert hierarchy.tree_anchors("House Wren") == ([], [], None)
    assert hierarchy.tree_anchors("Downy Woodpecker") == ([], [], None)
    assert hierarchy.tree_anchors("toucan") == ([], [], None)
    # a category that is an ImageNet class: itself first (distance 0)
    # known classes only; how far up a name may climb; weights decay with tree distance
    assert hierarchy.tree_anchors("wren", known=[0, 4], max_up=1) == ([], [], None)
    assert hierarchy.tree_anchors("wren", known=[0, 4], decay=0.5, max_up=2) == ([0, 4], [0.5, 1.0], "wren -> bird")
    assert hierarchy.tree_anchors("wren", known=[0, 4], decay=1.0) == ([0, 4], [1.0, 1.0], "wren -> bird")
    assert hierarchy.tree_anchors("a striped animal in the water") == ([], [], None)
    # "bird" reaches the classes under it, the ostrich (1 step down) weighing most
    assert hierarchy.tree_anchors("bird", decay=0.5) == ([0, 1, 2, 4], [0.5, 0.5, 0.5, 1.0], "bird")
    assert hierarchy.tree_anchors("architect") == ([], [], None)        # a leaf


def test_category_words_hand_worked(tiny_wordnet):
    # categories with classes among rows under them and none among known: what "woodpecker" is to ImageNet
    assert hierarchy.category_words(known=[3, 4], rows=[0, 1, 2]) == {"passerine": {2}, "piciform bird": {0, 1}}
    assert hierarchy.category_words(known=[0, 3], rows=[1, 2]) == {"passerine": {2}}
    assert hierarchy.category_words(known=[0, 1, 2, 3, 4], rows=[1]) == {}


def test_apply_anchors_with_the_tree_weights_the_relatives(tiny_wordnet, monkeypatch):
    monkeypatch.setattr(lexicon, "imagenet_lemmas", lambda: (("jacamar",), ("toucan",), ("finch",), ("cup",),
                                                              ("ostrich",)))
    protos = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0], [0, 0.6, 0.8]])
    pred = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [1.0, 0, 0]], np.float32)
    out, found = gen.apply_anchors(pred, ["wren", "toucan", "woodpecker"], protos, 0.5, known=[0, 4],
                                   tree=(0.25, 0.5, None))
    # toucan, no known class here, is a leaf: not anchored; woodpecker reaches its known relative
    assert found == [([0, 4], "hierarchy"), ([], None), ([0], "hierarchy")]
    anchor = gen._unit((0.5 * protos[0] + 1.0 * protos[4]) / 1.5)
    np.testing.assert_allclose(out[0], gen._unit(0.75 * np.array([0, 0, 1.0]) + 0.25 * anchor), atol=1e-6)
    # an exact name keeps its exact anchor; the tree only serves names with neither kind
    out, found = gen.apply_anchors(pred, ["toucan"], protos, 0.5, tree=(0.25, 0.5, None))
    assert found == [([1], "exact")]
    np.testing.assert_allclose(out[0], protos[1], atol=1e-6)
    # share 0 or no setting: as before
    for tree in (None, (0.0, 0.5, None)):
        out, found = gen.apply_anchors(pred, ["wren"], protos, 0.5, tree=tree)
        assert found == [([], None)]
        np.testing.assert_array_equal(out[0], pred[0])


def test_without_wordnet_nothing_changes(tmp_path, monkeypatch):
    """No wordnet-base installed: no hierarchy anchors, queries as they were without them."""
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path / "absent"))
    hierarchy._load.cache_clear()
    try:
        assert hierarchy.noun_hierarchy() is None
        assert hierarchy.tree_anchors("woodpecker") == ([], [], None)
        protos = np.eye(1000, 4, dtype=np.float32)
        pred = np.ones((2, 4), np.float32) / 2
        out, found = gen.apply_anchors(pred, ["woodpecker", "kingfisher"], protos, 0.5, tree=(0.75, 0.5, None))
        assert found == [([], None), ([], None)]
        np.testing.assert_array_equal(out, pred)
        model = gen.GeneralModel.load(gen.shipped_model_path("efficientnet-lite0"), source="shipped")
        assert model.anchors(["woodpecker"]) == [{}]
    finally:
        hierarchy._load.cache_clear()


real = pytest.mark.skipif(not (hierarchy.wordnet_dir() / "data.noun").is_file(),
                          reason="WordNet 3.0 (apt-get install wordnet-base) not installed")


@real
def test_real_wordnet_places_cub_names_among_imagenet_classes():
    cats = gen.imagenet_categories()

    def names(text):
        classes, _, via = hierarchy.tree_anchors(text)
        return [cats[i] for i in classes], via
    assert names("Red bellied Woodpecker") == (["jacamar", "toucan"], "woodpecker -> piciform bird")
    assert names("kingfisher") == (["bee eater", "hornbill"], "kingfisher -> coraciiform bird")
    assert names("Belted Kingfisher") == ([], None)                  # in WordNet, a leaf: told apart, not averaged
    assert names("cormorant") == ([], None)          # WordNet's cormorant is one species, Phalacrocorax carbo
    assert names("wren")[1] == "wren -> passerine"                 # not the architect Christopher Wren
    assert names("Sooty Albatross") == (["albatross"], "albatross")  # the bird, not "a source of frustration"
    assert names("raccoon")[1] == "raccoon -> procyonid"              # the animal, not its fur
    # the ImageNet classes are WordNet offsets: a category reaches its classes from distance 0
    assert names("shark") == (["great white shark", "tiger shark", "hammerhead"], "shark")


@real
def test_a_model_with_hierarchy_anchors_reports_and_applies_them():
    """The shipped model with a hierarchy setting (val chose share 0 for it: see the build test) anchors a
    category ImageNet lacks, reports it, and leaves exact names and leaves as they were."""
    model = gen.GeneralModel.load(gen.shipped_model_path("efficientnet-lite0"), source="shipped")
    plain = model.embed_texts(["woodpecker", "tiger", "Belted Kingfisher"])
    model.hparams["tree"] = [0.25, 1.0, 1]
    assert model.tree_setting == (0.25, 1.0, 1)
    got = model.anchors(["woodpecker", "tiger", "Belted Kingfisher"])
    assert got[0] == {"rule": "hierarchy", "weight": 0.25, "classes": ["jacamar", "toucan"],
                      "via": "woodpecker -> piciform bird"}
    assert got[1]["rule"] == "exact" and got[2] == {}
    tree = model.embed_texts(["woodpecker", "tiger", "Belted Kingfisher"])
    protos = model.known_protos[[gen.imagenet_categories().index(c) for c in ("jacamar", "toucan")]]
    want = gen._unit(0.75 * plain[0].astype(np.float64) + 0.25 * gen._unit(protos.astype(np.float64).mean(0)))
    np.testing.assert_allclose(tree[0], want, atol=1e-5)
    np.testing.assert_array_equal(tree[1:], plain[1:])


@real
def test_the_build_chooses_hierarchy_anchors_on_val_categories(general_root):
    """Step 8: share 0 first; the chosen row has the best val mAP among rows that keep the plain val
    names' top-1; the model deploys exactly that row's settings."""
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    rows, best = m.selection["hierarchy"], m.selection["best"]["hierarchy"]
    assert rows[0]["share"] == 0.0 and rows[0]["val_tree_words"] == 0 and rows[0]["val_tree_names"] == 0
    assert rows[0]["val_queries"] > 50            # WordNet categories with val classes and no train class under them
    assert any(r["val_tree_words"] > 0 for r in rows[1:])
    ok = [r for r in rows if r["tree_ok"]]
    assert all(r["val_leaf_top1"] >= rows[0]["val_leaf_top1"] for r in ok)
    assert best == max(ok, key=lambda r: r["val_map"])
    assert m.hparams["tree"] == [best["share"], best["decay"], best["max_up"]]
    assert m.tree_setting == (None if not best["share"] else (best["share"], best["decay"], best["max_up"]))
