"""Filters inside the search: a filtered query returns exactly the matching images that rank highest.

A real index (FAISS + SQLite catalog) of synthetic features; the catalog's size, pixel and date
columns are filled in by SQL as ``zslr index`` fills them for image files. The reference is brute
force: the engine's full unfiltered ranking, filtered afterwards, cut to k.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import update

from tests.query.test_end_to_end import eszsl_checkpoint
from zslretrieval.cli import cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.index import open_index
from zslretrieval.index.catalog import ImageRow
from zslretrieval.ingest import index_features
from zslretrieval.query import QueryConfig, QueryEngine, QuerySpec, run_query
from zslretrieval.query.filters import SearchFilter, allowed_ids, parse_date, parse_size
from zslretrieval.query.refined import SearchOptions

FOLDERS = ("/photos/2023/beach", "/photos/2024/beach", "/photos/2024/city", "/archive/misc")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("filter-idx")
    ds, _, _, ckpt = eszsl_checkpoint(root, seed=3)
    rows = np.sort(np.concatenate([ds.split_indices("test_seen"), ds.split_indices("test_unseen")]))
    paths = [f"{FOLDERS[i % len(FOLDERS)]}/img{r}.{'jpg' if i % 3 else 'png'}" for i, r in enumerate(rows)]
    ix = index_features("filt", ds.features[rows], paths, [ds.class_names[c] for c in ds.labels[rows]],
                        model_checkpoint=ckpt, root=root)
    rng = np.random.default_rng(0)
    meta = {}
    with ix.catalog.session() as s:
        for r in ix.all_records():
            size = int(rng.integers(1_000, 500_000))
            w, h = (int(v) for v in rng.integers(100, 2000, size=2))
            when = dt.datetime(2023, 1, 1) + dt.timedelta(days=int(rng.integers(0, 700)), seconds=int(rng.integers(0, 86400)))
            meta[r.id] = {"path": r.path, "size": size, "side": min(w, h), "when": when}
            s.execute(update(ImageRow).where(ImageRow.id == r.id).values(size=size, width=w, height=h, taken_at=when))
        s.commit()
    ix.close()
    return root, ds, meta


def brute_force(engine, spec, keep, k):
    full = engine.run([spec], None)[0].hits
    return [(h.id, h.score) for h in full if keep(h.id)][:k]


FILTERS = [
    (SearchFilter(folder="/photos/2024"), lambda m: m["path"].startswith("/photos/2024/")),
    (SearchFilter(path_glob="*/beach/*.png"), lambda m: fnmatch.fnmatchcase(m["path"], "*/beach/*.png")),
    (SearchFilter(min_bytes=250_000), lambda m: m["size"] >= 250_000),
    (SearchFilter(min_side=900), lambda m: m["side"] >= 900),
    (SearchFilter(taken_after="2023-06-01", taken_before="2024-02-29"),
     lambda m: dt.datetime(2023, 6, 1) <= m["when"] < dt.datetime(2024, 3, 1)),
    (SearchFilter(folder="/photos", min_bytes=100_000, taken_after="2023-03-01"),
     lambda m: m["path"].startswith("/photos/") and m["size"] >= 100_000 and m["when"] >= dt.datetime(2023, 3, 1)),
]


@pytest.mark.parametrize("case", range(len(FILTERS)))
@pytest.mark.parametrize("kind", ["class", "attributes"])
def test_filtered_query_equals_brute_force(built, case, kind):
    root, ds, meta = built
    flt, pred = FILTERS[case]
    ix = open_index("filt", root=root)
    try:
        engine = QueryEngine(ix)
        spec = (QuerySpec("class", ds.class_names[ds.split_classes("test_unseen")[0]]) if kind == "class"
                else QuerySpec("attributes", ",".join(ds.attribute_names[:3])))
        matching = sum(pred(m) for m in meta.values())
        assert 0 < matching < len(meta)
        for k in (5, matching, None):
            got = engine.run([spec], k, options=SearchOptions(filter=flt))[0]
            want = brute_force(engine, spec, lambda i: pred(meta[i]), matching if k is None else k)
            assert [h.id for h in got.hits] == [i for i, _ in want]
            np.testing.assert_allclose([h.score for h in got.hits], [s for _, s in want], rtol=1e-5, atol=1e-6)
            assert got.resolved["filter"]
        # k beyond the matching images: every matching image, never fewer
        got = engine.run([spec], matching + 7, options=SearchOptions(filter=flt))[0]
        assert len(got.hits) == matching
    finally:
        ix.close()


def test_allowed_ids_and_an_empty_match(built):
    root, _, meta = built
    ix = open_index("filt", root=root)
    try:
        ids = allowed_ids(ix, SearchFilter(folder="/photos/2023"))
        assert list(ids) == sorted(i for i, m in meta.items() if m["path"].startswith("/photos/2023/"))
        # a folder that is only a name prefix of another does not match it
        assert len(allowed_ids(ix, SearchFilter(folder="/photos/202"))) == 0
        res = QueryEngine(ix).run([QuerySpec("attributes", "attr_00")], 10, options=SearchOptions(
            filter=SearchFilter(path_glob="*.gif")))
        assert res[0].hits == []
    finally:
        ix.close()


def test_filter_values_are_checked():
    with pytest.raises(InvalidInputError, match="empty"):
        SearchFilter(taken_after="2024-05-02", taken_before="2024-05-01")
    with pytest.raises(InvalidInputError, match="ISO date"):
        SearchFilter(taken_after="yesterday")
    with pytest.raises(InvalidInputError, match="bytes"):
        SearchFilter(min_bytes=-1)
    assert parse_size("200k") == 200 * 1024 and parse_size("1.5M") == 1536 * 1024 and parse_size("3000") == 3000
    with pytest.raises(InvalidInputError, match="200k"):
        parse_size("big")
    # a bare day as the end of a range keeps that whole day
    assert parse_date("2024-05-01", end=True) == dt.datetime(2024, 5, 1, 23, 59, 59, 999999)
    assert not SearchFilter().active


def test_cli_and_api_filters(built):
    root, ds, meta = built
    attrs = ",".join(ds.attribute_names[:2])
    out = CliRunner().invoke(cli, ["query", "--index", "filt", "--index-root", str(root), "--attributes", attrs,
                                   "--folder", "/photos/2024", "--min-bytes", "100k", "--top-k", "50",
                                   "--format", "json"])
    assert out.exit_code == 0, out.output
    hits = json.loads(out.output)["results"]
    want = [i for i, m in meta.items() if m["path"].startswith("/photos/2024/") and m["size"] >= 100 * 1024]
    assert len(hits) == min(50, len(want)) and {h["id"] for h in hits} <= set(want)
    run = run_query(QueryConfig([QuerySpec("attributes", attrs)], index="filt", index_root=str(root), top_k=50,
                                filter=SearchFilter(folder="/photos/2024", min_bytes=100 * 1024)))
    assert [h.id for h in run.results[0].hits] == [h["id"] for h in hits]
    bad = CliRunner().invoke(cli, ["query", "--index", "filt", "--index-root", str(root), "--attributes", attrs,
                                   "--after", "someday"])
    assert bad.exit_code == 2 and "ISO date" in bad.output
