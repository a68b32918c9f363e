"""The query path against an exact brute-force reference (fake index, linear model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import DataNotFoundError, IncompatibleError, InvalidInputError
from zslretrieval.index.searchers import exact_scores
from zslretrieval.metrics.ranking import rank_by_scores
from zslretrieval.query import QueryEngine, QuerySpec, UnknownQueryNameError

from .fakes import CLASS_SEMANTICS, CLASSES, VOCAB, make_index


def reference_ranking(index, descriptor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: embed one descriptor (A,), cosine against every gallery image, ids in rank order."""
    with torch.no_grad():
        q = index.model_.embed_classes(torch.from_numpy(descriptor[None].astype(np.float32))).numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = exact_scores(q, index.embeddings, "ip")[0]
    order = rank_by_scores(s[None])[0]
    return index.ids[order], s[order]


def test_attribute_query_matches_brute_force():
    idx = make_index()
    res = QueryEngine(idx).run([QuerySpec("attributes", "Stripes, water=0.5, -big")], k=7)[0]
    d = np.zeros(len(VOCAB), np.float32)
    d[2], d[3], d[5] = 1.0, 0.5, -1.0
    ids, scores = reference_ranking(idx, d / np.linalg.norm(d))
    assert [h.id for h in res.hits] == list(ids[:7])
    np.testing.assert_allclose([h.score for h in res.hits], scores[:7], rtol=1e-5, atol=1e-6)
    assert [h.rank for h in res.hits] == list(range(1, 8))
    assert res.hits[0].path == f"bench/{ids[0] - 100}" and res.hits[0].label == CLASSES[(ids[0] - 100) % 4]
    assert res.resolved == {"attributes": [{"name": "stripes", "weight": 1.0}, {"name": "water", "weight": 0.5},
                                           {"name": "big", "weight": -1.0}]}


def test_class_query_uses_stored_descriptor_and_full_ranking():
    idx = make_index(n=30)
    res = QueryEngine(idx).run([QuerySpec("class", "Killer Whale")], k=None)[0]
    ids, _ = reference_ranking(idx, CLASS_SEMANTICS[1])
    # killer+whale = [1, 1, 0, 1, 0, 1] / 2: its positive attributes, strongest first (ties in vocabulary order)
    assert res.resolved == {"class": "killer+whale", "attributes": [
        {"name": n, "weight": pytest.approx(0.5)} for n in ("black", "white", "water", "big")]}
    assert [h.id for h in res.hits] == list(ids)        # exact full ranking, all 30 entries


def test_attribute_file_and_inline_vector_equal_named_attributes(tmp_path):
    idx = make_index()
    f = tmp_path / "q.txt"
    f.write_text("\n".join(["0", "2", "0", "0", "0", "2"]))
    eng = QueryEngine(idx)
    a, b, c = eng.run([QuerySpec("attribute-file", str(f)), QuerySpec("vector", "0,2,0,0,0,2"),
                       QuerySpec("attributes", "white,big")], k=10)
    assert [h.id for h in a.hits] == [h.id for h in b.hits] == [h.id for h in c.hits]
    assert a.resolved["attributes"] == [{"name": "white", "weight": 2.0}, {"name": "big", "weight": 2.0}]


def test_batch_is_one_search_call_in_input_order():
    idx = make_index()
    eng = QueryEngine(idx)
    specs = [QuerySpec("class", c) for c in CLASSES] + [QuerySpec("attributes", "water")]
    batch = eng.run(specs, k=5)
    assert idx.search_calls == [5]
    single = [eng.run([s], k=5)[0] for s in specs]
    assert [[h.id for h in r.hits] for r in batch] == [[h.id for h in r.hits] for r in single]


def test_k_larger_than_gallery_returns_everything_once():
    idx = make_index(n=6)
    res = QueryEngine(idx).run([QuerySpec("attributes", "white")], k=50)[0]
    assert sorted(h.id for h in res.hits) == list(range(100, 106))


def test_errors_are_specific():
    eng = QueryEngine(make_index())
    with pytest.raises(UnknownQueryNameError, match="did you mean: stripes"):
        eng.run([QuerySpec("attributes", "stripse")])
    with pytest.raises(UnknownQueryNameError, match="zebra"):
        eng.run([QuerySpec("class", "zebar")])
    with pytest.raises(InvalidInputError, match="3 values but the vocabulary has 6"):
        eng.run([QuerySpec("vector", "1,2,3")])
    with pytest.raises(InvalidInputError, match="top-k"):
        eng.run([QuerySpec("class", "zebra")], k=0)
    with pytest.raises(DataNotFoundError):
        eng.run([QuerySpec("image", "/nonexistent/cat.jpg")])
    with pytest.raises(InvalidInputError, match="kind"):
        QuerySpec("colour", "red")


def test_index_without_model_refuses_semantic_queries():
    eng = QueryEngine(make_index(with_model=False))
    with pytest.raises(IncompatibleError, match="need an index built with a model"):
        eng.run([QuerySpec("vector", "1,0,0")])
    # names and text go through the general model, which needs images of an ImageNet backbone
    with pytest.raises(IncompatibleError, match="precomputed features"):
        eng.run([QuerySpec("class", "zebra")])


def test_image_query_on_feature_index_is_incompatible(tmp_path):
    from PIL import Image
    p = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(p)
    with pytest.raises(IncompatibleError, match="precomputed features"):
        QueryEngine(make_index(backbone=None)).run([QuerySpec("image", str(p))])


def test_fused_modalities_refuse_typed_attributes():
    idx = make_index()
    idx.model_.semantic_dims = [len(VOCAB), 4]   # pretend the model also reads sentence vectors
    idx.card.semantic_modalities = ["attributes", "sent"]
    with pytest.raises(IncompatibleError, match="attributes can be typed"):
        QueryEngine(idx).run([QuerySpec("attributes", "water")])
