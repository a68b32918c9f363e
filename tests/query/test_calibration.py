"""The relevance scale: collection moments without a pass, z-scores, the logistic, --min-score."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.query.fakes import make_index
from tests.query.test_feedback import real_index  # noqa: F401  (module fixture: a real index)
from zslretrieval.cli import cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.query import QueryEngine, QuerySpec
from zslretrieval.query.calibration import (DEFAULT_LOGISTIC, Logistic, ScoreMoments, check_min_score, fit_logistic,
                                            zscores)
from zslretrieval.query.gallery import block_scores, gallery_of
from zslretrieval.query.output import FORMATS, format_results
from zslretrieval.query.refined import SearchOptions


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("corrected", [False, True])
@pytest.mark.parametrize("block", [1024, 7])   # one block, and many (the last one short)
def test_moments_equal_a_pass_over_the_collection(metric, corrected, block, monkeypatch):
    monkeypatch.setattr(ScoreMoments, "BLOCK", block)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 7)).astype(np.float32)
    q = rng.normal(size=(4, 7)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, 300) if corrected else None
    offset = rng.normal(size=300) if corrected else None
    s = x.astype(np.float64) @ q.T.astype(np.float64) if metric == "ip" else \
        -np.square(x[:, None, :].astype(np.float64) - q[None, :, :]).sum(-1)
    if corrected:
        s = s * scale[:, None] + offset[:, None]
    mu, sd = ScoreMoments(x, metric, scale, offset).mean_std(q)
    np.testing.assert_allclose(mu, s.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sd, s.std(0), rtol=1e-7)
    z = zscores(s.T, mu, sd)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-9)


def test_relevance_is_comparable_across_queries():
    """Two queries whose scores differ by an affine map get the same relevance for the same image."""
    ix = make_index(n=80)
    engine = QueryEngine(ix)
    g = gallery_of(ix)
    mom = ScoreMoments(g.vectors, g.metric)
    q = np.random.default_rng(0).normal(size=(1, g.vectors.shape[1]))
    s = block_scores(q, g.vectors, g.metric)
    mu, sd = mom.mean_std(q)
    # scaling a query's scores (e.g. a sharper description) changes the scores, not the relevance
    np.testing.assert_allclose(zscores(3 * s, 3 * mu, 3 * sd), zscores(s, mu, sd))
    res = engine.run([QuerySpec("class", "zebra"), QuerySpec("attributes", "water")], None,
                     options=SearchOptions(relevance=True))
    for r in res:
        rel = [h.relevance for h in r.hits]
        assert all(0 < v < 1 for v in rel) and rel == sorted(rel, reverse=True)
        assert "relevance" in r.resolved and r.hits[0].to_dict()["relevance"] == rel[0]


def test_min_score_cuts_by_relevance():
    ix = make_index(n=80)
    engine = QueryEngine(ix)
    spec = [QuerySpec("class", "zebra")]
    full = engine.run(spec, None, options=SearchOptions(relevance=True))[0].hits
    cut = sorted(h.relevance for h in full)[-5]
    got = engine.run(spec, None, options=SearchOptions(min_score=cut))[0].hits
    assert [h.id for h in got] == [h.id for h in full if h.relevance >= cut] and len(got) >= 5
    # with a top-k: at most k, all above the cut
    got = engine.run(spec, 3, options=SearchOptions(min_score=cut))[0].hits
    assert [h.id for h in got] == [h.id for h in full[:3]]
    assert engine.run(spec, None, options=SearchOptions(min_score=1.0))[0].hits == []
    for bad in (-0.1, 1.5, float("nan"), "x"):
        with pytest.raises(InvalidInputError, match="min score"):
            check_min_score(bad)


def test_fit_logistic_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    z = rng.normal(size=40_000) * 2
    truth = Logistic(1.5, -3.0)
    y = rng.random(40_000) < truth(z)
    got = fit_logistic(z, y, c=100.0)
    assert abs(got.a - 1.5) < 0.1 and abs(got.b + 3.0) < 0.15
    with pytest.raises(InvalidInputError):
        fit_logistic(z, np.zeros_like(y))
    assert DEFAULT_LOGISTIC.a > 0   # relevance grows with z


def test_min_score_and_formats_on_the_cli(real_index):  # noqa: F811
    root, ds = real_index
    cls = ds.class_names[ds.split_classes("test_unseen")[0]]
    base = ["query", "--index", "fb", "--index-root", str(root), "--class", cls, "--top-k", "30"]
    out = CliRunner().invoke(cli, base + ["--relevance", "--format", "json"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)["results"]
    cut = hits[4]["relevance"]
    out = CliRunner().invoke(cli, base + ["--min-score", str(cut), "--format", "jsonl"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["id"] for r in rows] == [h["id"] for h in hits if h["relevance"] >= cut]
    assert all(r["kind"] == "class" and r["text"] == cls and r["query"] == 0 for r in rows)
    out = CliRunner().invoke(cli, base + ["--format", "csv"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "query,kind,text,rank,id,score,relevance,label,path" and len(lines) == 31
    import csv
    first = next(csv.DictReader(lines))
    assert int(first["id"]) == hits[0]["id"] and first["relevance"] == ""
    assert set(FORMATS) == {"table", "json", "jsonl", "csv"}
    with pytest.raises(InvalidInputError, match="accepted"):
        format_results([], "xml", index="i", metric="ip", batch=False)
    bad = CliRunner().invoke(cli, base + ["--min-score", "2"])
    assert bad.exit_code == 2 and "min score" in bad.output
