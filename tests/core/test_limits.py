"""Every cap in zslretrieval.limits: refused before the allocation, with the value and the limit named."""
from __future__ import annotations

import pytest

from zslretrieval import limits
from zslretrieval.errors import InvalidInputError
from zslretrieval.features.backbones import BACKBONES  # noqa: F401  (registry import for tiny-test)
from zslretrieval.features.pipeline import iter_feature_batches
from zslretrieval.query.spec import read_batch_file
from zslretrieval.query.vocab import parse_attribute_terms, read_attribute_file


def test_batch_file_size(tmp_path, monkeypatch):
    f = tmp_path / "q.txt"
    f.write_text("class: zebra\n" * 100)  # 1,300 bytes
    monkeypatch.setattr("zslretrieval.query.spec.MAX_BATCH_FILE_BYTES", 1000)
    with pytest.raises(InvalidInputError, match=rf"batch file {f} is 1,300 bytes; the limit is 1,000 bytes"):
        read_batch_file(f)


def test_batch_query_count(tmp_path, monkeypatch):
    f = tmp_path / "q.txt"
    f.write_text("# header\n" + "class: zebra\n" * 6)
    monkeypatch.setattr("zslretrieval.query.spec.MAX_BATCH_QUERIES", 5)
    with pytest.raises(InvalidInputError, match=r"number of queries in batch file .* is 6; the limit is 5"):
        read_batch_file(f)
    monkeypatch.setattr("zslretrieval.query.spec.MAX_BATCH_QUERIES", 6)
    assert len(read_batch_file(f)) == 6


def test_descriptor_file_size(tmp_path, monkeypatch):
    f = tmp_path / "v.txt"
    f.write_text("0.5\n" * 300)  # 1,200 bytes
    monkeypatch.setattr("zslretrieval.query.vocab.MAX_DESCRIPTOR_FILE_BYTES", 1000)
    with pytest.raises(InvalidInputError, match=rf"attribute file {f} is 1,200 bytes; the limit is 1,000 bytes"):
        read_attribute_file(f, 300)
    monkeypatch.setattr("zslretrieval.query.vocab.MAX_DESCRIPTOR_FILE_BYTES", 1200)
    assert read_attribute_file(f, 300).shape == (300,)


def test_attribute_term_count():
    n = limits.MAX_ATTRIBUTE_TERMS
    assert len(parse_attribute_terms(",".join(["a"] * n))) == n
    with pytest.raises(InvalidInputError, match=f"number of attributes in the query is {n + 1:,}; the limit is {n:,}"):
        parse_attribute_terms(",".join(["a"] * (n + 1)))


@pytest.mark.parametrize("option,kw,value,limit", [("--workers", "workers", limits.MAX_WORKERS + 1, limits.MAX_WORKERS),
                                                   ("--batch-size", "batch_size", 10**9, limits.MAX_BATCH_SIZE)])
def test_ingestion_caps(option, kw, value, limit):
    import tests.index.fakes  # noqa: F401  (tiny-test)
    from zslretrieval.features.backbones import load_backbone

    with pytest.raises(InvalidInputError, match=f"{option} is {value:,} .*; the limit is {limit:,}"):
        next(iter_feature_batches(["/nonexistent.jpg"], load_backbone("tiny-test"), device="cpu",
                                  **({"workers": 0} | {kw: value})))


def test_cli_refuses_with_exit_2(tmp_path):
    from click.testing import CliRunner

    from zslretrieval.cli import cli

    res = CliRunner().invoke(cli, ["index", str(tmp_path), "--workers", "100000", "--index-root", str(tmp_path / "ix"),
                                   "--device", "cpu", "-q"])
    assert res.exit_code == 2 and "--workers is 100,000 processes; the limit is 64 processes" in res.output, res.output
    assert not (tmp_path / "ix").exists()  # refused before anything was written
