from __future__ import annotations

import base64
import html
import json
import re

import pytest
from PIL import Image

from zslretrieval.errors import DataNotFoundError, InvalidInputError
from zslretrieval.query import (Hit, QueryResult, QuerySpec, format_table, parse_query_line, read_batch_file,
                                render_html, results_to_json, write_html)


def test_parse_query_line_kinds_and_aliases():
    assert parse_query_line("attributes: stripes, water") == QuerySpec("attributes", "stripes, water")
    assert parse_query_line("Class:killer whale").text == "killer whale"
    assert parse_query_line("img: a.jpg").kind == "image"
    # CUB names contain '::' -- only the first ':' separates the kind
    assert parse_query_line("attributes: has_bill_shape::dagger").text == "has_bill_shape::dagger"
    with pytest.raises(InvalidInputError, match="expected '<kind>: <value>'"):
        parse_query_line("stripes,water")
    with pytest.raises(InvalidInputError, match="colour"):
        parse_query_line("colour: red")
    with pytest.raises(InvalidInputError, match="empty"):
        parse_query_line("class:   ")


def test_read_batch_file_resolves_paths_beside_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "cat.jpg").write_bytes(b"x")
    b = tmp_path / "sub" / "q.txt"
    b.write_text("# my queries\n\nclass: zebra\nattributes: stripes,-water\nimage: cat.jpg\n")
    monkeypatch.chdir(tmp_path)
    specs = read_batch_file(b)
    assert [s.kind for s in specs] == ["class", "attributes", "image"]
    assert specs[2].text == str((tmp_path / "sub" / "cat.jpg").resolve())
    assert specs[0].origin.endswith("q.txt:3")
    bad = tmp_path / "bad.txt"
    bad.write_text("class: zebra\nzebra\n")
    with pytest.raises(InvalidInputError, match=r"bad.txt:2"):
        read_batch_file(bad)
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InvalidInputError, match="no queries"):
        read_batch_file(tmp_path / "empty.txt")
    with pytest.raises(DataNotFoundError):
        read_batch_file(tmp_path / "nope.txt")


def _results(img_path: str) -> list[QueryResult]:
    hits = [Hit(1, 7, 0.91234, img_path, "zebra"), Hit(2, 3, 0.5, "awa1/123", None),
            Hit(3, 9, 0.25, "<script>alert(1)</script>.jpg", "a&b")]
    return [QueryResult(QuerySpec("attributes", "stripes,-water"),
                        {"attributes": [{"name": "stripes", "weight": 1.0}, {"name": "water", "weight": -1.0}]}, hits),
            QueryResult(QuerySpec("class", "zebra"), {"class": "zebra"}, [])]


def test_table_lists_rank_score_label_path():
    text = format_table(_results("a.jpg"))
    lines = text.splitlines()
    assert lines[0] == "query: attributes: stripes,-water"
    assert lines[1] == "resolved: stripes=1, water=-1"
    assert re.fullmatch(r"\s*1\s+0\.9123\s+zebra\s+a\.jpg", lines[3])
    assert re.fullmatch(r"\s*2\s+0\.5000\s+-\s+awa1/123", lines[4])
    assert "(no results" in text


def test_json_single_and_batch():
    res = _results("a.jpg")
    one = json.loads(results_to_json(res[:1], index="i", metric="ip", batch=False))
    assert one["query"] == {"kind": "attributes", "text": "stripes,-water"}
    assert one["resolved"]["attributes"][1] == {"name": "water", "weight": -1.0}
    assert [r["id"] for r in one["results"]] == [7, 3, 9] and one["results"][0]["score"] == pytest.approx(0.91234)
    many = json.loads(results_to_json(res, index="i", metric="ip", batch=True))
    assert len(many["queries"]) == 2 and many["queries"][1]["resolved"] == {"class": "zebra"}


def test_html_is_self_contained_and_escaped(tmp_path):
    img = tmp_path / "z.png"
    Image.new("RGB", (400, 200), (10, 200, 30)).save(img)
    out = write_html(_results(str(img)), tmp_path / "g.html", index="<idx>", metric="ip")
    page = out.read_text()
    # exactly one real image inlined as a thumbnail, the others are placeholders
    uris = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(uris) == 1
    thumb = tmp_path / "t.jpg"
    thumb.write_bytes(base64.b64decode(uris[0]))
    with Image.open(thumb) as t:
        assert max(t.size) == 160
    assert page.count('class="ph"') == 2
    assert "<script>" not in page and html.escape("<script>alert(1)</script>.jpg") in page
    assert "a&amp;b" in page and "&lt;idx&gt;" in page
    # nothing is fetched from the network or the disk when the page opens
    assert "http" not in page and 'src="/' not in page and "<link" not in page
    assert render_html(_results(str(img)), index="<idx>", metric="ip") == page
