"""``zslr query`` through click, on a fake index (the real index is exercised in test_end_to_end)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.query import QueryEngine

from .fakes import make_index


@pytest.fixture
def fake_index(monkeypatch):
    idx = make_index(n=25)
    opened = []

    def fake_open(index="default", index_root=None, backbone_weights=None, correction=True):
        opened.append((index, index_root))
        return QueryEngine(idx, correction=correction)

    monkeypatch.setattr("zslretrieval.query.api.open_engine", fake_open)
    return idx, opened


def invoke(*args):
    return CliRunner().invoke(cli, ["query", *args])


def test_attributes_table(fake_index):
    r = invoke("--attributes", "stripes,water", "--index", "awa", "--index-root", "/tmp/x", "--top-k", "3")
    assert r.exit_code == 0, r.output
    assert fake_index[1] == [("awa", "/tmp/x")]
    lines = r.output.strip().splitlines()
    assert lines[1] == "resolved: stripes=1, water=1"
    assert len(lines) == 2 + 1 + 3


def test_class_json(fake_index):
    r = invoke("--class", "zebra", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["resolved"]["class"] == "zebra" and len(out["results"]) == 10 and out["metric"] == "ip"
    # zebra = [1, 1, 1, 0, 0, 0.6] / sqrt(3.36)
    assert [(a["name"], round(a["weight"], 4)) for a in out["resolved"]["attributes"]] == [
        ("black", 0.5455), ("white", 0.5455), ("stripes", 0.5455), ("big", 0.3273)]


def test_unknown_attribute_exits_2_with_suggestion(fake_index):
    r = invoke("--attributes", "stripse")
    assert r.exit_code == 2
    assert "did you mean: stripes" in r.output


def test_no_query_and_bad_top_k_exit_2(fake_index):
    assert invoke().exit_code == 2
    r = invoke("--class", "zebra", "--top-k", "0")
    assert r.exit_code == 2 and "top-k" in r.output


def test_batch_json_and_html(fake_index, tmp_path):
    b = tmp_path / "q.txt"
    b.write_text("class: zebra\nattributes: white, -black\n")
    h = tmp_path / "out.html"
    r = invoke("--batch", str(b), "--json", "--top-k", "4", "--html", str(h))
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [q["query"]["kind"] for q in out["queries"]] == ["class", "attributes"]
    assert all(len(q["results"]) == 4 for q in out["queries"])
    assert fake_index[0].search_calls == [2]
    assert h.read_text().count("<figure>") == 8


def test_attribute_file_wrong_size_exit_2(fake_index, tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("1\n2\n")
    r = invoke("--attribute-file", str(f))
    assert r.exit_code == 2 and "2 values but the vocabulary has 6" in r.output


def test_leading_negation_is_a_value_not_an_option(fake_index):
    r = invoke("--attributes", "-black,white=0.5", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resolved"]["attributes"] == [{"name": "black", "weight": -1.0},
                                                              {"name": "white", "weight": 0.5}]
