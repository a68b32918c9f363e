"""The page's refine, filters and relevance cut-off, in headless Chromium against ``zslr serve``
(the server and browser setup of test_browser.py). Each page result is checked against the API."""
from __future__ import annotations

import json
import os
import shutil
import urllib.parse
import urllib.request

import pytest

from tests.serve.test_browser import ARGS, CHROMIUM, server  # noqa: F401  (module fixture: zslr serve)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")


def api(url: str, **params) -> dict:
    with urllib.request.urlopen(url + "/api/search?" + urllib.parse.urlencode(params), timeout=60) as r:
        return json.load(r)["queries"][0]


def page_ids(page) -> list[int]:
    return [int(i) for i in page.locator("figure.hit").evaluate_all("fs => fs.map(f => f.dataset.id)")]


def test_marks_refine_filters_and_cut_off(server, demo_index, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    url, _ = server
    query = "stripes,water"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + f"/?attributes={query}&top_k=12")
            expect(page.locator("figure.hit").first).to_be_visible(timeout=30_000)
            expect(page.locator("figure.hit")).to_have_count(12)
            base = api(url, attributes=query, top_k=12)
            assert page_ids(page) == [h["id"] for h in base["results"]]
            # every result shows its relevance, comparable across queries
            assert all(0 <= h["relevance"] <= 1 for h in base["results"])
            expect(page.locator("figure.hit .rel").first).to_have_text(f"rel {base['results'][0]['relevance']:.2f}")
            expect(page.locator("#refine")).to_be_disabled()

            # 1. mark two results right and one wrong, then refine: the page shows the API's refined ranking
            hits = page.locator("figure.hit")
            right = [int(hits.nth(i).get_attribute("data-id")) for i in (0, 2)]
            wrong = int(hits.nth(1).get_attribute("data-id"))
            hits.nth(0).locator("button.yes").click()
            hits.nth(2).locator("button.yes").click()
            hits.nth(1).locator("button.no").click()
            hits.nth(3).locator("button.no").click()
            hits.nth(3).locator("button.no").click()   # a second click takes the mark back
            expect(page.locator("#refine")).to_have_text("Refine (3 marked)")
            page.locator("#refine").click()
            expect(page).to_have_url(f"{url}/?attributes=stripes%2Cwater&top_k=12&more_like="
                                     f"{right[0]}%2C{right[1]}&less_like={wrong}")
            refined = api(url, attributes=query, top_k=12, more_like=f"{right[0]},{right[1]}", less_like=str(wrong))
            want = [h["id"] for h in refined["results"]]
            assert want != [h["id"] for h in base["results"]]          # the marks changed the ranking
            page.wait_for_function(f"() => Array.from(document.querySelectorAll('figure.hit')).map(f => +f.dataset.id)"
                                   f".join() === '{','.join(map(str, want))}'", timeout=30_000)
            expect(page.locator(".why")).to_contain_text("refined with 2 right, 1 wrong")
            for i in right:   # marks stay shown on the refined results
                if i in want:
                    expect(page.locator(f'figure.hit[data-id="{i}"]')).to_have_class("hit right")
            page.wait_for_function("() => Array.from(document.querySelectorAll('figure.hit img'))"
                                   ".every(i => i.complete)", timeout=30_000)
            shot = tmp_path / "refined.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("ZSLR_SCREENSHOTS"):
                shutil.copy(shot, os.path.join(os.environ["ZSLR_SCREENSHOTS"], "refined.png"))
            # a reload keeps query and marks (they are in the URL)
            page.reload()
            expect(page.locator("#refine")).to_have_text("Refine (3 marked)")

            # 2. a folder filter: exactly the folder's images, best first; a new search drops the marks
            images = demo_index.parents[1] / "images"
            folder = sorted(p for p in images.iterdir() if p.is_dir())[3]
            n_folder = len([f for f in folder.iterdir() if f.is_file()])
            page.locator("#folder").fill(str(folder))
            page.locator("#go").click()
            expect(page.locator("#refine")).to_be_disabled()
            flt = api(url, attributes=query, top_k=12, folder=str(folder))
            assert len(flt["results"]) == min(12, n_folder) > 0
            page.wait_for_function(f"() => document.querySelectorAll('figure.hit').length === {len(flt['results'])}",
                                   timeout=30_000)
            assert page_ids(page) == [h["id"] for h in flt["results"]]
            names = page.locator("figure.hit .name").evaluate_all("ns => ns.map(n => n.title)")
            assert all(n.startswith(folder.name + "/") for n in names), names

            # 3. the relevance cut-off hides what falls below it
            page.locator("#folder").fill("")
            cut = round(base["results"][4]["relevance"] - 1e-3, 4)
            page.locator("#min_score").fill(str(cut))
            page.locator("#go").click()
            above = api(url, attributes=query, top_k=12, min_score=str(cut))
            assert 5 <= len(above["results"]) and all(h["relevance"] >= cut for h in above["results"])
            page.wait_for_function(f"() => document.querySelectorAll('figure.hit').length === {len(above['results'])}",
                                   timeout=30_000)
            assert page_ids(page) == [h["id"] for h in above["results"]]
            page.locator("#min_score").fill("1")
            page.locator("#go").click()
            expect(page.locator("section.query .grid p")).to_contain_text("no image matches")
            assert not errors, errors
        finally:
            browser.close()
