"""The API's feedback, filters and relevance cut-off (GET and POST) equal the query library's."""
from __future__ import annotations

import pytest

from zslretrieval.query import QueryConfig, QuerySpec, SearchFilter, run_query

from .test_api import api  # noqa: F401  (module fixture: the demo index served in-process)


def library(folder, **kw):
    return run_query(QueryConfig([QuerySpec("attributes", "stripes, water")], index=str(folder), top_k=10, **kw)).results[0]


def test_feedback_filter_and_cut_off_equal_the_library(api, demo_index):  # noqa: F811
    c, _ = api
    base = c.get("/api/search", params={"attributes": "stripes, water", "top_k": 10}).json()["queries"][0]
    ids = [h["id"] for h in base["results"]]
    assert all(0 <= h["relevance"] <= 1 for h in base["results"])
    want = library(demo_index, more_like=(ids[0], ids[2]), less_like=(ids[1],))
    got = c.get("/api/search", params={"attributes": "stripes, water", "top_k": 10, "more_like": f"{ids[0]},{ids[2]}",
                                       "less_like": str(ids[1])}).json()["queries"][0]
    assert [h["id"] for h in got["results"]] == [h.id for h in want.hits]
    assert got["resolved"]["feedback"]["less_like"] == [ids[1]]
    post = c.post("/api/search", json={"queries": [{"kind": "attributes", "value": "stripes, water"}], "top_k": 10,
                                       "more_like": [ids[0], ids[2]], "less_like": [ids[1]]}).json()["queries"][0]
    assert [h["id"] for h in post["results"]] == [h.id for h in want.hits]

    folder = sorted(p for p in (demo_index.parents[1] / "images").iterdir() if p.is_dir())[0]
    want = library(demo_index, filter=SearchFilter(folder=str(folder)))
    for r in (c.get("/api/search", params={"attributes": "stripes, water", "top_k": 10, "folder": str(folder)}),
              c.post("/api/search", json={"queries": [{"kind": "attributes", "value": "stripes, water"}],
                                          "top_k": 10, "folder": str(folder)})):
        q = r.json()["queries"][0]
        assert [h["id"] for h in q["results"]] == [h.id for h in want.hits] and q["results"] and not q["more"]

    cut = base["results"][3]["relevance"]
    q = c.get("/api/search", params={"attributes": "stripes, water", "top_k": 10, "min_score": cut}).json()["queries"][0]
    assert [h["id"] for h in q["results"]] == [h["id"] for h in base["results"] if h["relevance"] >= cut]


@pytest.mark.parametrize("params, message", [
    ({"more_like": "1,x"}, "catalog image id"),
    ({"more_like": "999999"}, "not entries"),
    ({"after": "someday"}, "ISO date"),
    ({"min_bytes": "lots"}, "200k"),
    ({"min_score": "2"}, "min_score"),
])
def test_bad_refine_values_are_400_naming_them(api, params, message):  # noqa: F811
    c, _ = api
    r = c.get("/api/search", params={"attributes": "stripes", **params})
    assert r.status_code == 400 and message in r.json()["error"], r.json()
