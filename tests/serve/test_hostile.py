"""The adversarial probe of ``zslr serve`` kept as a regression test, on the small demo index.

Families of hostile requests (path traversal in many encodings, non-ASCII digits, bombs, oversize and
malformed uploads and bodies, token variants, Host spoofing, odd methods, work bombs, booleans for
numbers): each must be refused cleanly -- a 4xx JSON answer with a message, carrying the security
headers every answer carries -- never a 500, never a file. Also: HEAD wherever GET works, the
concurrent-search bound, and photos linked out of the collection kept out of results.
"""
from __future__ import annotations

import io
import shutil
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text

from zslretrieval.serve import SearchService, ServeConfig, create_app
from zslretrieval.serve.bounds import (MAX_QUERY_TERMS, MAX_REQUEST_TERMS, MAX_REQUEST_TEXT_CHARS, MAX_TEXT_CHARS,
                                       QUERY_BUDGET, WORK_THREADS, QuerySlots, ServerBusyError, parse_image_id)

from .conftest import index_copy

BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-T0ken"
SECURITY_HEADERS = ("x-content-type-options", "referrer-policy", "x-frame-options", "content-security-policy")


def make_client(folder, tmp_path, *, token=None, loopback_only=True, **kw) -> tuple[TestClient, SearchService]:
    svc = SearchService(ServeConfig(index=str(folder), cache_dir=str(tmp_path / "thumbs"), reload_interval=0,
                                    **kw))
    return TestClient(create_app(svc, token=token, loopback_only=loopback_only), base_url=BASE), svc


@pytest.fixture(scope="module")
def api(demo_index, tmp_path_factory):
    c, svc = make_client(demo_index, tmp_path_factory.mktemp("hostile"))
    with c:
        yield c, svc


@pytest.fixture(scope="module")
def guarded(demo_index, tmp_path_factory):
    c, svc = make_client(demo_index, tmp_path_factory.mktemp("hostile-token"), token=TOKEN, loopback_only=False,
                         preload=False)
    with c:
        yield c


@pytest.fixture(scope="module")
def some_id(api) -> int:
    return api[0].get("/api/search?attributes=red&top_k=1").json()["queries"][0]["results"][0]["id"]


def refused(r, *statuses: int) -> dict:
    """A clean refusal: one of ``statuses``, JSON ``{"error", "status"}`` with a message, security headers."""
    assert r.status_code in statuses, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["status"] == r.status_code and len(body["error"]) > 10, body
    for h in SECURITY_HEADERS:
        assert h in r.headers, (h, r.status_code, r.request.url)
    return body


# ------------------------------------------------------------------------------------------- paths
TRAVERSALS = [
    "..%2F..%2Fetc%2Fpasswd", "..%252F..%252Fetc%252Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252f", "..%5C..%5Cwindows%5Cwin.ini", "..\\..\\etc\\passwd", "%c0%ae%c0%ae%c0%af",
    "%e0%80%ae%e0%80%ae/", "..%c0%af..%c0%afetc", "....//....//etc/passwd", "..;/..;/etc/passwd",
    "%2e%2e;/etc/passwd", "1%00", "1%00.jpg", "%00", "1%2F..%2F2", "%2Fetc%2Fpasswd",
    "file:%2F%2F%2Fetc%2Fpasswd", "~root", "$HOME", "1;ls", "1%0d%0aX-Injected:%201",
]


@pytest.mark.parametrize("suffix", ["", "/thumb"])
def test_traversal_in_many_encodings_is_404(api, suffix):
    c, _ = api
    for t in TRAVERSALS:
        r = c.get(f"/api/images/{t}{suffix}")
        assert r.status_code in (400, 404), t
        refused(r, 404, 400)
        assert "x-injected" not in r.headers
    for path in ["/static/..%2F..%2Fapp.py", "/static/%2e%2e%2fservice.py", "/static/..%5Capp.py",
                 "/%2e%2e/%2e%2e/etc/passwd", "/..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "/api/../../etc/passwd",
                 "/api/images/%2e%2e/%2e%2e/etc/passwd", "/static/app.js%00.png", "/static/APP.JS",
                 "/static/.%2Fapp.js", "/api/images/", "/api/images//1"]:
        refused(c.get(path), 404, 400)


NON_ASCII_DIGITS = ["²", "¹", "³", "①", "⁰", "١", "１", "𝟏", "৭", "߁", "1²", "٣٤", "１２", "Ⅻ", "½", "-1", "+1", " 1",
                    "1 ", "0x1", "1e0", "1_0", "01.0"]


@pytest.mark.parametrize("digit", NON_ASCII_DIGITS)
def test_only_ascii_digits_name_an_image(api, digit):
    c, _ = api
    for suffix in ("", "/thumb"):
        body = refused(c.get(f"/api/images/{digit}{suffix}"), 404)
        assert "catalog id" in body["error"]


def test_parse_image_id():
    assert parse_image_id("12") == 12 and parse_image_id("0") == 0 and parse_image_id("9" * 18) == 10**18 - 1
    for bad in NON_ASCII_DIGITS + ["", "9" * 19, "1\n"]:
        assert parse_image_id(bad) is None, bad


def test_the_ascii_id_is_served(api, some_id):
    c, _ = api
    assert c.get(f"/api/images/{some_id}").status_code == 200
    assert c.get(f"/api/images/{some_id:03d}").status_code == 200   # leading zeros are still that id


# ------------------------------------------------------------------------------------ uploads, bodies
def _png_bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")
    return buf.getvalue()


def test_bombs_and_malformed_uploads_are_400(api, demo_index):
    c, _ = api
    jpeg = sorted((demo_index.parents[1] / "images").rglob("*.jpg"))[0].read_bytes()
    gif = io.BytesIO()
    Image.new("P", (8, 8)).save(gif, format="GIF")
    cases = [(_png_bomb(), "image/png"), (b"hello", "image/png"), (jpeg[:200], "image/jpeg"),
             (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"), (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
             (b"\xff\xd8\xff" + b"\xff" * 5000, "image/jpeg"), (bytes(range(256)) * 40, "application/octet-stream"),
             (gif.getvalue()[:20], "image/gif")]
    for data, ctype in cases:
        refused(c.post("/api/search/image", content=data, headers={"content-type": ctype}), 400)
    refused(c.post("/api/search/image", content=b"", headers={"content-type": "image/png"}), 400)
    for ctype in ("text/plain", "application/json", "multipart/form-data; boundary=x", ""):
        refused(c.post("/api/search/image", content=jpeg, headers={"content-type": ctype}), 415)


def test_oversize_and_malformed_lengths(demo_index, tmp_path):
    c, _ = make_client(demo_index, tmp_path, max_upload_bytes=1000, preload=False)
    with c:
        refused(c.post("/api/search/image", content=b"\xff" * 1001, headers={"content-type": "image/jpeg"}), 413)

        def chunks():
            for _ in range(10):
                yield b"\xff" * 300
        refused(c.post("/api/search/image", content=chunks(), headers={"content-type": "image/jpeg"}), 413)
        refused(c.post("/api/search", content=b"[" + b" " * (3 << 20) + b"]",
                       headers={"content-type": "application/json"}), 413)
        for bad in ("abc", "-5", "1e9", "0x10"):
            refused(c.post("/api/search", content=b"{}", headers={"content-type": "application/json",
                                                                   "content-length": bad}), 400, 413)


def test_malformed_json_bodies_are_400(api):
    c, _ = api
    q = [{"kind": "attributes", "value": "red"}]
    bodies = [b"{not json", b"[" * 100_000 + b"]" * 100_000, b'{"queries": ' + b"[" * 5000 + b"]" * 5000 + b"}",
              b"\xff\xfe{}", b'{"queries": "red"}', b'{"queries": [{"kind": "attributes"}]}', b"null", b"1e999999",
              b'{"queries": [{"kind": "attributes", "value": "\\ud800"}]}']
    for b in bodies:
        refused(c.post("/api/search", content=b, headers={"content-type": "application/json"}), 400, 422)
    # booleans and strings where integers are expected: refused, not read as 1
    for extra, word in [({"top_k": True}, "top_k"), ({"offset": True}, "offset"), ({"top_k": "5"}, "top_k"),
                        ({"top_k": 5.5}, "top_k"), ({"general_weight": True}, "general_weight"),
                        ({"top_k": None}, "top_k")]:
        body = refused(c.post("/api/search", json={"queries": q, **extra}), 400)
        assert word in body["error"], body
    assert c.post("/api/search", json={"queries": q, "top_k": 5}).json()["top_k"] == 5
    for url in ("/api/search?attributes=red&top_k=true", "/api/search?attributes=red&top_k=%C2%B2",
                "/api/search?attributes=red&offset=%D9%A1", "/api/search?attributes=red&top_k=1e1"):
        refused(c.get(url), 400)


# --------------------------------------------------------------------------------------- work bombs
def test_work_per_request_is_bounded_by_name(api):
    c, _ = api
    names = ", ".join(f"zq{i:05d}x" for i in range(4096))        # the probe's 44 kB body
    body = refused(c.post("/api/search", json={"queries": [{"kind": "attributes", "value": names}]}), 400)
    assert str(MAX_QUERY_TERMS) in body["error"] and "4096" in body["error"]
    few = ", ".join(["red", "blue", "sky", "water", "grass", "dots", "star", "plain", "sand"])
    many = [{"kind": "attributes", "value": few}] * 16                         # 16 x 9 = 144 names
    body = refused(c.post("/api/search", json={"queries": many}), 400)
    assert str(MAX_REQUEST_TERMS) in body["error"]
    body = refused(c.get("/api/search", params={"text": "a " * MAX_TEXT_CHARS}), 400, 422)
    if body["status"] == 400:
        assert str(MAX_TEXT_CHARS) in body["error"]
    body = refused(c.get("/api/search", params={"class": "x" * (MAX_TEXT_CHARS + 1)}), 400)
    assert str(MAX_TEXT_CHARS) in body["error"]
    n_texts = MAX_REQUEST_TEXT_CHARS // MAX_TEXT_CHARS + 1
    body = refused(c.get("/api/search", params={"class": ["y" * MAX_TEXT_CHARS] * n_texts}), 400)
    assert str(MAX_REQUEST_TEXT_CHARS) in body["error"]
    # at the bound, a request is answered
    ok = c.get("/api/search", params={"attributes": ", ".join(["red", "-sky"] * (MAX_QUERY_TERMS // 2))})
    assert ok.status_code == 200, ok.text


def test_concurrent_searches_hold_at_most_the_slots(api):
    c, svc = api
    live, peak, lock, threads_used = [0], [0], threading.Lock(), set()
    real = svc.search

    def counting(*args, **kw):
        with lock:
            threads_used.add(threading.get_ident())
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            time.sleep(0.05)   # long enough that unbounded requests would overlap
            return real(*args, **kw)
        finally:
            with lock:
                live[0] -= 1

    svc.search = counting
    try:
        statuses = []
        body = {"queries": [{"kind": "attributes", "value": ", ".join(["red", "stripes", "-sky", "dots"] * 5)}] * 2}

        def one():
            statuses.append(c.post("/api/search", json=body).status_code)
        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        del svc.search
    # 2 x 20 names: more than half the budget, so these heavy requests ran one at a time
    assert QUERY_BUDGET // 2 < 40 <= QUERY_BUDGET
    assert statuses == [200] * 8 and peak[0] == 1, (statuses, peak)
    # the work ran on the server's few search threads, not on one web-server pool thread per request
    assert len(threads_used) <= WORK_THREADS, threads_used


def test_query_slots_share_a_budget_and_refuse_after_the_wait():
    slots = QuerySlots(10, wait_s=0.05)
    with slots.hold(6):
        with pytest.raises(ServerBusyError, match="capacity"):
            with slots.hold(5):
                pass
        with slots.hold(4):      # fits beside the 6
            pass
    with slots.hold(10), pytest.raises(ServerBusyError):
        with slots.hold(1):
            pass
    with slots.hold(99):        # more than the budget: takes all of it, never waits forever
        pass


def test_query_slots_serve_in_arrival_order():
    """A heavy search waiting for the whole budget is not overtaken by small ones that arrive later."""
    import threading
    import time

    slots = QuerySlots(10, wait_s=10)
    order, started = [], threading.Event()

    def take(name, weight, hold_s):
        with slots.hold(weight):
            order.append(name)
            time.sleep(hold_s)

    with slots.hold(3):                  # a small search in flight
        heavy = threading.Thread(target=take, args=("heavy", 10, 0.05))
        heavy.start()
        time.sleep(0.1)                  # heavy is waiting at the head of the queue
        smalls = [threading.Thread(target=take, args=(f"small{i}", 1, 0)) for i in range(3)]
        for t in smalls:
            t.start()
        time.sleep(0.1)
        assert order == []               # 7 of 10 free, yet no small search overtook the heavy one
    heavy.join(5)
    for t in smalls:
        t.join(5)
    assert order[0] == "heavy" and sorted(order[1:]) == ["small0", "small1", "small2"]


# ------------------------------------------------------------------------------- token and Host
TOKEN_VARIANTS = [{}, {"authorization": "Bearer"}, {"authorization": "Bearer "}, {"authorization": "Bearer wrong"},
                  {"authorization": f"Bearer {TOKEN.upper()}"}, {"authorization": f"Bearer {TOKEN[:-1]}"},
                  {"authorization": f"Bearer {TOKEN}x"}, {"authorization": f"Basic {TOKEN}"},
                  {"authorization": TOKEN}, {"authorization": f"Bearer\t{TOKEN[1:]}"},
                  {"cookie": "zslr_token=wrong"}, {"cookie": f"zslr_token={TOKEN[:-1]}"},
                  {"cookie": f"other={TOKEN}"}, {"cookie": f"zslr_token_x={TOKEN}"},
                  {"x-token": TOKEN}]


def test_token_variants_are_401_with_headers(guarded):
    c = guarded
    c.cookies.clear()
    for h in TOKEN_VARIANTS:
        for path in ("/api/health", "/", "/api/images/1", "/api/search?attributes=red"):
            refused(c.get(path, headers=h), 401)
    for q in ("?token=", "?token=wrong", f"?token={TOKEN}x", f"?tok={TOKEN}", f"?token={TOKEN.lower()}"):
        refused(c.get("/api/health" + q), 401)
    r = c.request("HEAD", "/api/health")
    assert r.status_code == 401 and all(h in r.headers for h in SECURITY_HEADERS) and r.content == b""
    ok = c.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and all(h in ok.headers for h in SECURITY_HEADERS)


HOSTS = ["attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "localhost.attacker.example",
         "127.0.0.2", "0.0.0.0", "127.0.0.1@attacker.example", "[::1].attacker.example", "", "127.0.0.1:80:80",
         "localhost\x00.attacker.example", "xn--lcalhost-7za", "[::1]:x", "localhost:8a", "localhost:"]


def test_host_spoofing_is_400_with_headers(api):
    c, _ = api
    for host in HOSTS:
        r = c.get("/api/health", headers={"host": host})
        assert r.status_code == 400, (host, r.request.headers.get("host"))
        body = refused(r, 400)
        assert "Host" in body["error"]
    for host in ("127.0.0.1", "127.0.0.1:8000", "LOCALHOST:1", "[::1]:8000"):
        assert c.get("/api/health", headers={"host": host}).status_code == 200, host


# ------------------------------------------------------------------------------------ methods
def test_odd_methods_are_405_json(api, some_id):
    c, _ = api
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO"):
        for path in ("/api/search", f"/api/images/{some_id}", "/", "/api/health"):
            refused(c.request(method, path), 405)
    refused(c.get("/api/search/image"), 405)
    r = c.request("HEAD", "/api/search/image")    # POST only: HEAD is refused like GET, without a body
    assert r.status_code == 405 and r.content == b"" and all(h in r.headers for h in SECURITY_HEADERS)


def test_head_works_wherever_get_does(api, some_id):
    c, _ = api
    for path in ("/", "/static/app.js", "/static/style.css", "/api/health", "/api/info", "/api/vocabulary",
                 "/api/openapi.json", "/api/search?attributes=red&top_k=3", f"/api/images/{some_id}",
                 f"/api/images/{some_id}/thumb"):
        g, h = c.get(path), c.request("HEAD", path)
        assert g.status_code == 200 and h.status_code == 200, (path, g.status_code, h.status_code)
        assert h.content == b"" and h.headers["content-type"] == g.headers["content-type"], path
        if path != "/api/search?attributes=red&top_k=3":   # took_ms differs from one search to the next
            assert h.headers.get("content-length") == g.headers.get("content-length"), path
        assert all(x in h.headers for x in SECURITY_HEADERS), path
    assert c.request("HEAD", "/api/images/999999").status_code == 404


def test_every_answer_carries_the_security_headers(api, some_id):
    c, _ = api
    for r in (c.get("/"), c.get("/api/info"), c.get(f"/api/images/{some_id}"), c.get("/nope"),
              c.get("/api/search?attributes=strpes"), c.get("/api/health", headers={"host": "evil"}),
              c.post("/api/search", content=b"{}", headers={"content-type": "application/json", "content-length": "x"}),
              c.post("/api/search/image", content=b"x" * 100, headers={"content-type": "image/png",
                                                                       "content-length": str(1 << 40)})):
        for h in SECURITY_HEADERS:
            assert h in r.headers, (h, r.status_code, r.request.url)


# ----------------------------------------------------------------------------- links out of the collection
def test_a_photo_linked_out_of_the_collection_is_neither_listed_nor_served(demo_index, demo_counts, tmp_path):
    folder, images = index_copy(demo_index, tmp_path / "copy")
    outside = tmp_path / "outside"
    outside.mkdir()
    files = sorted(images.rglob("*.jpg"))
    target = outside / files[0].name
    shutil.move(files[0], target)               # the photo now lives outside; a link stands in its place
    files[0].symlink_to(target)
    linked_dir = images / "linked-dir"
    linked_dir.symlink_to(outside, target_is_directory=True)
    eng = create_engine(f"sqlite:///{folder / 'catalog.sqlite'}")
    with eng.begin() as con:
        ids = dict(con.execute(text("SELECT path, id FROM images")).all())
        via_dir = ids[str(files[1])]
        shutil.copy2(files[1], outside / "via-dir.jpg")
        con.execute(text("UPDATE images SET path=:p WHERE id=:i"), {"p": str(linked_dir / "via-dir.jpg"), "i": via_dir})
    eng.dispose()
    hidden = {ids[str(files[0])], via_dir}
    n = demo_counts["images"]
    c, _ = make_client(folder, tmp_path, preload=False)
    with c:
        for i in hidden:
            for suffix in ("", "/thumb"):
                assert "outside" in refused(c.get(f"/api/images/{i}{suffix}"), 404)["error"]
        listed, offset = [], 0
        while True:   # the whole ranking, page by page
            q = c.get("/api/search", params={"attributes": "red, circle", "top_k": 100,
                                             "offset": offset}).json()["queries"][0]
            assert [h["rank"] for h in q["results"]] == list(range(offset + 1, offset + 1 + len(q["results"])))
            listed += q["results"]
            if not q["more"]:
                break
            offset += 100
        ids_listed = [h["id"] for h in listed]
        assert len(ids_listed) == n - len(hidden) and not hidden & set(ids_listed)
        # consistent: every listed photo is served
        for h in listed[:: max(1, len(listed) // 8)]:
            assert c.get(h["image"]).status_code == 200, h
