"""End to end: ``zslr serve`` as a subprocess on a free loopback port, driven in a real headless
Chromium (Debian's, through Playwright; nothing downloads a browser). Skips when Chromium is absent;
``.ci/run`` installs it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = next((p for p in (os.environ.get("ZSLR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_index, tmp_path_factory):
    port = free_port()
    logs = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "OMP_NUM_THREADS": "1"}
    with open(logs, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "zslretrieval", "serve", "--index", str(demo_index),
                                 "--port", str(port), "--cache-dir", str(tmp_path_factory.mktemp("thumbs"))],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"zslr serve did not come up (exit {proc.poll()}):\n{logs.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, port
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """A request line sent byte for byte (a browser or HTTP library would normalise the dots away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_traversal_attempts_are_404(server):
    _, port = server
    for target in ["/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc%2fpasswd",
                   "/%252e%252e/%252e%252e/etc/passwd", "/static/../../etc/passwd", "/static/..%2f..%2fetc%2fpasswd",
                   "/api/images/../../../../etc/passwd", "/api/images/..%2f..%2f..%2fetc%2fpasswd",
                   "/api/images/1/../../../etc/passwd", "/api/images/%2fetc%2fpasswd", "/api/images/999999",
                   "/api/images/999999/thumb", "//etc/passwd", "/api/images/1%00.jpg"]:
        status, body = raw_get(port, target)
        assert status in (404, 400), (target, status, body[:200])
        assert b"root:" not in body
        assert status == 404 or target.endswith("%00.jpg"), (target, status)


def test_page_search_grid_url_state_paging_and_upload(server, demo_index, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # 1. a shared URL shows a grid of thumbnails with score, label and how the query was understood
            page.goto(url + "/?attributes=stripes,water")
            expect(page.locator("section.query .why")).to_contain_text("stripes")
            first = page.locator("figure.hit").first
            expect(first).to_be_visible(timeout=30_000)
            assert page.locator("figure.hit").count() == 24
            page.wait_for_function("() => { const i = document.querySelector('figure.hit img');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
            cap = first.locator("figcaption").inner_text()
            assert "#1" in cap and "_on_" in cap      # rank, and the generated class label
            page.screenshot(path=str(tmp_path / "grid.png"))
            first_id = first.get_attribute("data-id")

            # 2. typing with autocomplete, then the query is in the URL and survives a reload
            box = page.locator("#attributes")
            box.fill("")
            box.type("stri")
            expect(page.locator("#suggest li").first).to_have_text("stripes")
            box.press("ArrowDown")
            box.press("Enter")
            box.type("-sky")
            page.locator("#go").click()
            expect(page).to_have_url(f"{url}/?attributes=stripes%2C+-sky&top_k=24")
            expect(page.locator("section.query h2")).to_have_text("attributes: stripes, -sky")
            expect(page.locator(".why")).to_contain_text("sky=-1")
            new_first = page.locator("figure.hit").first.get_attribute("data-id")
            page.reload()
            expect(page.locator("#attributes")).to_have_value("stripes, -sky")
            expect(page.locator("figure.hit").first).to_have_attribute("data-id", new_first)
            page.go_back()
            expect(page.locator("figure.hit").first).to_have_attribute("data-id", first_id)

            # 3. paging: 12 per page; scrolling to the end loads the next pages, every image of the index
            with urllib.request.urlopen(url + "/api/info", timeout=10) as r:
                n = json.load(r)["entries"]
            page.set_viewport_size({"width": 1280, "height": 500})
            page.goto(url + "/?attributes=red&top_k=12")
            page.wait_for_function("() => document.querySelectorAll('figure.hit').length >= 12", timeout=30_000)
            first_page = page.locator("figure.hit").evaluate_all("fs => fs.slice(0, 12).map(f => f.dataset.id)")
            for _ in range(n // 12 + 20):
                if page.locator("figure.hit").count() == n:
                    break
                page.mouse.wheel(0, 4000)
                page.wait_for_timeout(300)
            expect(page.locator("figure.hit")).to_have_count(n)
            expect(page.locator("#more")).to_be_hidden()
            ids = page.locator("figure.hit").evaluate_all("fs => fs.map(f => f.dataset.id)")
            assert len(set(ids)) == n and ids[:12] == first_page
            ranks = page.locator("figure.hit .rank").all_inner_texts()
            assert ranks == [f"#{i}" for i in range(1, n + 1)]
            page.set_viewport_size({"width": 1280, "height": 900})

            # 4. an unknown name: the error names it and offers the close names
            page.goto(url + "/?attributes=strips")
            expect(page.locator("#status")).to_contain_text("unknown attribute 'strips'")
            page.locator("#status button.sugg", has_text="stripes").click()
            expect(page.locator("figure.hit").first).to_be_visible()

            # 5. query by an example image (file picker): the same photo comes first
            probe = sorted((demo_index.parents[1] / "images").rglob("*.jpg"))[7]
            page.goto(url + "/")
            page.locator("#file").set_input_files(str(probe))
            expect(page.locator("section.query h2")).to_contain_text("image:")
            expect(page.locator("figure.hit").first.locator(".name")).to_contain_text(probe.name)
            assert not errors, errors
        finally:
            browser.close()
