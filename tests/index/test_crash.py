"""kill -9 in the middle of `zslr index`, then re-run: catalog, store and index agree, no duplicates."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.index.fakes import write_images
from zslretrieval.cli import cli
from zslretrieval.index import check_index, open_index

REPO = Path(__file__).resolve().parents[2]
N_GOOD = 200


def _zslr(*args) -> list[str]:
    return [sys.executable, "-m", "tests.index.run_zslr", *map(str, args)]


def _committed(db: Path) -> int:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as c:
            return c.execute("select count(*) from images").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet, or locked by the writer
        return 0


def _kill_after(cmd, db: Path, at_least: int, timeout: float = 120) -> int:
    """Start ``cmd``; SIGKILL it once ``at_least`` images are committed; returns how many were."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while _committed(db) < at_least:
            if proc.poll() is not None:
                pytest.fail(f"indexer finished before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail("indexer made no progress")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    return _committed(db)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    write_images(tmp_path / "imgs", N_GOOD, seed=5, size=48, classes=6)
    (tmp_path / "imgs" / "class0" / "zero.jpg").write_bytes(b"")
    (tmp_path / "imgs" / "class1" / "text.jpg").write_text("plain text")
    root, db = tmp_path / "ix", tmp_path / "ix" / "default" / "catalog.sqlite"
    cmd = _zslr("index", tmp_path / "imgs", "--backbone", "tiny-test", "--index-root", root, "--device", "cpu",
                "--workers", "0", "--batch-size", "4", "--chunk-size", "8", "-q")
    first = _kill_after(cmd, db, at_least=1)          # right after the first chunk commit
    assert 0 < first < N_GOOD + 2
    # the FAISS file lags (derived, rebuilt at the next open): check says so and exits 0
    res = CliRunner().invoke(cli, ["check", "--index-root", str(root)])
    assert res.exit_code == 0 and "repairable: FAISS index file" in res.output, res.output
    second = _kill_after(cmd, db, at_least=first + 30)  # a resumed run, killed again mid-way
    assert first < second < N_GOOD + 2
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # the final run only did what the killed runs had not committed
    m = re.search(r"scanned (\d+) file\(s\): (\d+) added, (\d+) replaced, \d+ touched \(same content\), (\d+) unchanged, "
                  r"(\d+) failed", done.stdout)
    scanned, added, replaced, unchanged, failed = map(int, m.groups())
    assert (scanned, replaced, unchanged) == (N_GOOD + 2, 0, second)
    assert added + failed == N_GOOD + 2 - second
    rep = check_index("default", root)
    assert rep.current, (rep.problems, rep.repairable)
    assert rep.summary["n_ok"] == rep.summary["n_entries"] == rep.summary["ntotal"] == N_GOOD
    assert rep.summary["n_failed"] == 2
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*), count(distinct path) from images").fetchone() == (N_GOOD + 2, N_GOOD + 2)
        assert c.execute("select count(distinct image_id) from index_entries").fetchone()[0] == N_GOOD
    ix = open_index("default", root)
    ids, x = ix.vectors()
    assert len(set(ids.tolist())) == N_GOOD
    D, I = ix.search(x[:5], 1)
    assert (I[:, 0] == ids[:5]).all()
    ix.close()
