"""``zslr check``: derived state that lags (FAISS file) is repairable with exit 0; real inconsistencies exit 3.

Every test runs on the SQLite catalog and, with ``$ZSLR_TEST_PG_URL``, on PostgreSQL.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.errors import ConsistencyError
from zslretrieval.index import check_index, open_index
from zslretrieval.index.catalog import Catalog
from zslretrieval.index.check import repair_index
from zslretrieval.index.layout import catalog_url
from zslretrieval.index.writer import ChunkItem, IndexWriter
from zslretrieval.ingest import index_features

from .fakes import make_checkpoint

N = 30


@pytest.fixture
def built(tmp_path, catalog_db):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 8)).astype(np.float32)
    index_features("toy", x, [f"toy/{i}" for i in range(N)], [f"c{i % 3}" for i in range(N)], root=tmp_path,
                   db=catalog_db, chunk_size=10).close()
    rep = check_index("toy", tmp_path)
    assert rep.current, (rep.problems, rep.repairable)
    return tmp_path, tmp_path / "toy"


def _check(root, *extra):
    return CliRunner().invoke(cli, ["check", "--name", "toy", "--index-root", str(root), *extra])


def _sql(folder, statement: str) -> None:
    cat = Catalog(catalog_url(folder, None), create=False)
    with cat.engine.begin() as c:
        c.exec_driver_sql(statement)
    cat.close()


def _faiss_file(folder):
    (p,) = folder.glob("index-*.faiss")
    return p


def _assert_lag_then_repair(root, expect: str, ntotal: int):
    rep = check_index("toy", root)
    assert rep.ok and not rep.current and not rep.problems
    assert any(expect in r for r in rep.repairable), rep.repairable
    res = _check(root)
    assert res.exit_code == 0, res.output
    assert f"repairable: " in res.output and expect in res.output and "--repair" in res.output
    res = _check(root, "--repair")
    assert res.exit_code == 0, res.output
    assert "repaired: " in res.output and expect in res.output and "repairable" not in res.output
    after = check_index("toy", root)
    assert after.current and after.summary["ntotal"] == after.summary["n_entries"] == ntotal


def test_faiss_file_missing_is_lag(built):
    root, folder = built
    _faiss_file(folder).unlink()
    _assert_lag_then_repair(root, "is missing (derived", N)


def test_faiss_file_unreadable_is_lag(built):
    root, folder = built
    _faiss_file(folder).write_bytes(b"not a faiss index")
    _assert_lag_then_repair(root, "unreadable", N)


def test_faiss_behind_and_ahead_of_catalog_is_lag(built):
    root, folder = built
    with IndexWriter(folder) as w:  # as if killed after a chunk commit, before the FAISS update
        w.commit_chunk([ChunkItem("toy/new-a", None, None), ChunkItem("toy/new-b", None, None)],
                       np.ones((2, 8), np.float32), [])
    _assert_lag_then_repair(root, "behind the catalog: 2 entr", N + 2)
    with IndexWriter(folder) as w:  # as if killed after --prune's commit, before the FAISS update
        w.mark_removed(["toy/0", "toy/1", "toy/2"])
    _assert_lag_then_repair(root, "still holds 3 id(s)", N - 1)
    with open_index("toy", root) as ix:
        assert ix.ntotal == N - 1


def test_crash_debris_is_a_note_and_repair_removes_it(built):
    root, folder = built
    debris = folder / "features" / "shard-00000999.npy"
    debris.write_bytes(b"half-written chunk")
    res = _check(root)
    assert res.exit_code == 0 and "note: 1 uncommitted shard file(s)" in res.output
    assert _check(root, "--repair").exit_code == 0 and not debris.exists()
    assert not check_index("toy", root).notes


def _assert_real(root, expect: str):
    rep = check_index("toy", root)
    assert not rep.ok and any(expect in p for p in rep.problems), rep.problems
    res = _check(root)
    assert res.exit_code == 3 and f"problem: " in res.output and expect in res.output, res.output
    res = _check(root, "--repair")  # refuses: rebuilding FAISS would hide the problem
    assert res.exit_code == 3 and "not repairing" in res.output
    with pytest.raises(ConsistencyError, match="not repairing"):
        repair_index("toy", root)


def test_catalog_rows_without_features(built):
    root, folder = built
    _sql(folder, "DELETE FROM index_entries WHERE faiss_id = 7")
    _assert_real(root, "1 ok image(s) without an index entry")


def test_entries_without_ok_catalog_rows(built):
    root, folder = built
    _sql(folder, "UPDATE images SET status = 'failed' WHERE id IN (SELECT image_id FROM index_entries WHERE faiss_id < 2)")
    _assert_real(root, "2 index entr(y/ies) pointing at images that are not ok")


def test_feature_shard_missing(built):
    root, folder = built
    sorted((folder / "features").glob("shard-*.npy"))[1].unlink()
    _assert_real(root, "feature shard file(s) listed in the catalog are missing")


def test_feature_shard_checksum_mismatch(built):
    root, folder = built
    shard = sorted((folder / "features").glob("shard-*.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0x40  # one bit of one feature value: same shape, other content
    shard.write_bytes(bytes(data))
    _assert_real(root, "differs from the catalog's")


def test_model_copy_checksum_mismatch(built, tmp_path):
    root, folder = built
    make_checkpoint(tmp_path / "m.pt", 8)
    rng = np.random.default_rng(0)
    index_features("toy", rng.standard_normal((N, 8)).astype(np.float32), [f"toy/{i}" for i in range(N)],
                   [None] * N, root=root, model_checkpoint=tmp_path / "m.pt").close()
    assert check_index("toy", root).current
    (model,) = folder.glob("model-*.pt")
    model.write_bytes(model.read_bytes() + b"tampered")
    _assert_real(root, "sha256 differs from the manifest's")


def test_a_reader_refuses_an_unreadable_faiss_file_by_name(built):
    """A read-only open (``zslr serve``) of a truncated FAISS file: ConsistencyError naming the file and the
    repair, not FAISS's RuntimeError; a repairing open rebuilds it."""
    root, folder = built
    path = next(folder.glob("index-*.faiss"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ConsistencyError, match=rf"{path.name} is unreadable .*zslr check --name toy --repair"):
        open_index("toy", root, repair=False)
    with open_index("toy", root) as ix:
        assert ix.ntotal == N
