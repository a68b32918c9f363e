"""`zslr index --index-type auto --max-memory / --max-query-ms / --recall-target`: the chosen type is
recorded and printed, reaches its recall against exact search, and bad values are refused naming them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.index import open_index
from zslretrieval.index.autotune import CHOICE_FILE, auto_options


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _index(root, *extra):
    return _run("index", "--dataset", "synthetic", "--split", "all", "--name", "syn", "--index-root", root, *extra)


def test_auto_without_budget_is_flat_and_recorded(tmp_path):
    res = _index(tmp_path, "--index-type", "auto")
    assert res.exit_code == 0, res.output
    assert "auto index type: Flat for 1,200 vectors: exact" in res.output
    rec = json.loads((tmp_path / "syn" / CHOICE_FILE).read_text())
    assert rec["chosen"]["index_type"] == "Flat" and rec["n_vectors"] == 1200
    ix = open_index("syn", tmp_path)
    assert ix.manifest.index_type == "Flat"
    ix.close()


def test_auto_under_a_memory_budget_picks_pq_with_rerank_and_meets_recall(tmp_path):
    # 1,200 x 96 float32: Flat ~0.46 MiB; 200K leaves only IVF-PQ (codes + exact re-ranking)
    res = _index(tmp_path, "--index-type", "auto", "--max-memory", "200K", "--recall-target", "0.9")
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.output.splitlines() if ln.startswith("auto index type:"))
    assert "PQ" in line and "rerank=100" in line and "recall@10" in line and "budgets: memory 200.0 KiB" in line
    rec = json.loads((tmp_path / "syn" / CHOICE_FILE).read_text())
    chosen = rec["chosen"]
    assert chosen["memory_bytes"] <= 200 * 1024 and chosen["recall_at_10"] >= 0.9 + 0.01
    assert rec["budgets"] == {"max_memory_bytes": 200 * 1024, "max_query_ms": None, "recall_target": 0.9}
    ix = open_index("syn", tmp_path)
    assert ix.manifest.index_type == chosen["index_type"] and ix.manifest.search_params == chosen["search_params"]
    # recall@10 of the chosen index against exact search, on every vector as a query (self included both sides)
    ids, x = ix.vectors()
    D, I = ix.search(x, 10)
    S = x @ x.T
    truth = ids[np.argsort(-S, axis=1, kind="stable")[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, truth)])
    assert recall >= 0.9, recall
    # re-ranked scores are the exact ones of the ids returned
    pos = {int(i): j for j, i in enumerate(ids)}
    exact = np.take_along_axis(S, np.vectorize(pos.get)(I), 1)
    np.testing.assert_allclose(D, exact, rtol=1e-5, atol=1e-5)
    ix.close()
    # a type set by hand afterwards drops the (now wrong) record
    assert _index(tmp_path, "--index-type", "Flat").exit_code == 0
    assert not (tmp_path / "syn" / CHOICE_FILE).exists()


def test_budget_nothing_fits_is_exit_2_and_leaves_a_searchable_index(tmp_path):
    res = _index(tmp_path, "--index-type", "auto", "--max-memory", "1K")
    assert res.exit_code == 2
    assert "--max-memory 1,024 bytes is below every index type" in res.output and "larger budgets" in res.output
    ix = open_index("syn", tmp_path)
    assert ix.manifest.index_type == "Flat" and ix.ntotal == 1200 and ix.in_sync()
    ix.close()


@pytest.mark.parametrize("args, words", [
    (["--index-type", "auto", "--max-memory", "banana"], ["--max-memory 'banana'", "512M"]),
    (["--index-type", "auto", "--max-memory", "0"], ["--max-memory '0'", "above 0"]),
    (["--index-type", "auto", "--max-memory", "-5M"], ["--max-memory '-5M'"]),
    (["--index-type", "auto", "--max-query-ms", "-1"], ["--max-query-ms -1", "above 0"]),
    (["--index-type", "auto", "--max-query-ms", "nan"], ["--max-query-ms nan"]),
    (["--index-type", "auto", "--recall-target", "1.5"], ["--recall-target 1.5", "(0, 1]"]),
    (["--index-type", "auto", "--search-params", "nprobe=4"], ["--search-params 'nprobe=4'", "auto tunes"]),
    (["--max-memory", "1G"], ["--max-memory 1G only apply to --index-type auto"]),
    (["--index-type", "HNSW32", "--max-query-ms", "3"], ["--max-query-ms 3.0", "--index-type HNSW32"]),
])
def test_bad_auto_values_exit_2_naming_them_before_writing(tmp_path, args, words):
    res = _index(tmp_path, *args)
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output, (w, res.output)
    assert not (tmp_path / "syn").exists()


def test_auto_options_library_checks():
    assert auto_options("Flat") is None and auto_options(None) is None
    o = auto_options(" AUTO ", max_memory="2G", max_query_ms=5, recall_target=0.99)
    assert (o.max_memory, o.max_query_ms, o.recall_target) == (2 << 30, 5.0, 0.99)
    assert auto_options("auto").recall_target == 0.95
    with pytest.raises(InvalidInputError, match="--max-query-ms 'soon'"):
        auto_options("auto", max_query_ms="soon")
    with pytest.raises(InvalidInputError, match="--recall-target True"):
        auto_options("auto", recall_target=True)
