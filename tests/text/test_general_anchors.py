"""Known-name anchors (text/general/anchors.py) and the category words their share is chosen with, hand-worked."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError
from zslretrieval.text import general as gen
from zslretrieval.text.general import lexicon


def test_name_anchors_hand_worked(monkeypatch):
    """Exact lemma first, else longer lemmas ending in the name's words (its singular tried after it)."""
    lem = (("tiger", "panthera tigris"), ("red fox", "vulpes vulpes"), ("kit fox",), ("sea cucumber",),
           ("fox terrier",))
    assert gen.name_anchors("tiger", lem) == ([0], "exact")
    assert gen.name_anchors("Panthera  tigris", lem) == ([0], "exact")
    assert gen.name_anchors("a fox", lem) == ([1, 2], "hyponym")        # not the fox terrier: a kind of terrier
    assert gen.name_anchors("foxes", lem) == ([1, 2], "hyponym")
    assert gen.name_anchors("red fox", lem) == ([1], "exact")
    assert gen.name_anchors("kit fox", lem, known=[1]) == ([], None)     # a sibling is not an anchor
    assert gen.name_anchors("fox", lem, known=[0, 3]) == ([], None)
    assert gen.name_anchors("cucumber", lem) == ([3], "hyponym")        # exocentric compounds match too
    assert gen.name_anchors("a striped animal in the water", lem) == ([], None)
    # hyponyms of first lemmas only: "river horse" (the hippopotamus) is not a horse then
    lem2 = (("hippopotamus", "river horse"), ("sorrel horse", "sorrel"), ("horse",))
    assert gen.name_anchors("horse", lem2[:2]) == ([0, 1], "hyponym")
    assert gen.name_anchors("horse", lem2[:2], hyponyms="first") == ([1], "hyponym")
    assert gen.name_anchors("river horse", lem2, hyponyms="first") == ([0], "exact")   # exact: every lemma
    with pytest.raises(InvalidInputError, match="expected one of all, first"):
        gen.name_anchors("horse", lem2, hyponyms="some")
    cats, real = gen.imagenet_categories(), gen.imagenet_lemmas()
    assert real[277] == ("red fox", "vulpes vulpes")
    classes, rule = gen.name_anchors("fox", real)
    assert rule == "hyponym" and [cats[i] for i in classes] == ["red fox", "kit fox", "Arctic fox", "grey fox"]
    # the share: exact 1, hyponyms ``weight``, others unchanged; every row unit
    # apply_anchors reads the table through lexicon (where it is defined), so the small one goes there
    monkeypatch.setattr(lexicon, "imagenet_lemmas", lambda: lem)
    protos = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0], [0, 0.6, 0.8]])
    pred = np.array([[0.0, 0.0, 2.0], [3.0, 4.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    out, found = gen.apply_anchors(pred, ["tiger", "fox", "okapi"], protos, 0.25)
    assert found == [([0], "exact"), ([1, 2], "hyponym"), ([], None)]
    np.testing.assert_allclose(out[0], [1.0, 0.0, 0.0], atol=1e-6)
    anchor = np.array([0.0, 1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(out[1], gen._unit(0.75 * np.array([0.6, 0.8, 0.0]) + 0.25 * anchor), atol=1e-6)
    np.testing.assert_array_equal(out[2], pred[2])
    out0, _ = gen.apply_anchors(pred, ["fox"], protos, 0.0)          # share 0: the map alone
    np.testing.assert_array_equal(out0[0], pred[0])


def test_category_queries_and_their_map_hand_worked():
    lem = (("red fox",), ("kit fox",), ("arctic fox", "white fox"), ("fox terrier",), ("tiger",))
    # "fox" ends lemmas of known class 0 and of rows 1, 2; "terrier" and "tiger" have no known class
    assert gen.category_queries(lem, known=[0, 4], rows=[1, 2, 3]) == {"fox": {1, 2}}
    assert gen.category_queries(lem, known=[3], rows=[1, 2]) == {}
    protos = np.eye(4)
    pred = np.array([[0.0, 0.9, 0.1, 0.5], [0.0, 1.0, 0.0, 0.0]])
    # query 0 ranks rows 1, 3, 2; positives {2, 3} at ranks 3 and 2: AP (1/2 + 2/3) / 2; query 1: AP 1
    got = gen.category_map(pred, [{2, 3}, {1}], protos, [1, 2, 3], ref=None)
    assert got == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1.0) / 2)
