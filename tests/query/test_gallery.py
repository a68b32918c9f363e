"""The gallery behind feedback, filters and the relevance scale: streamed from the feature store past
its memory limit, the same vectors and results as in memory; the relevance moments from a sample
past MOMENT_SAMPLE images, close to the whole collection's; the record table loaded in the background."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.query.test_end_to_end import eszsl_checkpoint
from zslretrieval.index import open_index
from zslretrieval.ingest import index_features
from zslretrieval.query import QueryEngine, QuerySpec
from zslretrieval.query import gallery as gallery_mod
from zslretrieval.query.calibration import ScoreMoments
from zslretrieval.query.feedback import Feedback
from zslretrieval.query.filters import SearchFilter
from zslretrieval.query.gallery import Gallery, block_scores, gallery_of
from zslretrieval.query.records import RecordTable
from zslretrieval.query.refined import SearchOptions


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery-idx")
    ds, _, _, ckpt = eszsl_checkpoint(root, seed=7)
    rows = np.sort(np.concatenate([ds.split_indices("test_seen"), ds.split_indices("test_unseen")]))
    paths = [f"/photos/{'a' if i % 2 else 'b'}/img{r}.jpg" for i, r in enumerate(rows)]
    # small chunks: many feature shards, so a streamed read crosses shard boundaries
    index_features("gal", ds.features[rows], paths, [ds.class_names[c] for c in ds.labels[rows]],
                   model_checkpoint=ckpt, root=root, chunk_size=16).close()
    return root, ds


def test_streamed_gallery_reads_the_in_memory_vectors(root):
    folder, _ = root
    with open_index("gal", root=folder) as ix:
        mem = gallery_of(ix)
        assert mem.in_memory
        ids, vecs = ix.vectors()
        order = np.argsort(ids)
        np.testing.assert_array_equal(mem.ids, ids[order])
        np.testing.assert_allclose(mem.vectors, vecs[order], atol=1e-6)
        streamed = Gallery(mem.ids, mem.metric, mem.dim, lambda r: mem.vectors[r], in_memory_bytes=0)
        assert not streamed.in_memory
        rows = np.array([5, 0, len(mem) - 1, 5])
        np.testing.assert_array_equal(streamed.take(rows), mem.take(rows))
        got = list(streamed.blocks(size=7))
        assert [len(r) for r, _ in got][:-1] == [7] * (len(got) - 1)
        np.testing.assert_array_equal(np.concatenate([r for r, _ in got]), np.arange(len(mem)))
        q = np.random.default_rng(0).normal(size=(3, mem.dim))
        blockwise = np.concatenate([block_scores(q, x, mem.metric) for _, x in streamed.blocks(size=7)], axis=1)
        np.testing.assert_allclose(blockwise, block_scores(q, mem.vectors, mem.metric), rtol=1e-12)
    # the index's own store path (gallery_of past the limit) gives the same vectors
    with open_index("gal", root=folder) as ix:
        g = gallery_of(ix, in_memory_bytes=0)
        assert not g.in_memory
        np.testing.assert_allclose(g.take(np.arange(len(g))), mem.vectors, atol=1e-6)


@pytest.mark.parametrize("search", ["feedback", "filter", "relevance"])
def test_streamed_searches_equal_in_memory(root, monkeypatch, search):
    folder, ds = root
    spec = [QuerySpec("class", ds.class_names[ds.split_classes("test_unseen")[0]])]

    def run():
        with open_index("gal", root=folder) as ix:
            engine = QueryEngine(ix)
            base = engine.run(spec, 10)[0]
            opts = {"feedback": SearchOptions(feedback=Feedback((base.hits[0].id, base.hits[2].id), (base.hits[1].id,))),
                    "filter": SearchOptions(filter=SearchFilter(folder="/photos/a")),
                    "relevance": SearchOptions(relevance=True)}[search]
            r = engine.run(spec, 25, options=opts)[0]
            return [h.id for h in r.hits], [h.score for h in r.hits], [h.relevance for h in r.hits], r.resolved

    ids, scores, rel, _ = run()
    monkeypatch.setattr(gallery_mod, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(gallery_mod, "BLOCK", 7)
    ids2, scores2, rel2, resolved = run()
    assert ids2 == ids and len(ids) == 25
    np.testing.assert_allclose(scores2, scores, rtol=1e-6, atol=1e-6)
    if search == "relevance":
        np.testing.assert_allclose(rel2, rel, rtol=1e-9)
        assert resolved["relevance"]["moments_from"] == "every image"


def test_moments_from_a_sample_are_close_to_the_whole_collection():
    rng = np.random.default_rng(3)
    n, dim = 60_000, 24
    centres = rng.normal(size=(40, dim))
    x = (centres[rng.integers(0, 40, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    g = Gallery(np.arange(n) * 3 + 1, "ip", dim, lambda r: x[r])
    rows = g.sample_rows()
    assert len(rows) == gallery_mod.MOMENT_SAMPLE and rows[0] == 0 and rows[-1] == n - 1
    assert len(g.sample_rows(cap=n)) == n   # up to the cap: every image, exactly
    q = rng.normal(size=(50, dim))
    mu, sd = ScoreMoments(x, "ip").mean_std(q)
    mu_s, sd_s = ScoreMoments(g.take(rows), "ip").mean_std(q)
    # sampling error of a mean over 8,192 scores: 1 / sqrt(8192) = 0.011 standard deviations; the worst
    # of 50 queries stays under 3.5 times that. A shift of z by 0.04 moves relevance 0.5 by < 0.03.
    assert np.max(np.abs(mu_s - mu) / sd) < 0.04
    assert np.max(np.abs(sd_s / sd - 1)) < 0.03         # standard deviations within 3 %


def test_record_table_loads_in_the_background(root):
    folder, _ = root
    with open_index("gal", root=folder) as ix:
        want = [(r.id, r.path, r.label, r.status) for r in ix.all_records("ok")]
        assert ix.record_tuples("ok") == want
        t = RecordTable(ix)
        thread = t.load_in_background()
        assert isinstance(thread, threading.Thread)
        thread.join(30)
        assert t.by_id is not None and t.load_in_background() is None
        for i, path, label, status in want:
            assert t.by_id[i] == (path, label, status)


def test_moments_read_their_sample_without_loading_the_gallery(root):
    folder, ds = root
    with open_index("gal", root=folder) as ix:
        engine = QueryEngine(ix)
        spec = [QuerySpec("class", ds.class_names[ds.split_classes("test_unseen")[0]])]
        engine.run(spec, 5, options=SearchOptions(relevance=True))
        g = gallery_of(ix)
        assert g.in_memory and g._vectors is None     # kept in memory only once feedback or a filter reads it
        mom = ScoreMoments(g.view(np.arange(len(g))), g.metric)
        ref = ScoreMoments(g.vectors, g.metric)
        np.testing.assert_allclose(mom.cov, ref.cov, rtol=1e-10, atol=1e-12)
