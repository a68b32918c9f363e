"""The Ray executor and Ray sharded search on a local 2-CPU Ray (skipped when ray is not installed).

Equality with the local executor: same catalog rows (paths, ids, statuses, labels), same faiss
ids, same shard files, features within 1e-5 (the actors run torch with one thread, the local
pipeline with two, so float32 sums may round differently).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray")

import tests.distributed.fakes  # noqa: E402,F401  (registers tiny-crash)
import tests.index.fakes  # noqa: E402,F401  (registers tiny-test)
from tests.index.fakes import write_images  # noqa: E402
from tests.index.searchers.test_sharded import assert_bit_for_bit  # noqa: E402
from zslretrieval.distributed import WorkerLostError  # noqa: E402
from zslretrieval.index import check_index, open_index  # noqa: E402
from zslretrieval.index.searchers import NumpySearcher  # noqa: E402
from zslretrieval.ingest import IndexConfig, index_images  # noqa: E402

N = 48          # images; + 1 unreadable file
CHUNK = 8       # -> 7 partitions, i.e. several per actor
FEATURE_ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    write_images(d, N, seed=3, size=40, classes=4)
    (d / "class1" / "broken.jpg").write_bytes(b"not a jpeg")
    return d


def _cfg(images, root, name, **kw) -> IndexConfig:
    base = dict(inputs=[images], name=name, root=root, backbone="tiny-test", device="cpu", batch_size=4, workers=0,
                chunk_size=CHUNK)
    return IndexConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def local_index(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("ix-local")
    rep = index_images(_cfg(images, root, "l"))
    assert rep.executor == "local" and rep.added == N and len(rep.failures) == 1
    return root / "l"


def _catalog(folder: Path):
    with sqlite3.connect(folder / "catalog.sqlite") as c:
        images = c.execute("select id, path, status, label, sha256 from images order by id").fetchall()
        entries = c.execute("select e.faiss_id, i.path, e.shard_id, e.row from index_entries e "
                            "join images i on i.id = e.image_id order by e.faiss_id").fetchall()
    return images, entries


def assert_same_index(a: Path, b: Path) -> None:
    for f in (a, b):
        rep = check_index(f)
        assert rep.ok, rep.problems
        assert not rep.notes, rep.notes          # no leftover staged or debris files
    assert _catalog(a) == _catalog(b)
    assert sorted(p.name for p in (a / "features").iterdir()) == sorted(p.name for p in (b / "features").iterdir())
    ia, ib = open_index(a), open_index(b)
    try:
        (ida, xa), (idb, xb) = ia.raw_features(), ib.raw_features()
        np.testing.assert_array_equal(ida, idb)
        np.testing.assert_allclose(xa, xb, rtol=0, atol=FEATURE_ATOL)
        assert np.abs(xa).max() > 0.1           # real features, not zeros
    finally:
        ia.close()
        ib.close()


def _n_images(folder: Path) -> int:
    with sqlite3.connect(folder / "catalog.sqlite") as c:
        return c.execute("select count(*) from images").fetchone()[0]


def test_cli_ray_executor_builds_the_same_index_as_local(images, local_index, tmp_path):
    from click.testing import CliRunner

    from zslretrieval.cli import cli

    args = ["index", str(images), "--executor", "ray", "--name", "r", "--index-root", str(tmp_path),
            "--backbone", "tiny-test", "--device", "cpu", "--batch-size", "4", "--chunk-size", str(CHUNK), "-q"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert f"scanned {N + 1} file(s): {N} added, 0 replaced, 0 touched (same content), 0 unchanged, 1 failed" in r.output
    assert "ray (2 actor(s))) after" in r.output and "s start-up" in r.output
    assert_same_index(local_index, tmp_path / "r")
    # a re-run encodes nothing (and starts no Ray actors)
    again = index_images(_cfg(images, tmp_path, "r", executor="ray"))
    assert (again.unchanged, again.added, again.encoded) == (N + 1, 0, 0)
    # more actors than the cluster's CPUs: refused before any actor starts
    r = CliRunner().invoke(cli, [*args[:-1], "--ray-actors", "5", "--name", "r2"])
    assert r.exit_code == 2 and "5 Ray actor(s) of 1 CPU / 0 GPU do not fit the cluster (2 CPU, 0 GPU)" in r.output


def test_killed_worker_then_rerun_completes_without_duplicates(images, local_index, tmp_path):
    marker = tmp_path / "crash-once"
    marker.touch()
    with pytest.raises(WorkerLostError, match="run the same command again to resume"):
        index_images(_cfg(images, tmp_path, "r", executor="ray", backbone="tiny-crash", weights=marker,
                          ray_max_restarts=0, ray_actors=1))
    assert not marker.exists()                        # a worker really died
    committed = _n_images(tmp_path / "r")
    assert 0 < committed < N + 1                      # partitions before the crash were committed
    assert not list((tmp_path / "r" / "features").glob("shard-stage-*"))
    rep = index_images(_cfg(images, tmp_path, "r", executor="ray", backbone="tiny-crash", ray_actors=1))
    assert rep.unchanged == committed and rep.added + len(rep.failures) == N + 1 - committed
    assert rep.replaced == 0
    with sqlite3.connect(tmp_path / "r" / "catalog.sqlite") as c:
        assert c.execute("select count(*), count(distinct path) from images").fetchone() == (N + 1, N + 1)
        assert c.execute("select count(*), count(distinct image_id) from index_entries").fetchone() == (N, N)
    rep = check_index(tmp_path / "r")
    assert rep.ok, rep.problems
    assert rep.summary["n_ok"] == rep.summary["ntotal"] == N
    ia, ib = open_index(local_index), open_index(tmp_path / "r")
    try:
        recs_a = {r.id: r.path for r in ia.all_records()}
        recs_b = {r.id: r.path for r in ib.all_records()}
        (ida, xa), (idb, xb) = ia.raw_features(), ib.raw_features()
        fa = dict(zip((recs_a[i] for i in ida), xa))
        fb = dict(zip((recs_b[i] for i in idb), xb))
        assert fa.keys() == fb.keys()
        np.testing.assert_allclose(np.stack([fa[p] for p in fa]), np.stack([fb[p] for p in fa]), rtol=0, atol=FEATURE_ATOL)
    finally:
        ia.close()
        ib.close()


def test_killed_worker_is_restarted_within_the_run(images, local_index, tmp_path):
    marker = tmp_path / "crash-once"
    marker.touch()
    rep = index_images(_cfg(images, tmp_path, "r", executor="ray", backbone="tiny-crash", weights=marker,
                            ray_max_restarts=1))
    assert not marker.exists()                        # a worker died, Ray restarted it, its partition re-ran
    assert (rep.added, len(rep.failures)) == (N, 1)
    assert_same_index(local_index, tmp_path / "r")


def test_ray_sharded_search_equals_unsharded():
    """Shard actors + merge == the float64 reference, bit for bit (the l2 metric and more shard
    counts are covered by the threaded ShardedSearcher tests; the merge is the same)."""
    from zslretrieval.index.searchers.ray_sharded import RayShardedSearcher

    rng = np.random.default_rng(1)
    xb = rng.standard_normal((300, 12)).astype(np.float32)
    xb[150:160] = xb[0]                                # ties across shards
    xq = rng.standard_normal((7, 12)).astype(np.float32)
    xq[0] = xb[0]
    ids = rng.choice(10 ** 6, 300, replace=False).astype(np.int64)
    ref = NumpySearcher(12, "ip")
    ref.add(xb, ids)
    s = RayShardedSearcher(12, "ip", shards=2, inner="numpy", num_cpus=0.5)
    try:
        s.add(xb[:100], ids[:100])
        s.add(xb[100:], ids[100:])
        assert s.ntotal == 300
        assert_bit_for_bit(s, ref, xq, (1, 10, 400))
    finally:
        s.close()
