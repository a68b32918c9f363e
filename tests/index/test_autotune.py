"""--index-type auto: budgets, tuning to a recall target, and exact re-ranking of PQ shortlists,
each checked against exact brute force."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError
from zslretrieval.index import open_index
from zslretrieval.index.autotune import (choose_index, memory_estimate, parse_memory, recall_at, rerank,
                                         vector_scorer)
from zslretrieval.index.searchers.faiss_files import build_index, normalize_index_type, split_rerank
from zslretrieval.index.space import l2_normalize
from zslretrieval.ingest import index_features


def _clustered(n, dim=32, seed=0, centers=60):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    return l2_normalize(c[rng.integers(0, centers, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32))


def _exact(x, xq, k):
    s = xq @ x.T
    return np.argsort(-s, axis=1, kind="stable")[:, :k], np.sort(s, axis=1)[:, ::-1][:, :k]


def test_parse_memory_and_rerank_params():
    assert parse_memory("512M") == 512 << 20 and parse_memory("2g") == 2 << 30 and parse_memory("1.5GiB") == 3 << 29
    assert parse_memory("1000") == 1000 and parse_memory(None) is None
    with pytest.raises(InvalidInputError, match="--max-memory 'lots'"):
        parse_memory("lots")
    assert split_rerank("nprobe=16,rerank=100") == ("nprobe=16", 100) and split_rerank("efSearch=64") == ("efSearch=64", 0)
    with pytest.raises(InvalidInputError, match="rerank=N"):
        split_rerank("rerank=0")


def test_rerank_equals_exact_scores_of_the_shortlist():
    both = _clustered(507)
    x, xq = both[:500], both[500:]
    rng = np.random.default_rng(2)
    I = np.stack([rng.choice(500, 40, replace=False) for _ in range(7)]).astype(np.int64)
    I[0, 5] = -1
    D, J = rerank(np.zeros(I.shape, np.float32), I, xq, vector_scorer(x, "ip"), 10)
    for q in range(7):
        cand = I[q][I[q] >= 0]
        s = x[cand] @ xq[q]
        np.testing.assert_array_equal(J[q], cand[np.argsort(-s, kind="stable")[:10]])
        np.testing.assert_allclose(D[q], np.sort(s)[::-1][:10], rtol=1e-5)


def test_small_collection_is_flat_and_budget_too_small_is_refused():
    x = _clustered(1000)
    c = choose_index(x)
    assert c.index_type == "Flat" and c.recall == 1.0
    with pytest.raises(InvalidInputError, match="below every index type"):
        choose_index(x, max_memory=100)


def test_budget_picks_pq_with_rerank_and_meets_target_on_new_queries():
    both = _clustered(4100)
    x, xq = both[:4000], both[4000:]      # queries from the same distribution, never seen in tuning
    budget = memory_estimate("Flat", 4000, 32) // 3
    c = choose_index(x, max_memory=budget, recall_target=0.9, held_out=100)
    assert "PQ" in c.index_type and c.rerank > 0 and c.memory_bytes <= budget and c.recall >= 0.9
    # the tuned settings on queries never seen during tuning, against exact brute force
    index = build_index(c.index_type, 32, "ip", x, np.arange(4000, dtype=np.int64))
    from zslretrieval.index.searchers.faiss_files import apply_search_params
    params, rr = split_rerank(c.search_params)
    apply_search_params(index, params)
    D, I = index.search(xq, rr)
    _, I = rerank(D, I, xq, vector_scorer(x, "ip"), 10)
    assert recall_at(I, _exact(x, xq, 10)[0]) >= 0.85


def test_open_index_reranks_from_stored_features(tmp_path):
    both = _clustered(3020, seed=3)
    x, xq = both[:3000], both[3000:]
    paths = [f"v/{i}" for i in range(3000)]
    ix = index_features("pq", x, paths, [None] * 3000, root=tmp_path, index_type="IVF32,PQ8x8np",
                        search_params="nprobe=32,rerank=200")
    ix.close()
    ix = open_index("pq", root=tmp_path)
    D, I = ix.search(xq, 10)
    recs = {r.id: int(r.path.split("/")[1]) for r in ix.records(np.unique(I))}
    rows = np.vectorize(recs.get)(I)
    # scores are exact inner products of the returned rows (not PQ approximations) and sorted
    np.testing.assert_allclose(D, np.einsum("qd,qkd->qk", xq, x[rows]), rtol=1e-5, atol=1e-6)
    assert (np.diff(D, axis=1) <= 1e-7).all()
    truth, _ = _exact(x, xq, 10)
    assert recall_at(rows, truth) >= 0.95   # all lists probed: only PQ's shortlist can miss
    ix.close()


def test_auto_index_is_built_once_and_equals_a_rebuild(tmp_path, monkeypatch):
    # the index tuned while choosing is the one written: one build of the chosen type, not a second in sync_index
    from zslretrieval.index import autotune, sync
    from zslretrieval.index.autotune import AutoIndexOptions
    from zslretrieval.index.layout import index_folder
    from zslretrieval.index.searchers import faiss_files
    from zslretrieval.index.writer import IndexWriter

    made, new_index = [], faiss_files.new_index

    def counting_new_index(spec, *args, **kw):
        made.append((normalize_index_type(spec), new_index(spec, *args, **kw)))
        return made[-1][1]

    for mod in (faiss_files, sync, autotune):   # wherever a build may look the name up
        if hasattr(mod, "new_index"):
            monkeypatch.setattr(mod, "new_index", counting_new_index)
    x = _clustered(3000, dim=64, seed=4)
    budget = memory_estimate("Flat", 3000, 64) // 2          # only IVF-PQ fits
    ix = index_features("auto", x, [f"v/{i}" for i in range(3000)], [None] * 3000, root=tmp_path, index_type="auto",
                        auto=AutoIndexOptions(max_memory=budget, recall_target=0.99))
    chosen, params = ix.manifest.index_type, ix.manifest.search_params
    assert "PQ" in chosen and params != "nprobe=1,rerank=100"   # tuned past the built-in nprobe
    built = [index for spec, index in made if spec == chosen and index.ntotal]   # filled, not just validated
    assert len(built) == 1, [spec for spec, _ in made]
    # the file holds every entry: the tuned index (built without its held-out queries) plus those queries
    assert ix.in_sync() and ix.ntotal == 3000
    ids, _ = ix.entry_ids()
    xq = x[:50] / np.linalg.norm(x[:50], axis=1, keepdims=True)
    _, tuned = ix.search(xq, 10)
    exact = ix.search(xq, None)[1][:, :10]
    ix.close()
    # a rebuild from the stored features (trained on all entries) is the same type and as good
    with IndexWriter(index_folder("auto", tmp_path), create=False) as w:
        w.sync_index(rebuild=True)
    from zslretrieval.index import open_index
    with open_index("auto", tmp_path) as ix2:
        assert ix2.manifest.index_type == chosen and ix2.ntotal == 3000
        _, rebuilt = ix2.search(xq, 10)
    for got in (tuned, rebuilt):
        assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]) >= 0.95
