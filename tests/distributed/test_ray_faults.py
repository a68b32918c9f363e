"""A Ray worker lost mid-run: its partitions are retried on a live worker, and the retry is reported.

(The two-node version -- a second ``ray start`` node whose raylet gets SIGKILL -- is
``scripts/bench_ray_faults.py``: starting two Ray nodes takes longer than a test may.)
"""
from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("ray")

import tests.distributed.fakes  # noqa: E402,F401  (registers tiny-crash)
import tests.index.fakes  # noqa: E402,F401  (registers tiny-test)
from tests.index.fakes import write_images  # noqa: E402
from zslretrieval.index import check_index  # noqa: E402
from zslretrieval.ingest import IndexConfig, index_images  # noqa: E402

N = 48
pytestmark = pytest.mark.usefixtures("ray_local")


def test_lost_worker_partition_is_retried_and_reported(tmp_path):
    images = tmp_path / "imgs"
    write_images(images, N, seed=5, size=40, classes=4)
    marker = tmp_path / "crash-once"
    marker.touch()
    lines: list[str] = []
    rep = index_images(IndexConfig(inputs=[images], name="r", root=tmp_path / "ix", backbone="tiny-crash",
                                   weights=marker, device="cpu", batch_size=4, workers=0, chunk_size=8,
                                   executor="ray", ray_max_restarts=1, ray_actors=2, log=lines.append))
    assert not marker.exists()                                  # a worker really died
    assert rep.added == N and not rep.failures
    # reported: in the executor named by the summary, and one log line per retried partition
    assert "1 lost" in rep.executor and "partition(s) retried" in rep.executor, rep.executor
    retried = [ln for ln in lines if ln.startswith("ray: worker ") and "retried on another worker" in ln]
    assert retried and all(" lost (" in ln for ln in retried), lines
    with sqlite3.connect(tmp_path / "ix" / "r" / "catalog.sqlite") as c:
        assert c.execute("select count(*), count(distinct path) from images").fetchone() == (N, N)
        assert c.execute("select count(*), count(distinct image_id) from index_entries").fetchone() == (N, N)
    assert check_index(tmp_path / "ix" / "r").ok
