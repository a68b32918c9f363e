"""The JSON API in-process (FastAPI TestClient) on a real index: results equal the query library's,
bounds and malformed input give 4xx JSON naming the problem, images only by catalog id, the index
is never written, and a new index state is picked up only when it is consistent."""
from __future__ import annotations

import hashlib
import io
import os
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text

from zslretrieval.query import QueryConfig, QuerySpec, run_query
from zslretrieval.serve import MAX_QUERIES, MAX_TOP_K, SearchService, ServeConfig, create_app

from .conftest import folder_state, index_copy

BASE = "http://127.0.0.1:8000"


def client(folder, tmp_path, **kw) -> tuple[TestClient, SearchService]:
    token = kw.pop("token", None)
    loopback_only = kw.pop("loopback_only", True)
    svc = SearchService(ServeConfig(index=str(folder), cache_dir=str(tmp_path / "thumbs"), reload_interval=0, **kw))
    return TestClient(create_app(svc, token=token, loopback_only=loopback_only), base_url=BASE), svc


@pytest.fixture(scope="module")
def api(demo_index, tmp_path_factory):
    before = folder_state(demo_index)
    c, svc = client(demo_index, tmp_path_factory.mktemp("cache"))
    with c:
        yield c, svc
    # whatever the tests asked, the served index is byte-for-byte untouched
    assert folder_state(demo_index) == before


def library(folder, spec: QuerySpec, k: int):
    return run_query(QueryConfig([spec], index=str(folder), top_k=k)).results[0]


def test_attribute_search_equals_query_library_and_pages(api, demo_index, demo_counts):
    c, _ = api
    r = c.get("/api/search", params={"attributes": "stripes, water=0.5, -sky", "top_k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    q = body["queries"][0]
    n = demo_counts["images"]
    ref = library(demo_index, QuerySpec("attributes", "stripes, water=0.5, -sky"), n)
    assert [h["id"] for h in q["results"]] == [h.id for h in ref.hits[:10]]
    np.testing.assert_allclose([h["score"] for h in q["results"]], [h.score for h in ref.hits[:10]], rtol=1e-6)
    assert q["resolved"]["attributes"] == [{"name": "stripes", "weight": 1.0}, {"name": "water", "weight": 0.5},
                                           {"name": "sky", "weight": -1.0}]
    assert q["more"] is True and body["entries"] == n
    # paging through the whole index gives the library's full ranking, each id once
    ids, offset = [], 0
    while True:
        page = c.get("/api/search", params={"attributes": "stripes, water=0.5, -sky", "top_k": 7,
                                            "offset": offset}).json()["queries"][0]
        ids += [h["id"] for h in page["results"]]
        assert [h["rank"] for h in page["results"]] == list(range(offset + 1, offset + 1 + len(page["results"])))
        if not page["more"]:
            break
        offset += 7
    assert ids == [h.id for h in ref.hits] and len(ids) == n
    # a page past the end is empty, not an error
    assert c.get("/api/search", params={"attributes": "red", "offset": n + 12}).json()["queries"][0]["results"] == []


def test_several_queries_post_equals_get_and_class_explains(api):
    c, svc = api
    cls = svc.vocabulary()["unseen_classes"][0]
    g = c.get(f"/api/search?attributes=red,circle&class={cls}&top_k=5").json()
    p = c.post("/api/search", json={"queries": [{"kind": "attributes", "value": "red,circle"},
                                                {"kind": "class", "value": cls}], "top_k": 5}).json()
    assert [q["results"] for q in g["queries"]] == [q["results"] for q in p["queries"]]
    assert [q["query"]["kind"] for q in g["queries"]] == ["attributes", "class"]
    res = g["queries"][1]["resolved"]
    assert res["class"] == cls and res["attributes"]  # "why": the class's strongest attributes
    assert g["queries"][0]["results"] != g["queries"][1]["results"]
    hit = g["queries"][0]["results"][0]
    assert hit["thumb"] == f"/api/images/{hit['id']}/thumb" and "/" in hit["name"]
    assert not os.path.isabs(hit["name"])      # the server's folder layout is not shown


@pytest.mark.parametrize("url, status, words", [
    ("/api/search?attributes=strpes", 400, ["unknown attribute 'strpes'", "stripes"]),
    ("/api/search?attributes=red=abc", 400, ["weight 'abc'"]),
    ("/api/search?attributes=red&top_k=0", 400, ["top_k"]),
    (f"/api/search?attributes=red&top_k={MAX_TOP_K + 1}", 400, ["top_k", str(MAX_TOP_K)]),
    ("/api/search?attributes=red&offset=-1", 400, ["offset"]),
    ("/api/search?attributes=red&offset=99999999", 400, ["offset"]),
    ("/api/search?attributes=red&top_k=ten", 400, ["top_k", "integer"]),
    ("/api/search?attributes=red&general_weight=2", 400, ["general_weight"]),
    ("/api/search?attributes=red&general_weight=0", 400, ["general_weight"]),
    ("/api/search", 400, ["no query given"]),
    ("/api/search?class=zebra", 400, ["unknown class 'zebra'"]),
    ("/api/search?vector=1,2,3", 400, ["3 values", "16 attributes"]),
    ("/api/search?" + "&".join(["attributes=red"] * (MAX_QUERIES + 1)), 400, [str(MAX_QUERIES)]),
])
def test_bad_queries_are_4xx_json_naming_the_problem(api, url, status, words):
    c, _ = api
    r = c.get(url)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    for w in words:
        assert w in msg, msg


def test_unknown_name_carries_suggestions(api):
    r = api[0].get("/api/search?attributes=stripez")
    assert r.status_code == 400 and "stripes" in r.json()["suggestions"]


def test_text_query_is_a_clear_4xx_when_the_index_cannot_answer_it(api):
    from zslretrieval.query import KINDS

    r = api[0].get("/api/search?text=a+red+circle+on+water")
    if "text" in KINDS and api[1].capabilities()["text"]:
        assert r.status_code == 200, r.text
        assert r.json()["queries"][0]["query"]["kind"] == "text"
    else:
        assert r.status_code == 422 and "text" in r.json()["error"]


def test_post_body_is_validated(api):
    c, _ = api
    for body, word in [({"queries": []}, "queries"), ({"queries": [{"kind": "image", "value": "/etc/passwd"}]}, "kind"),
                       ({"queries": [{"kind": "attribute-file", "value": "/etc/passwd"}]}, "kind"),
                       ({"queries": [{"kind": "attributes", "value": "red"}], "top_k": 1000}, "top_k"),
                       ({"queries": [{"kind": "attributes", "value": "a," * 40_000}]}, "value"),
                       ({"queries": [{"kind": "attributes", "value": "red"}] * (MAX_QUERIES + 1)}, "queries")]:
        r = c.post("/api/search", json=body)
        assert r.status_code == 400 and word in r.json()["error"], r.text
    r = c.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    r = c.post("/api/search", content=b"[" + b" " * (3 << 20) + b"]", headers={"content-type": "application/json"})
    assert r.status_code == 413 and "bytes" in r.json()["error"]


def _jpeg_of(path) -> bytes:
    return path.read_bytes()


def test_image_upload_equals_query_by_file_and_is_guarded(api, demo_index):
    c, _ = api
    probe = sorted((demo_index.parents[1] / "images").rglob("*.jpg"))[5]
    r = c.post("/api/search/image?top_k=6&name=probe.jpg&attributes=red", content=probe.read_bytes(),
               headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    qs = r.json()["queries"]
    assert [q["query"]["kind"] for q in qs] == ["attributes", "image"]
    ref = library(demo_index, QuerySpec("image", str(probe)), 6)
    assert [h["id"] for h in qs[1]["results"]] == [h.id for h in ref.hits]
    np.testing.assert_allclose([h["score"] for h in qs[1]["results"]], [h.score for h in ref.hits], atol=1e-5)
    assert qs[1]["results"][0]["name"].endswith(probe.name)
    # not an image, truncated, decompression bomb: 400 with the ingestion decoder's reason
    cut = probe.read_bytes()[:300]
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    for data, word in [(b"hello", "not an image"), (cut, "truncated"), (bomb.getvalue(), "decompression bomb")]:
        r = c.post("/api/search/image", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 400 and word in r.json()["error"], r.text
    r = c.post("/api/search/image", content=b"", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = c.post("/api/search/image", content=probe.read_bytes(), headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_upload_size_cap_declared_and_streamed(demo_index, tmp_path):
    c, _ = client(demo_index, tmp_path, max_upload_bytes=1000, preload=False)
    with c:
        r = c.post("/api/search/image", content=b"\xff" * 1001, headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and "1000" in r.json()["error"]

        def chunks():   # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b"\xff" * 400
        r = c.post("/api/search/image", content=chunks(), headers={"content-type": "image/jpeg"})
        assert r.status_code == 413 and "1000" in r.json()["error"], r.text


def test_images_and_thumbnails_by_catalog_id_only(api, demo_index, tmp_path):
    c, svc = api
    hit = c.get("/api/search?attributes=red&top_k=1").json()["queries"][0]["results"][0]
    r = c.get(hit["image"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    path = next(p for p in (demo_index.parents[1] / "images").rglob("*") if str(p).endswith(hit["name"]))
    assert r.content == path.read_bytes()
    t = c.get(hit["thumb"])
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(t.content))
    assert max(im.size) <= 256 and im.format == "JPEG"
    # cached by content hash, outside the index
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert list(svc.cache_dir.rglob(f"{sha}-*.jpg"))
    assert c.get(hit["thumb"], headers={"if-none-match": t.headers["etag"]}).status_code == 304
    for bad in ["/api/images/999999", "/api/images/0", "/api/images/-3", "/api/images/abc", "/api/images/1.5",
                "/api/images/99999999999999999999999", "/api/images/..%2F..%2Fetc%2Fpasswd",
                "/api/images/%2e%2e/%2e%2e/etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2F..%2Fetc%2Fpasswd",
                "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/..%2Fservice.py", "/static/index.html",
                "/api/images/999999/thumb", "/etc/passwd", f"/api/images/{hit['id']}/..%2F..%2Fetc%2Fpasswd"]:
        r = c.get(bad)
        assert r.status_code == 404, (bad, r.status_code, r.text[:100])
        assert r.headers["content-type"] == "application/json" and "error" in r.json()


def test_removed_changed_and_outside_files_are_404(demo_index, tmp_path):
    folder, images = index_copy(demo_index, tmp_path / "copy")
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.jpg"
    shutil.copy2(next(images.rglob("*.jpg")), secret)
    files = sorted(images.rglob("*.jpg"))
    link_in = images / "link-inside.jpg"
    link_in.symlink_to(files[3])
    link_out = images / "link-outside.jpg"
    link_out.symlink_to(secret)
    eng = create_engine(f"sqlite:///{folder / 'catalog.sqlite'}")
    with eng.begin() as con:
        ids = dict(con.execute(text("SELECT path, id FROM images")).all())
        removed, changed, gone = ids[str(files[0])], ids[str(files[1])], ids[str(files[2])]
        inside, outside_id = ids[str(files[3])], ids[str(files[4])]
        con.execute(text("UPDATE images SET status='removed' WHERE id=:i"), {"i": removed})
        st = secret.stat()   # the outside row looks valid in every other respect (size, mtime, hash)
        con.execute(text("UPDATE images SET path=:p, size=:s, mtime_ns=:m, sha256=:h WHERE id=:i"),
                    {"p": str(link_out), "s": st.st_size, "m": st.st_mtime_ns,
                     "h": hashlib.sha256(secret.read_bytes()).hexdigest(), "i": outside_id})
        con.execute(text("UPDATE images SET path=:p WHERE id=:i"), {"p": str(link_in), "i": inside})
    eng.dispose()
    with open(files[1], "ab") as f:
        f.write(b"\0")
    files[2].unlink()
    c, _ = client(folder, tmp_path, preload=False)
    with c:
        for i, word in [(removed, "removed"), (changed, "changed"), (gone, "gone"), (outside_id, "outside")]:
            for suffix in ("", "/thumb"):
                r = c.get(f"/api/images/{i}{suffix}")
                assert r.status_code == 404 and word in r.json()["error"], (i, suffix, r.text)
        assert c.get(f"/api/images/{inside}").content == files[3].read_bytes()  # a link inside the collection
    # --images-root narrows what may be served
    c, _ = client(folder, tmp_path, preload=False, images_roots=(str(images / "nothing-here"),))
    with c:
        assert c.get(f"/api/images/{inside}").status_code == 404


def test_token_and_host_checks(demo_index, tmp_path):
    c, _ = client(demo_index, tmp_path, preload=False, token="s3cret", loopback_only=False)
    with c:
        assert c.get("/api/health").status_code == 401
        assert c.get("/").status_code == 401
        assert c.get("/api/health", headers={"authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/health", headers={"authorization": "Bearer s3cret"}).status_code == 200
        r = c.get("/?token=s3cret")
        assert r.status_code == 200 and "zslr_token=s3cret" in r.headers["set-cookie"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/info").status_code == 200   # the client now holds the cookie
    c, _ = client(demo_index, tmp_path, preload=False)
    with c:
        assert c.get("/api/health").status_code == 200
        r = c.get("/api/health", headers={"host": "attacker.example:8000"})
        assert r.status_code == 400 and "attacker.example" in r.json()["error"]
        assert c.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200


def test_page_static_and_openapi(api, demo_counts):
    c, _ = api
    r = c.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/static/app.js" in r.text and "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "IntersectionObserver" in c.get("/static/app.js").text
    assert c.get("/static/style.css").headers["content-type"].startswith("text/css")
    paths = c.get("/api/openapi.json").json()["paths"]
    assert {"/api/search", "/api/search/image", "/api/vocabulary", "/api/info", "/api/images/{image_id}/thumb"} <= set(paths)
    info = c.get("/api/info").json()
    assert info["capabilities"]["attributes"] and info["capabilities"]["class"] and info["capabilities"]["image"]
    assert info["in_sync"] and info["entries"] == demo_counts["images"]
    v = c.get("/api/vocabulary").json()
    assert "stripes" in v["attributes"] and len(v["classes"]) == demo_counts["classes"]


def test_new_index_state_is_picked_up_only_when_consistent(demo_index, demo_counts, tmp_path):
    from zslretrieval.features.pipeline import FileMeta
    from zslretrieval.index import open_index
    from zslretrieval.index.writer import ChunkItem, IndexWriter

    folder, images = index_copy(demo_index, tmp_path / "copy")
    c, svc = client(folder, tmp_path, preload=False)
    n = demo_counts["images"]
    q = "/api/search?attributes=red,circle&top_k=100"
    with c:
        first = c.get(q).json()
        assert first["generation"] == 1 and first["entries"] == n
        with open_index(folder, repair=False) as ix:
            ids, raw = ix.raw_features()
        src = sorted(images.rglob("*.jpg"))[0]
        new = images / "extra" / "copy.jpg"
        new.parent.mkdir()
        shutil.copy2(src, new)
        st = new.stat()
        meta = FileMeta(hashlib.sha256(new.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
        with IndexWriter(folder, folder.name, create=False) as w:
            w.commit_chunk([ChunkItem(str(new), "extra", meta)], raw[:1], [])
            # catalog committed, FAISS not yet synced: the server keeps the old, consistent state
            before = folder_state(folder)
            assert svc.refresh() is False
            mid = c.get(q).json()
            assert mid["generation"] == 1 and mid["queries"] == first["queries"]
            # a reader shown an out-of-sync index does not repair it: nothing under the folder changed
            assert folder_state(folder) == before
            w.sync_index()
        assert svc.refresh() is True
        after = c.get(q).json()
        assert after["generation"] == 2 and after["entries"] == n + 1
        assert len(after["queries"][0]["results"]) == min(n + 1, MAX_TOP_K)
        # the new photo is served: paging through the whole ranking finds it, by its collection name
        names, offset = [], 0
        while True:
            page = c.get(q + f"&offset={offset}").json()["queries"][0]
            names += [h["name"] for h in page["results"]]
            if not page["more"]:
                break
            offset += 100
        assert len(names) == n + 1 and "extra/copy.jpg" in names
        assert svc.refresh() is False   # unchanged since


def test_serve_help_does_not_import_the_stack():
    import subprocess
    import sys

    code = ("import sys; from zslretrieval.cli import main\n"
            "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(_repo()), os.environ.get("PYTHONPATH", "")])})
    assert "--images-root" in out.stdout and "LOADED []" in out.stdout, out.stdout + out.stderr


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def test_top_k_beyond_the_index_is_the_full_ranking(api, demo_index, demo_counts):
    """top_k above the index's entries: every entry once, in the library's full-ranking order; with more
    entries than MAX_TOP_K, the first MAX_TOP_K of that order and ``more``."""
    c, _ = api
    n = demo_counts["images"]
    spec = QuerySpec("attributes", "red, circle=0.5, -sky")
    full = run_query(QueryConfig([spec], index=str(demo_index), top_k=None)).results[0]
    huge = run_query(QueryConfig([spec], index=str(demo_index), top_k=10**9)).results[0]
    q = c.get("/api/search", params={"attributes": spec.text, "top_k": MAX_TOP_K}).json()["queries"][0]
    assert len(full.hits) == n and [h.id for h in huge.hits] == [h.id for h in full.hits]
    assert [h["id"] for h in q["results"]] == [h.id for h in full.hits[:MAX_TOP_K]]
    assert q["more"] is (n > MAX_TOP_K)
    np.testing.assert_allclose([h["score"] for h in q["results"]], [h.score for h in full.hits[:MAX_TOP_K]],
                               rtol=1e-6)
