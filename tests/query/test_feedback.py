"""Relevance feedback: Rocchio in the index's space, through the engine, the API and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.query.fakes import make_index
from tests.query.test_end_to_end import eszsl_checkpoint
from zslretrieval.cli import cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.ingest import index_features
from zslretrieval.query import QueryConfig, QueryEngine, QuerySpec, run_query
from zslretrieval.query.feedback import DEFAULT_WEIGHTS, Feedback, RocchioWeights, parse_ids, rocchio
from zslretrieval.query.gallery import gallery_of
from zslretrieval.query.refined import SearchOptions


def test_rocchio_formula():
    q = np.array([[1.0, 0.0, 0.0]], np.float32)
    pos = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    neg = np.array([[1.0, 1.0, 1.0]])
    w = RocchioWeights(1.0, 2.0, 0.5)
    raw = np.array([1.0, 1.0, 1.0]) - 0.5 * np.array([1.0, 1.0, 1.0])   # q + 2 * (0, .5, .5) - .5 * (1, 1, 1)
    got = rocchio(q, pos, neg, w, "ip")
    np.testing.assert_allclose(got[0], raw / np.linalg.norm(raw), rtol=1e-6)
    np.testing.assert_allclose(rocchio(q, pos, neg, w, "l2")[0], raw, rtol=1e-6)   # l2: a point, not normalised
    np.testing.assert_allclose(rocchio(q, pos[:0], neg[:0], w, "ip"), q)            # nothing marked: unchanged
    with pytest.raises(InvalidInputError, match="cancel"):
        rocchio(q, pos[:0], q.astype(np.float64), RocchioWeights(1.0, 1.0, 1.0), "ip")


def test_feedback_checks_its_ids():
    assert parse_ids(" 12, 40,7 ", "more-like") == (12, 40, 7) and parse_ids(None, "x") == ()
    with pytest.raises(InvalidInputError, match="not a catalog image id"):
        parse_ids("12,abc", "more-like")
    with pytest.raises(InvalidInputError, match="both right"):
        Feedback((1, 2), (2,))
    with pytest.raises(InvalidInputError, match="integer"):
        Feedback((-3,))
    with pytest.raises(InvalidInputError, match="gamma"):
        RocchioWeights(1.0, 1.0, float("nan"))
    assert Feedback((5, 5, 6)).positive == (5, 6)


def test_engine_refines_with_the_marked_vectors():
    ix = make_index(n=60)
    engine = QueryEngine(ix)
    spec = QuerySpec("class", "polar bear")
    base = engine.run([spec], None)[0]
    top = [h.id for h in base.hits[:10]]
    pos = tuple(i for h, i in zip(base.hits[:10], top) if h.label == "polar+bear")
    neg = tuple(i for h, i in zip(base.hits[:10], top) if h.label != "polar+bear")
    assert pos and neg
    fb = Feedback(pos, neg)
    got = engine.run([spec], None, options=SearchOptions(feedback=fb))[0]
    # the reference: the query's own vector, moved by the marked images' stored vectors, ranked by cosine
    prepared, desc = engine.prepare_all([spec])
    xq = engine.embed(prepared, desc)
    vec = dict(zip(ix.ids.tolist(), ix.embeddings))
    ref = rocchio(xq, np.stack([vec[i] for i in pos]), np.stack([vec[i] for i in neg]), DEFAULT_WEIGHTS, "ip")
    scores = ix.embeddings.astype(np.float64) @ ref[0].astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    assert [h.id for h in got.hits] == ix.ids[order].tolist()
    np.testing.assert_allclose([h.score for h in got.hits], scores[order], rtol=1e-5, atol=1e-6)
    assert got.resolved["feedback"]["more_like"] == list(pos)
    with pytest.raises(InvalidInputError, match="not entries"):
        engine.run([spec], 5, options=SearchOptions(feedback=Feedback((99999,))))


def test_gallery_vectors_are_the_index_vectors():
    ix = make_index(n=30)
    g = gallery_of(ix)
    assert g is gallery_of(ix)           # built once per open index
    np.testing.assert_allclose(g.vectors, ix.embeddings, atol=1e-6)
    np.testing.assert_array_equal(g.ids, ix.ids)


@pytest.fixture(scope="module")
def real_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("fb-idx")
    ds, _, _, ckpt = eszsl_checkpoint(root, seed=5)
    rows = np.sort(ds.split_indices("test_unseen"))
    index_features("fb", ds.features[rows], [f"syn/test/{r}" for r in rows],
                   [ds.class_names[c] for c in ds.labels[rows]], model_checkpoint=ckpt, root=root).close()
    return root, ds


def _ap(labels, target):
    rel = np.array([lab == target for lab in labels])
    return float((np.cumsum(rel)[rel] / (np.flatnonzero(rel) + 1)).mean())


def test_one_round_raises_map_without_the_marked_images(real_index):
    """scripts/bench_feedback.py's measurement in small: mAP over the unmarked images rises."""
    root, ds = real_index
    from zslretrieval.index import open_index
    with open_index("fb", root=root) as ix:
        engine = QueryEngine(ix)
        before, after = [], []
        for c in ds.split_classes("test_unseen"):
            cls = ds.class_names[c]
            spec = [QuerySpec("class", cls)]
            hits = engine.run(spec, None)[0].hits
            marked = {h.id for h in hits[:10]}
            fb = Feedback(tuple(h.id for h in hits[:10] if h.label == cls), tuple(h.id for h in hits[:10] if h.label != cls))
            again = engine.run(spec, None, options=SearchOptions(feedback=fb))[0].hits
            before.append(_ap([h.label for h in hits if h.id not in marked], cls))
            after.append(_ap([h.label for h in again if h.id not in marked], cls))
    assert np.mean(after) > np.mean(before) + 0.01, (np.mean(before), np.mean(after))


def test_feedback_through_cli_and_api(real_index):
    root, ds = real_index
    cls = ds.class_names[ds.split_classes("test_unseen")[0]]
    base = run_query(QueryConfig([QuerySpec("class", cls)], index="fb", index_root=str(root), top_k=10))
    hits = base.results[0].hits
    pos = [h.id for h in hits if h.label == cls]
    neg = [h.id for h in hits if h.label != cls]
    args = ["query", "--index", "fb", "--index-root", str(root), "--class", cls, "--top-k", "20", "--format", "json"]
    if pos:
        args += ["--more-like", ",".join(map(str, pos))]
    if neg:
        args += ["--less-like", ",".join(map(str, neg))]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    body = json.loads(out.output)
    assert body["resolved"]["feedback"]["more_like"] == pos and body["resolved"]["feedback"]["less_like"] == neg
    api = run_query(QueryConfig([QuerySpec("class", cls)], index="fb", index_root=str(root), top_k=20,
                                more_like=tuple(pos), less_like=tuple(neg)))
    assert [h.id for h in api.results[0].hits] == [h["id"] for h in body["results"]]
    bad = CliRunner().invoke(cli, ["query", "--index", "fb", "--index-root", str(root), "--class", cls,
                                   "--more-like", "1,x"])
    assert bad.exit_code == 2 and "catalog image id" in bad.output
