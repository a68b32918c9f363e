"""``GET /api/duplicates``: the groups ``zslr duplicates`` finds, with names relative to the collection
(no server path), the threshold bounded, and the served index never written."""
from __future__ import annotations

from fastapi.testclient import TestClient

from zslretrieval.index.duplicates import DEFAULT_THRESHOLD, find_duplicates
from zslretrieval.serve import SearchService, ServeConfig, create_app

from .conftest import folder_state


def test_duplicates_route_equals_library(demo_index, tmp_path):
    before = folder_state(demo_index)
    svc = SearchService(ServeConfig(index=str(demo_index), cache_dir=str(tmp_path / "thumbs"), reload_interval=0,
                                    preload=False))
    with TestClient(create_app(svc), base_url="http://127.0.0.1:8000") as c:
        # a low threshold: the generated images of one class are alike, so there are groups to compare
        t = 0.6
        got = c.get("/api/duplicates", params={"threshold": t})
        assert got.status_code == 200, got.text
        doc = got.json()
        want = find_duplicates(demo_index, threshold=t)
        assert doc["groups"] and doc["threshold"] == t and doc["images"] == want.n_images
        assert [[m["id"] for m in g["members"]] for g in doc["groups"]] == [[m.id for m in g.members] for g in want.groups]
        assert [g["keep"] for g in doc["groups"]] == [g.keep for g in want.groups]
        names = [m["name"] for g in doc["groups"] for m in g["members"]]
        assert all("path" not in m for g in doc["groups"] for m in g["members"])
        assert not any(n.startswith("/") for n in names)
        assert c.get("/api/duplicates").json()["threshold"] == DEFAULT_THRESHOLD
        for bad in ("0", "1.5", "x"):
            r = c.get("/api/duplicates", params={"threshold": bad})
            assert r.status_code == 400 and "threshold" in r.json()["error"], (bad, r.text)
    assert folder_state(demo_index) == before
