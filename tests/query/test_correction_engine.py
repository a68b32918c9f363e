"""The score correction through the engine: terms stored at index time, exact top-k, equal to the direct path."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.correction import ScoreCorrection, apply_terms, reference_columns
from zslretrieval.correction.search import search_corrected
from zslretrieval.correction.terms import CorrectionTerms
from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.index import open_index
from zslretrieval.index.layout import TERMS_GLOB
from zslretrieval.index.searchers import exact_scores
from zslretrieval.ingest import index_features
from zslretrieval.models.checkpoint import save_checkpoint
from zslretrieval.protocol import evaluate
from zslretrieval.query import QueryEngine, QuerySpec, engine_maps

from .test_end_to_end import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_correction(card, correction: ScoreCorrection):
    sel = dict(card.selection or {})
    sel["retrieval_correction"] = correction.to_dict()
    return dataclasses.replace(card, selection=sel)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ds = make_synthetic(seed=4)
    model, card = fit(ds, "eszsl", {"gamma": 1.0, "lam": 1.0})
    return tmp_path_factory.mktemp("corr"), ds, model, card


def _build(root, ds, model, card, name="c"):
    ckpt = save_checkpoint(model, card, root / f"{name}.pt", torch.from_numpy(ds.attributes))
    rows = np.concatenate([ds.split_indices("test_unseen"), ds.split_indices("test_seen")])
    ix = index_features(name, ds.features[rows], [f"syn/{r}" for r in rows],
                        [ds.class_names[c] for c in ds.labels[rows]], model_checkpoint=ckpt, root=root)
    return ix, rows


def _direct(ds, model, card, rows, classes, correction):
    """Brute-force corrected scores (Q, N) of the gallery rows for class ids ``classes``."""
    with torch.no_grad():
        g = model.embed_images(torch.from_numpy(ds.features[rows])).numpy()
        c = model.embed_classes(torch.from_numpy(ds.attributes)).numpy()
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    seen = [card.class_names.index(n) for n in card.seen_classes]
    unseen = [card.class_names.index(n) for n in card.unseen_classes]
    scale, offset = correction.terms(exact_scores(g, c[reference_columns(correction, seen, unseen)], "ip"))
    return apply_terms(exact_scores(c[classes], g, "ip"), scale, offset)


@pytest.mark.parametrize("correction", [ScoreCorrection("stack", 1, 1.0), ScoreCorrection("zscore"),
                                        ScoreCorrection("posterior", weight=1.0, temperature=0.5, unit=0.1)])
def test_terms_are_stored_at_index_time_and_the_engine_returns_the_exact_corrected_top_k(setup, correction):
    root, ds, model, card = setup
    card = _with_correction(card, correction)
    ix, rows = _build(root / correction.kind, ds, model, card)
    try:
        files = list(ix.folder.glob(TERMS_GLOB))
        assert len(files) == 1, "the terms file is written by the index writer"
        uc = ds.split_classes("test_unseen")
        adj = _direct(ds, model, card, rows, uc, correction)
        path_of = {r.id: r.path for r in ix.all_records()}
        engine = QueryEngine(ix)
        for k in (1, 5, 40, None):
            res = engine.run([QuerySpec("class", ds.class_names[c], "t") for c in uc], k=k)
            for q, r in enumerate(res):
                want = np.argsort(-adj[q], kind="stable")[: (k or len(rows))]
                assert [h.path for h in r.hits] == [f"syn/{rows[i]}" for i in want]
                np.testing.assert_allclose([h.score for h in r.hits], adj[q][want], rtol=1e-5, atol=1e-5)
                assert r.resolved["correction"] == correction.describe()
        raw = QueryEngine(ix, correction=False).run([QuerySpec("class", ds.class_names[uc[0]], "t")], k=5)[0]
        assert "correction" not in raw.resolved
        assert len(path_of) == len(rows)
    finally:
        ix.close()


def test_seen_class_and_image_queries_are_not_corrected(setup):
    root, ds, model, card = setup
    ix, rows = _build(root / "seen", ds, model, _with_correction(card, ScoreCorrection("stack", 1, 1.0)))
    try:
        seen_name = card.seen_classes[0]
        unseen_name = card.unseen_classes[0]
        res = QueryEngine(ix).run([QuerySpec("class", seen_name, "t"), QuerySpec("class", unseen_name, "t")], k=8)
        ref = QueryEngine(ix, correction=False).run([QuerySpec("class", seen_name, "t")], k=8)[0]
        assert [h.id for h in res[0].hits] == [h.id for h in ref.hits] and "correction" not in res[0].resolved
        assert res[1].resolved["correction"] == "stack(k=1, weight=1)"
    finally:
        ix.close()


@pytest.mark.parametrize("corr", [ScoreCorrection("zscore"), ScoreCorrection("posterior", weight=1.0, unit=0.1)])
def test_a_stale_or_missing_terms_file_is_recomputed_not_trusted(setup, corr):
    root, ds, model, card = setup
    ix, rows = _build(root / f"stale-{corr.kind}", ds, model, _with_correction(card, corr))
    folder = ix.folder
    terms = ix.correction_terms()
    ix.close()
    for f in folder.glob(TERMS_GLOB):
        f.unlink()  # a crash after the FAISS file, before the terms file
    with open_index(folder) as again:
        t2 = again.correction_terms()
        np.testing.assert_allclose(t2.scale, terms.scale)
        np.testing.assert_allclose(t2.offset, terms.offset)


def test_engine_path_equals_direct_evaluation_with_the_correction(setup, tmp_path):
    root, ds, model, card = setup
    for corr in (ScoreCorrection("stack", 3, 0.75), ScoreCorrection("zscore"),
                 ScoreCorrection("posterior", weight=0.75, temperature=1.0, unit=0.1)):
        c = _with_correction(card, corr)
        direct = evaluate(model, ds, ("map", "gzsl_map"), card=c)
        got = engine_maps(model, c, ds, root=tmp_path)
        assert abs(got["map"] - direct["map"]) < 1e-6 and abs(got["gzsl_map"] - direct["gzsl_map"]) < 1e-6
        raw = evaluate(model, ds, ("gzsl_map",), card=c, raw_scores=True)
        assert abs(engine_maps(model, c, ds, root=tmp_path, raw_scores=True)["gzsl_map"] - raw["gzsl_map"]) < 1e-6
    assert list(tmp_path.iterdir()) == []


def test_search_corrected_threshold_loop_is_exact():
    """A raw top-k' that does not hold the corrected top-k makes the search widen until it does."""
    rng = np.random.default_rng(0)
    n, d = 500, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    q = rng.normal(size=(3, d)).astype(np.float32)
    ids = np.arange(100, 100 + n, dtype=np.int64)
    offset = np.where(rng.random(n) < 0.05, 3.0, 0.0) + rng.normal(scale=0.5, size=n)  # a few strongly boosted
    scale = rng.uniform(0.5, 2.0, size=n)
    terms = CorrectionTerms(ScoreCorrection("zscore"), ids.copy(), scale, offset, image_ids=ids.copy())
    calls = []

    def search(xq, k):
        calls.append(k)
        s = exact_scores(xq, x, "ip")
        order = np.argsort(-s, axis=1, kind="stable")[:, : (k or n)]
        return np.take_along_axis(s, order, 1).astype(np.float32), ids[order]

    adj = scale[None, :] * exact_scores(q, x, "ip") + offset[None, :]
    for k in (1, 3, 10):
        D, I = search_corrected(search, q, k, terms, n)
        want = np.argsort(-adj, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(I, ids[want])
    assert len(calls) > 3  # some searches had to widen


def test_query_cli_raw_scores_switch(setup):
    root, ds, model, card = setup
    ix, _ = _build(root / "cli", ds, model, _with_correction(card, ScoreCorrection("stack", 1, 1.0)), name="cli")
    ix.close()
    name = card.unseen_classes[0]
    base = ["query", "--index", "cli", "--index-root", str(root / "cli"), "--class", name, "--json", "--top-k", "5"]
    r1 = CliRunner().invoke(cli, base)
    r2 = CliRunner().invoke(cli, base + ["--raw-scores"])
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    assert '"correction": "stack(k=1, weight=1)"' in r1.output and '"correction"' not in r2.output
