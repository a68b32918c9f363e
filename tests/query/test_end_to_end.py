"""The query path on real indexes (FAISS + SQL catalog) built from a model fitted on synthetic data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.index import open_index
from zslretrieval.index.searchers import exact_scores
from zslretrieval.ingest import index_features
from zslretrieval.metrics.ranking import mean_average_precision, rank_by_scores
from zslretrieval.models import create_model
from zslretrieval.models.checkpoint import ModelCard, save_checkpoint
from zslretrieval.protocol import evaluate
from zslretrieval.query import QueryConfig, QueryEngine, QuerySpec, engine_map, run_query


def fit(ds, name="eszsl", hparams=None, seed=0):
    """Fit on trainval (seen classes only) and return (model, card)."""
    tr = ds.split_indices("trainval")
    seen = np.unique(ds.labels[tr])
    remap = np.full(len(ds.class_names), -1)
    remap[seen] = np.arange(len(seen))
    model = create_model(name, ds.feature_dim, [ds.semantic_dim], hparams)
    model.fit(torch.from_numpy(ds.features[tr]), torch.from_numpy(remap[ds.labels[tr]]),
              torch.from_numpy(ds.attributes[seen]), seed=seed)
    model.eval()
    unseen = ds.split_classes("test_unseen")
    card = ModelCard(model=model.name, hparams=model.hparams.to_dict(), feature_dim=ds.feature_dim,
                     semantic_dims=[ds.semantic_dim], dataset=ds.name, metric=model.metric,
                     class_names=list(ds.class_names), seen_classes=[ds.class_names[c] for c in seen],
                     unseen_classes=[ds.class_names[c] for c in unseen], vocabulary=list(ds.attribute_names),
                     semantic_norm=ds.semantic_norm)
    return model, card


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def catalog_backend(request):
    """The catalog of the module's index: SQLite, then PostgreSQL (skipped without $ZSLR_TEST_PG_URL)."""
    from tests.pg import catalog_for

    with catalog_for(request.param) as url:
        yield url


def eszsl_checkpoint(root, seed):
    """The synthetic dataset of ``seed`` and an ESZSL model fitted on its seen classes, saved as ``root/m.pt``:
    (dataset, model, card, checkpoint path), the model most index fixtures here search with."""
    ds = make_synthetic(seed=seed)
    model, card = fit(ds, hparams={"gamma": 1.0, "lam": 1.0})
    return ds, model, card, save_checkpoint(model, card, root / "m.pt", torch.from_numpy(ds.attributes))


@pytest.fixture(scope="module")
def built(tmp_path_factory, catalog_backend):
    root = tmp_path_factory.mktemp("idx")
    ds, model, card, ckpt = eszsl_checkpoint(root, seed=3)
    rows = np.sort(np.concatenate([ds.split_indices("test_seen"), ds.split_indices("test_unseen")]))
    ix = index_features("syn", ds.features[rows], [f"syn/test/{r}" for r in rows],
                        [ds.class_names[c] for c in ds.labels[rows]], model_checkpoint=ckpt, root=root,
                        db=catalog_backend)
    ix.close()
    return root, ds, model, card, rows


def reference(ds, model, rows, descriptor):
    """Brute force over the gallery rows: catalog paths in rank order and scores."""
    with torch.no_grad():
        g = model.embed_images(torch.from_numpy(ds.features[rows])).numpy()
        q = model.embed_classes(torch.from_numpy(descriptor[None].astype(np.float32))).numpy()
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s = exact_scores(q, g, "ip")[0]
    order = rank_by_scores(s[None])[0]
    return [f"syn/test/{rows[i]}" for i in order], s[order]


def test_attribute_query_equals_brute_force(built):
    root, ds, model, card, rows = built
    run = run_query(QueryConfig([QuerySpec("attributes", "ATTR 03, attr_07=0.5, -attr-11")], index="syn",
                                index_root=str(root), top_k=15))
    d = np.zeros(ds.semantic_dim, np.float32)
    d[3], d[7], d[11] = 1, 0.5, -1
    paths, scores = reference(ds, model, rows, d / np.linalg.norm(d))
    hits = run.results[0].hits
    assert [h.path for h in hits] == paths[:15]
    np.testing.assert_allclose([h.score for h in hits], scores[:15], atol=1e-5)
    assert all(h.label == ds.class_names[ds.labels[int(h.path.rsplit("/", 1)[1])]] for h in hits)


def test_class_query_full_ranking_equals_brute_force(built):
    root, ds, model, card, rows = built
    c = int(ds.split_classes("test_unseen")[0])
    with open_index("syn", root) as ix:
        res = QueryEngine(ix).run([QuerySpec("class", ds.class_names[c].upper())], k=None)[0]
    paths, _ = reference(ds, model, rows, ds.attributes[c])
    assert [h.path for h in res.hits] == paths and len(paths) == len(rows)


def test_cli_on_real_index(built, tmp_path):
    root, ds, *_ = built
    runner = CliRunner()
    base = ["query", "--index", "syn", "--index-root", str(root)]
    r = runner.invoke(cli, base + ["--attributes", "attr_01,attr_02", "--top-k", "5"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1] == "resolved: attr_01=1, attr_02=1" and len(r.output.splitlines()) == 8
    r = runner.invoke(cli, base + ["--class", "class_05", "--json", "--html", str(tmp_path / "g.html")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["resolved"]["class"] == "class_05" and len(out["results"]) == 10
    assert (tmp_path / "g.html").read_text().count('class="ph"') == 10   # benchmark rows have no image file
    r = runner.invoke(cli, base + ["--attributes", "atr_01"])
    assert r.exit_code == 2 and "did you mean: attr_01" in r.output
    r = runner.invoke(cli, ["query", "--index", "nope", "--index-root", str(root), "--class", "x"])
    assert r.exit_code == 2 and "not found" in r.output


def direct_map(model, ds, card) -> tuple[float, np.ndarray]:
    """The direct evaluation: protocol.evaluate's mAP, and per-class AP from the full score matrix."""
    m = evaluate(model, ds, ["map"], card=card)["map"]
    u = ds.split_indices("test_unseen")
    with torch.no_grad():
        g = model.embed_images(torch.from_numpy(ds.features[u])).numpy()
        c = model.embed_classes(torch.from_numpy(ds.attributes)).numpy()
    if model.metric == "ip":
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
    cls = ds.split_classes("test_unseen")
    _, aps = mean_average_precision(exact_scores(c[cls], g, model.metric), cls, ds.labels[u])
    return m, aps


# floor: a sanity bound well above chance (~1/6 for 6 equal unseen classes) where the model learns
# this data well; the point of the test is the equality, to 1e-6, of the two evaluation paths.
# The rbf ESZSL's kernel map is a fitted part of the model: indexed features go through it too.
@pytest.mark.parametrize("name,hparams,floor", [("eszsl", {"gamma": 1.0, "lam": 1.0}, 0.4),
                                                ("eszsl", {"gamma": 1.0, "lam": 1.0, "kernel": "rbf",
                                                           "landmarks": 300}, 0.4), ("sae", None, 0.2),
                                                ("dem", {"epochs": 10, "hidden": 64, "lr": 1e-3}, 0.17)])
def test_engine_map_equals_direct_map(tmp_path, name, hparams, floor):
    ds = make_synthetic(seed=5)
    model, card = fit(ds, name, hparams)
    m_engine, per_class = engine_map(model, card, ds, root=tmp_path)
    m_direct, aps = direct_map(model, ds, card)
    assert abs(m_engine - m_direct) < 1e-6
    np.testing.assert_allclose([per_class[ds.class_names[c]] for c in ds.split_classes("test_unseen")], aps, atol=1e-6)
    assert floor < m_engine <= 1.0
    assert list(tmp_path.iterdir()) == []  # the temporary index is removed
