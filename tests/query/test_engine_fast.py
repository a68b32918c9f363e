"""The engine's fast paths (affine projection, cached record table, top-k clamping) against
the exact references they replace: ``model.embed_classes``, ``OpenIndex.records`` and the full
exact ranking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from zslretrieval.cli import cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.index import open_index
from zslretrieval.ingest import index_features
from zslretrieval.query import QueryConfig, QueryEngine, QuerySpec, run_query
from zslretrieval.query import results as results_mod
from zslretrieval.query.engine import Projector

from .fakes import VOCAB, LinearModel


class MlpModel(LinearModel):
    """A non-affine projection (ReLU), which must keep the torch path."""

    name = "fake-mlp"

    def embed_classes(self, s):
        return torch.relu(self.sem(s)) + 0.1 * self.sem(s)


def test_affine_projection_equals_embed_classes():
    model = LinearModel(8, [len(VOCAB)], seed=1).eval()
    with torch.no_grad():
        model.sem.bias = nn.Parameter(torch.randn(model.sem.out_features))  # affine, not just linear
    p = Projector(model)
    assert p.affine
    s = np.random.default_rng(0).standard_normal((50, len(VOCAB))).astype(np.float32)
    with torch.no_grad():
        want = model.embed_classes(torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(p(s), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p(s[:1]), want[:1], rtol=1e-5, atol=1e-6)


def test_non_affine_projection_keeps_torch_exactly():
    model = MlpModel(8, [len(VOCAB)], seed=1).eval()
    p = Projector(model)
    assert not p.affine
    s = np.random.default_rng(0).standard_normal((5, len(VOCAB))).astype(np.float32)
    with torch.no_grad():
        want = model.embed_classes(torch.from_numpy(s)).numpy()
    np.testing.assert_array_equal(p(s), want)


@pytest.fixture(scope="module")
def real_index(tmp_path_factory):
    """A 60-image index (FAISS + SQL catalog) under an ESZSL model fitted on synthetic data."""
    from .test_end_to_end import eszsl_checkpoint

    root = tmp_path_factory.mktemp("fast")
    ds, _, _, ckpt = eszsl_checkpoint(root, seed=5)
    rows = np.sort(ds.split_indices("test_unseen"))[:60]
    ix = index_features("fast", ds.features[rows], [f"img/{r}.jpg" for r in rows],
                        [ds.class_names[c] for c in ds.labels[rows]], model_checkpoint=ckpt, root=root)
    ix.close()
    return root, list(ds.attribute_names), [ds.class_names[c] for c in ds.split_classes("test_unseen")]


def _engine(real):
    return QueryEngine(open_index("fast", root=real[0]))


def test_record_table_equals_catalog_records(real_index):
    eng = _engine(real_index)
    vocab, classes = real_index[1], real_index[2]
    specs = [QuerySpec("attributes", f"{vocab[0]}, -{vocab[3]}"), QuerySpec("class", classes[0])]
    first = eng.run(specs, k=7)            # per-call catalog lookup
    second = eng.run(specs, k=7)           # whole table read once, then list reads
    t = eng.records_table
    assert isinstance(t.by_id, list) and sum(r is not None for r in t.by_id) == 60
    for a, b in zip(first, second):
        assert [h.to_dict() for h in a.hits] == [h.to_dict() for h in b.hits]
        recs = eng.index.records([h.id for h in b.hits])
        assert [(h.path, h.label, h.status) for h in b.hits] == [(r.path, r.label, r.status) for r in recs]
    # an id the table lacks (a gap, or past its end) falls back to the catalog
    t.by_id[second[0].hits[0].id] = None
    assert [h.to_dict() for h in eng.run(specs, k=7)[0].hits] == [h.to_dict() for h in second[0].hits]
    del t.by_id[max(h.id for h in second[0].hits):]
    assert [h.to_dict() for h in eng.run(specs, k=7)[0].hits] == [h.to_dict() for h in second[0].hits]
    # sparse ids: a dict, with the same fallback
    t.load()
    t.by_id = {i: r for i, r in enumerate(t.by_id) if r is not None and i != second[1].hits[2].id}
    assert [h.to_dict() for h in eng.run(specs, k=7)[1].hits] == [h.to_dict() for h in second[1].hits]
    eng.index.close()


def test_lean_attribute_path_equals_general_path_bit_for_bit(real_index):
    """run()'s lean path for attribute lists gives the descriptors and vectors of prepare_all + embed
    exactly, and its unchecked search the hits of the checked one; where a check fails it steps
    aside so that the general path raises its own error."""
    eng = _engine(real_index)
    vocab = real_index[1]
    texts = [f"{vocab[0]}, -{vocab[3]}", f"{vocab[1]}=0.25, {vocab[2]}, {vocab[1]}=0.5", vocab[4].upper(),
             f"{vocab[5]}=2e-3, -{vocab[6]}=0.5, {vocab[7]}=+.75e1", f"{vocab[8]}=1e-30, {vocab[9]}=1e-3"]
    specs = [QuerySpec("attributes", t) for t in texts]
    for batch in [specs[:1], specs[1:2], specs[:4], specs]:
        lean = eng._attribute_queries(batch)
        assert lean is not None
        prepared, V = eng.prepare_all(batch)
        if V is None:
            V = np.stack([p.descriptor for p in prepared])
        want = eng.embed(prepared, V)
        assert lean[1].dtype == np.float32 and lean[1].tobytes() == want.tobytes()
        for a, b in zip(lean[0], prepared):
            assert a.resolved == b.resolved and a.descriptor.tobytes() == b.descriptor.tobytes()
        D, I = eng.index.search_unchecked(lean[1], 9)
        Dc, Ic = eng.index.search(want, 9)
        np.testing.assert_array_equal(I, Ic)
        np.testing.assert_array_equal(D[I >= 0], Dc[Ic >= 0])
    # a zero descriptor (also when the squares underflow), or a too-large one: None, and run() raises
    # the general path's errors
    assert eng._attribute_queries([QuerySpec("attributes", f"{vocab[0]}=0")]) is None
    assert eng._attribute_queries([QuerySpec("attributes", f"{vocab[0]}=1e-30")]) is None
    assert eng._attribute_queries([specs[0], QuerySpec("attributes", f"{vocab[0]}=1e30")]) is None
    with pytest.raises(InvalidInputError, match="all zeros"):
        eng.run([QuerySpec("attributes", f"{vocab[0]}=0")], k=3)
    assert eng._attribute_queries([QuerySpec("class", real_index[2][0])]) is None
    eng.index.close()


def test_projector_skips_a_zero_bias_and_matches_matmul_bit_for_bit():
    model = LinearModel(8, [len(VOCAB)], seed=1).eval()   # linear: f(0) = 0
    p = Projector(model)
    assert p.affine and not p._add_b
    rng = np.random.default_rng(0)
    for q in (1, 2, 7, 64):
        s = rng.standard_normal((q, len(VOCAB))).astype(np.float32)
        s[:, ::3] = 0
        assert p(s).tobytes() == (s @ p.W + p.b).tobytes()
    with torch.no_grad():
        model.sem.bias = nn.Parameter(torch.randn(model.sem.out_features))
    p = Projector(model)
    assert p._add_b
    s = rng.standard_normal((3, len(VOCAB))).astype(np.float32)
    assert p(s).tobytes() == (s @ p.W + p.b).tobytes()


def test_top_k_beyond_index_is_the_full_ranking(real_index):
    eng = _engine(real_index)
    vocab = real_index[1]
    spec = [QuerySpec("attributes", f"{vocab[1]}, {vocab[2]}=0.5")]
    full = eng.run(spec, k=None)[0]
    huge = eng.run(spec, k=10**9)[0]
    exact60 = eng.run(spec, k=60)[0]
    assert len(full.hits) == 60
    assert [h.id for h in huge.hits] == [h.id for h in full.hits] == [h.id for h in exact60.hits]
    assert eng.effective_k(59) == 59 and eng.effective_k(60) is None and eng.effective_k(10**12) is None
    eng.index.close()
    # the library call used by the CLI, the API and the server
    run = run_query(QueryConfig(specs=spec, index="fast", index_root=str(real_index[0]), top_k=10**9))
    assert [h.id for h in run.results[0].hits] == [h.id for h in full.hits]
    r = CliRunner().invoke(cli, ["query", "--index", "fast", "--index-root", str(real_index[0]), "--attributes",
                                 vocab[1], "--top-k", "1000000000", "--json"])
    assert r.exit_code == 0, r.output
    assert r.output.count('"rank"') == 60


def test_result_size_is_bounded_before_allocation(real_index, monkeypatch):
    eng = _engine(real_index)
    monkeypatch.setattr(results_mod, "MAX_RESULTS", 100)
    with pytest.raises(InvalidInputError, match="at most 100 per call"):
        eng.run([QuerySpec("attributes", real_index[1][0])] * 2, k=10**9)    # 2 x 60 > 100
    assert len(eng.run([QuerySpec("attributes", real_index[1][0])] * 10, k=10)) == 10
    with pytest.raises(InvalidInputError, match="top-k"):
        eng.run([QuerySpec("attributes", real_index[1][0])], k=0)
    eng.index.close()


def test_faiss_id_table_equals_searchsorted(real_index):
    ix = open_index("fast", root=real_index[0])
    assert ix._lut is not None
    fid = np.array([[-1, 0, 3, int(ix._fids[-1]), int(ix._fids[-1]) + 5, 10**12]], np.int64)
    fast = ix._to_image_ids(fid)
    ix._lut = None
    np.testing.assert_array_equal(fast, ix._to_image_ids(fid))
    assert fast[0, 0] == -1 and fast[0, -1] == -1 and fast[0, -2] == -1
    ix.close()


def test_batch_of_attribute_queries_equals_one_by_one(real_index):
    """prepare_all builds one descriptor matrix for a batch: bit for bit the per-query descriptors,
    the same resolved terms, and the same ranked hits as running each query alone."""
    eng = _engine(real_index)
    vocab = real_index[1]
    texts = [f"{vocab[0]}, -{vocab[3]}", f"{vocab[1]}=0.25, {vocab[2]}, {vocab[1]}=0.5", vocab[4],
             f"{vocab[5]}=2, -{vocab[6]}=0.5"]
    specs = [QuerySpec("attributes", t) for t in texts]
    batch, V = eng.prepare_all(specs)
    assert V is not None and V.shape == (4, len(vocab))
    for p, spec in zip(batch, specs):
        one = eng.prepare(spec)
        np.testing.assert_array_equal(p.descriptor, one.descriptor)
        assert p.resolved == one.resolved
    together = eng.run(specs, k=9)
    alone = [eng.run([s], k=9)[0] for s in specs]
    for a, b in zip(together, alone):
        assert [h.to_dict() for h in a.hits] == [h.to_dict() for h in b.hits] and a.resolved == b.resolved
    # mixed kinds fall back to one-by-one preparation
    assert eng.prepare_all([specs[0], QuerySpec("class", real_index[2][0])])[1] is None
    with pytest.raises(InvalidInputError, match="all zeros"):
        eng.run([specs[0], QuerySpec("attributes", f"{vocab[0]}=0")], k=3)
    eng.index.close()


def test_one_attribute_query_runs_the_lean_stages_only(real_index, monkeypatch):
    """run() for one attribute list: _attribute_descriptors, _attribute_embed, the index's search_unchecked
    and collect, nothing of the general path -- the stages scripts/bench_query.py times for it."""
    eng = _engine(real_index)
    vocab = real_index[1]
    spec = QuerySpec("attributes", f"{vocab[1]}=0.25, {vocab[2]}, -{vocab[3]}")
    want = eng.run([spec], k=7)[0]
    lean = eng._lean_setup()
    prepared, V = eng._attribute_descriptors([spec], lean)
    xq = eng._attribute_embed(V, lean)
    assert xq.tobytes() == eng._attribute_queries([spec])[1].tobytes()
    staged = eng.collect(prepared, *eng.index.search_unchecked(xq, 7))[0]
    assert [h.to_dict() for h in staged.hits] == [h.to_dict() for h in want.hits] and staged.resolved == want.resolved
    calls = []

    def spy(obj, name):
        f = getattr(obj, name)
        monkeypatch.setattr(obj, name, lambda *a, **kw: calls.append(name) or f(*a, **kw))

    for name in ("_attribute_descriptors", "_attribute_embed", "collect", "prepare", "prepare_all", "embed",
                 "search_vectors"):
        spy(eng, name)
    spy(eng.index, "search")
    spy(eng.index, "search_unchecked")
    eng._search_unchecked = eng.index.search_unchecked   # the engine holds the bound method it was made with
    assert [h.to_dict() for h in eng.run([spec], k=7)[0].hits] == [h.to_dict() for h in want.hits]
    assert calls == ["_attribute_descriptors", "_attribute_embed", "search_unchecked", "collect"]
    eng.index.close()
