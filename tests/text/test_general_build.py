"""The build protocol (text/general/build.py): every choice made on val ImageNet classes, test only reported."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.text import general as gen


def test_selection_is_on_val_and_generalises_to_test(general_root):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    sel = m.selection
    assert sel["split"] == {"train": 600, "val": 200, "test": 200} and sel["chance"] == pytest.approx(0.005)
    best = sel["best"]
    # the deployed map and correction are the best on *val* among what may be chosen; test is only reported
    key = (lambda r: (r["val_top1"], r["val_mrr"]))
    dep = best["deployed"]
    assert sel["chosen"] == dep["method"] == m.method and m.hparams["mix"] == dep["mix"]
    assert key(dep) == max(key(r) for r in sel["deployed"] if r["correction"]["kind"] == "none" or key(r) > key(
        next(b for b in sel["deployed"] if b["mix"] == r["mix"] and b["correction"]["kind"] == "none")))
    assert m.correction.to_dict() == dep["correction"] == sel["retrieval_correction"]
    if m.correction.active:   # a correction is on only where it beat "none" of the same map on val
        none = next(r for r in sel["deployed"] if r["mix"] == dep["mix"] and r["correction"]["kind"] == "none")
        assert key(dep) > key(none)
    assert best["ridge"]["val_top1"] == max(r["val_top1"] for r in sel["ridge"])
    # the gloss weight is chosen with the prompt on val, names alone (0) among the candidates
    assert {r["gloss"] for r in sel["ridge"]} == set(gen.GLOSS_WEIGHTS) and 0.0 in gen.GLOSS_WEIGHTS
    assert m.gloss_weight == best["ridge"]["gloss"] == sel["gloss"]
    assert m.reference.shape == (1000, 1280) and m.templates == best["ridge"]["templates"]
    assert best["conse"]["val_top1"] == max(r["val_top1"] for r in sel["conse"])
    for method in ("dem", "ridge", "conse"):       # far above chance (0.005) on classes never fitted
        assert best[method]["test_top1"] > 0.15, (method, best[method])
    # train/val/test are class-disjoint and cover the 1000 classes
    tr, va, te = gen.split_classes(1000, sel["seed"])
    assert len(set(tr) | set(va) | set(te)) == 1000 and not set(tr) & set(te) and not set(va) & set(te)


def test_anchor_share_is_chosen_on_val_category_words(general_root):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    rows = m.selection["anchors"]
    # share 0 first (the map alone), then every share > 0 with each lemma choice
    assert [(r["lemmas"], r["weight"]) for r in rows] == [("all", 0.0)] + [
        (x, a) for x in gen.ANCHOR_LEMMAS for a in gen.ANCHOR_WEIGHTS if a]
    assert rows[0]["anchor_ok"] and all(r["anchor_ok"] == (r["val_leaf_top1"] >= rows[0]["val_leaf_top1"])
                                        for r in rows)
    best = max((r for r in rows if r["anchor_ok"]), key=lambda r: r["val_map"])
    assert m.anchor_weight == best["weight"] == m.selection["anchor"] == m.selection["best"]["anchors"]["weight"]
    assert m.anchor_lemmas == best["lemmas"] == m.selection["anchor_lemmas"]
    assert best["val_queries"] >= 30                     # enough category words to choose on
    said = m.anchors(["fox", "okapi", "tiger"])
    assert said[0]["rule"] == "hyponym" if m.anchor_weight else said[0] == {}
    assert said[1] == {} and said[2] == {"rule": "exact", "weight": 1.0, "classes": ["tiger"]}
    assert m.anchors(["tiger"], kind="attribute") == [{}]              # attribute words: the map alone
    np.testing.assert_allclose(m.embed_texts(["tiger"], kind="attribute"),
                               m.text_to_visual(m.text_embeddings(["tiger"], kind="attribute")), atol=1e-6)


def test_attribute_words_reading_is_chosen_on_val_word_lists(general_root):
    """Attribute words are read the way val classes' definition-word lists retrieve their prototype best."""
    assert gen.description_words("zebra") == ["fleet", "black-and-white", "striped", "african", "equines"]
    assert gen.description_words("bobcat") == ["small", "lynx", "north", "america"]   # its own name left out
    assert gen.description_words("a striped animal in the water") == []
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    rows = m.selection["attribute_words"]
    assert [r["template"] for r in rows] == list(gen.ATTRIBUTE_TEMPLATES)
    best = max(rows, key=lambda r: (r["val_top1"], r["val_mrr"]))
    assert m.attribute_template == best["template"] == m.selection["attribute_template"]
    assert best["val_classes"] >= 150 and best["val_top1"] > 5 / best["val_classes"]   # far above chance
    said = m.prompts(["stripes"], kind="attribute")
    assert said == [m.attribute_template.replace("{}", "stripes")]
    from zslretrieval.text.encoder import encode_texts
    # the word in its template, nothing else (no WordNet definitions for attribute words)
    np.testing.assert_allclose(m.text_embeddings(["stripes"], kind="attribute"), encode_texts(said), atol=1e-6)
