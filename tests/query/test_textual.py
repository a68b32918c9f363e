"""Text, class and attribute-word queries on an index of raw features, through a (fake) general model.

The fake maps each text to a fixed random unit vector, so the expected query vector is a
hand-computable weighted sum and the ranking is checked against brute force.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from zslretrieval.correction import ScoreCorrection
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.index.searchers import exact_scores
from zslretrieval.metrics.ranking import rank_by_scores
from zslretrieval.query import QueryEngine, QuerySpec, format_table, parse_query_line
from zslretrieval.query.textual import humanise, query_texts

from .fakes import make_index

DIM = 8


class FakeGeneral:
    backbone, backbone_weights, method, template, feature_dim = "efficientnet-lite0", None, "fake", "a {}", DIM
    correction, reference = ScoreCorrection(), None    # no hubness correction

    def __init__(self):
        self.calls: list[list[str]] = []

    @staticmethod
    def vec(text: str) -> np.ndarray:
        v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=DIM)
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed_texts(self, texts, kind="name"):
        self.calls.append(list(texts))
        return np.stack([self.vec(t) for t in texts])

    def prompts(self, texts, kind="name"):
        return [("something with " if kind == "attribute" else "a ") + t for t in texts]

    def glosses(self, texts, kind="name"):
        return [["a fake definition"] if t == "zebra" and kind == "name" else [] for t in texts]

    def anchors(self, texts, kind="name"):
        return [{"rule": "exact", "weight": 1.0, "classes": ["tiger"]} if t == "tiger" and kind == "name" else {}
                for t in texts]

    def nearest_classes(self, v, k=3):
        return [("zebra", 0.5), ("tiger", 0.4), ("horse", 0.3)][:k]


def brute_force(index, q: np.ndarray) -> np.ndarray:
    q = (q / np.linalg.norm(q))[None].astype(np.float32)
    s = exact_scores(q, index.embeddings, "ip")[0]
    return index.ids[rank_by_scores(s[None])[0]]


def engine(n: int = 30):
    idx = make_index(n=n, feature_dim=DIM, with_model=False, backbone="efficientnet-lite0")
    return idx, QueryEngine(idx, general=FakeGeneral())


def test_humanise_vocabulary_names():
    assert humanise("killer+whale") == "killer whale"
    assert humanise("has_bill_shape::curved_(up_or_down)") == "has bill shape curved up or down"
    assert humanise("  Bay_breasted_Warbler ") == "Bay breasted Warbler"


def test_attribute_names_read_as_words():
    from zslretrieval.text.names import attribute_text
    assert attribute_text("has_bill_shape::curved_(up_or_down)") == "bill shape curved up or down"
    assert attribute_text("stripes") == "stripes" and attribute_text("hasty") == "hasty"


def test_text_query_ranks_by_the_general_vector():
    idx, eng = engine()
    res = eng.run([QuerySpec("text", "a striped   animal")], k=None)[0]
    assert [h.id for h in res.hits] == list(brute_force(idx, FakeGeneral.vec("a striped animal")))
    assert res.resolved["text"] == "a striped animal"
    how = res.resolved["understood_as"]
    assert how["model"] == "general efficientnet-lite0/fake" and how["texts"] == ["a a striped animal"]
    assert how["nearest_imagenet"][0] == {"name": "zebra", "cosine": 0.5}
    assert "looks like ImageNet zebra (0.50)" in format_table([res])
    assert how["glosses"] == [[]] and "WordNet" not in format_table([res])
    res = eng.run([QuerySpec("class", "zebra")], k=3)[0]
    assert res.resolved["understood_as"]["glosses"] == [["a fake definition"]]
    assert "on 'a zebra' with WordNet: 'a fake definition'; looks like" in format_table([res])
    assert res.resolved["understood_as"]["anchors"] == [{}] and "anchored" not in format_table([res])
    res = eng.run([QuerySpec("text", "tiger")], k=3)[0]
    assert res.resolved["understood_as"]["anchors"] == [{"rule": "exact", "weight": 1.0, "classes": ["tiger"]}]
    assert "on 'a tiger'; anchored on ImageNet tiger (exact, share 1); looks like" in format_table([res])


def test_attribute_words_keep_weights_and_negation():
    idx, eng = engine()
    g = eng._general
    res = eng.run([QuerySpec("attributes", "stripes, big_cat=0.5, -domestic, stripes=2")], k=None)[0]
    # 'stripes' given twice keeps its last weight; names become words; one encoder call for the lot
    assert g.calls == [["big cat", "domestic", "stripes"]]
    assert res.resolved["attributes"] == [{"name": "big cat", "weight": 0.5}, {"name": "domestic", "weight": -1.0},
                                          {"name": "stripes", "weight": 2.0}]
    # read as attribute words, not as names ("a photo of a stripes.")
    assert res.resolved["understood_as"]["texts"] == ["something with big cat", "something with domestic",
                                                      "something with stripes"]
    q = 0.5 * FakeGeneral.vec("big cat") - FakeGeneral.vec("domestic") + 2 * FakeGeneral.vec("stripes")
    assert [h.id for h in res.hits] == list(brute_force(idx, q))
    plain = eng.run([QuerySpec("attributes", "big_cat=0.5,stripes=2")], k=None)[0]
    assert [h.id for h in plain.hits] != [h.id for h in res.hits]      # negation changes the ranking


def test_any_class_name_and_different_queries_rank_differently():
    idx, eng = engine()
    a, b = eng.run([QuerySpec("class", "okapi"), QuerySpec("class", "Killer+Whale")], k=None)
    assert a.resolved["class"] == "okapi" and b.resolved["class"] == "Killer Whale"
    assert [h.id for h in a.hits] == list(brute_force(idx, FakeGeneral.vec("okapi")))
    assert [h.id for h in a.hits] != [h.id for h in b.hits]
    assert idx.search_calls == [2]                                     # still one batched search


def test_bad_text_queries():
    _, eng = engine()
    with pytest.raises(InvalidInputError, match="zero"):
        eng.run([QuerySpec("attributes", "stripes=0, big_cat=0")])
    for kind, text in (("class", "__"), ("class", "---"), ("text", "?! ..."), ("attributes", "stripes, --")):
        with pytest.raises(InvalidInputError, match="no letters or digits"):
            eng.run([QuerySpec(kind, text)])
    assert eng.run([QuerySpec("class", "747")])[0].resolved["class"] == "747"   # digits name things
    with pytest.raises(IncompatibleError, match="need an index built with a model"):
        eng.run([QuerySpec("vector", "1,2")])
    assert parse_query_line("text: a zebra in water") == QuerySpec("text", "a zebra in water")


def test_weights_mismatch_is_refused():
    idx = make_index(n=5, feature_dim=DIM, with_model=False, backbone="efficientnet-lite0")
    idx.manifest.backbone_weights = "file:my-finetune.pt"
    g = FakeGeneral()
    g.backbone_weights = "pypi:efficientnet-lite0-57934424"
    with pytest.raises(IncompatibleError, match="my-finetune"):
        QueryEngine(idx, general=g).run([QuerySpec("text", "zebra")])


def test_query_texts_reads_only_text_kinds():
    assert query_texts(QuerySpec("text", " zebra ")) == (["zebra"], [1.0], {"text": "zebra"})
    with pytest.raises(InvalidInputError):
        query_texts(QuerySpec("vector", "1,2"))


def test_supports_says_what_a_raw_index_answers():
    _, eng = engine()
    assert all(eng.supports(k) for k in ("text", "class", "attributes", "image"))
    assert not eng.supports("vector") and not eng.supports("attribute-file")
    bare = QueryEngine(make_index(n=5, feature_dim=DIM, with_model=False, backbone=None))
    assert not bare.supports("text")
    modelled = QueryEngine(make_index(n=5))
    assert not modelled.supports("text") and modelled.supports("class") and modelled.supports("attributes")
