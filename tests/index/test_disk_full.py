"""Disk full / file-size limit / unwritable index during `zslr index`: a clear error, exit 1, a
consistent index, and the next run resumes where the failed one stopped."""
from __future__ import annotations

import errno
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.index.fakes import write_images
from zslretrieval.errors import StorageError
from zslretrieval.index import check_index, open_index
from zslretrieval.index.store import FeatureStore
from zslretrieval.ingest import IndexConfig, index_images

REPO = Path(__file__).resolve().parents[2]
N = 120


def _zslr(args, fsize: int | None = None):
    def limit():  # in the child: cap every file it writes; EFBIG instead of the SIGXFSZ kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "tests.index.run_zslr", *map(str, args)], cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                          preexec_fn=limit if fsize else None)


def _resumed_and_consistent(root, n_before: int):
    rep = check_index("default", root)
    assert rep.ok, rep.problems  # the FAISS file may lag (repairable); nothing else
    assert rep.summary["n_ok"] == rep.summary["n_entries"] == n_before
    return rep


@pytest.mark.slow
def test_file_size_limit_mid_run_then_resume(tmp_path):
    write_images(tmp_path / "imgs", N, seed=2, size=32, classes=4)
    root = tmp_path / "ix"
    args = ["index", tmp_path / "imgs", "--backbone", "tiny-test", "--index-root", root, "--device", "cpu",
            "--workers", "0", "--batch-size", "8", "--chunk-size", "8", "-q"]
    # 80 KiB per file: the catalog (56 KiB empty, 100 KiB with 120 images) outgrows it mid-run
    res = _zslr(args, fsize=80 * 1024)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("zslr: error:") and "re-run `zslr index ... --name default` to resume" in err, err
    assert re.search(r"database or disk is full|disk I/O error|file too large", err), err
    assert "catalog" in err or "cannot write" in err
    rep = check_index("default", root)
    committed = rep.summary["n_ok"]
    assert rep.ok and 0 < committed < N, (rep.problems, committed)

    res = _zslr(args)  # space again: resumes, only the rest is encoded
    assert res.returncode == 0, res.stderr[-3000:]
    m = re.search(r"scanned (\d+) file\(s\): (\d+) added, \d+ replaced, \d+ touched \(same content\), (\d+) unchanged", res.stdout)
    assert m and tuple(map(int, m.groups())) == (N, N - committed, committed), res.stdout
    rep = check_index("default", root)
    assert rep.current and rep.summary["n_ok"] == rep.summary["ntotal"] == N
    with open_index("default", root) as ix:
        assert len({r.path for r in ix.all_records()}) == N


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_shard_write_fails_mid_run_then_resume(tmp_path, monkeypatch, code, catalog_db):
    """The feature store's folder fills up (or turns unwritable) at the 3rd chunk."""
    write_images(tmp_path / "imgs", 30, seed=4, size=32)
    cfg = dict(inputs=[tmp_path / "imgs"], root=tmp_path / "ix", backbone="tiny-test", device="cpu", workers=0,
               batch_size=5, chunk_size=5)
    write, calls = FeatureStore.write, []

    def failing(self, shard_id, x):
        calls.append(shard_id)
        if len(calls) == 3:
            raise OSError(code, os.strerror(code), str(self.path(shard_id)))
        return write(self, shard_id, x)

    monkeypatch.setattr(FeatureStore, "write", failing)
    with pytest.raises(StorageError, match=rf"cannot write .*shard-00000002.npy: .*({errno.errorcode[code]}).*re-run"):
        index_images(IndexConfig(db=catalog_db, **cfg))
    rep = check_index("default", tmp_path / "ix")
    assert rep.ok and rep.summary["n_ok"] == 10 and not list((tmp_path / "ix" / "default" / "features").glob(".*tmp"))
    monkeypatch.setattr(FeatureStore, "write", write)
    r = index_images(IndexConfig(**cfg))
    assert (r.added, r.unchanged, r.n_ok) == (20, 10, 30)
    assert check_index("default", tmp_path / "ix").current


def test_unwritable_index_folder(tmp_path):
    """A real read-only folder (as root: the run drops to `nobody`, for whom root's folders are read-only)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="zslr-ro-"))
    try:
        os.chmod(base, 0o755)
        write_images(base / "imgs", 6, seed=1)
        r = index_images(IndexConfig(inputs=[base / "imgs"], root=base / "ix", backbone="tiny-test", device="cpu",
                                     workers=0))
        assert r.n_ok == 6
        write_images(base / "imgs2", 4, seed=9)
        folder = base / "ix" / "default"
        for p in [folder, *folder.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)  # readable by all, writable by the owner only
        if os.geteuid() == 0:
            def demote():
                os.setgid(65534)
                os.setuid(65534)

            try:
                subprocess.run([sys.executable, "-c", "import zslretrieval"], cwd=REPO, preexec_fn=demote, check=True,
                               env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, timeout=120)
            except (OSError, subprocess.CalledProcessError) as e:
                pytest.skip(f"user nobody cannot run {sys.executable} with this checkout ({e})")
        else:
            for p in [folder, *folder.rglob("*")]:
                os.chmod(p, 0o555 if p.is_dir() else 0o444)
            demote = None
        res = subprocess.run([sys.executable, "-m", "tests.index.run_zslr", "index", str(base / "imgs2"), "--backbone",
                              "tiny-test", "--index-root", str(base / "ix"), "--device", "cpu", "--workers", "0", "-q"],
                             cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
                             timeout=600, preexec_fn=demote)
        assert res.returncode in (1, 2), res.stdout + res.stderr
        assert "Traceback" not in res.stderr and res.stderr.strip().splitlines()[-1].startswith("zslr: error:"), res.stderr[-3000:]
        assert re.search(r"permission denied|readonly|read-only|unable to open", res.stderr, re.I), res.stderr
        for p in [folder, *folder.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        rep = check_index("default", base / "ix")
        assert rep.current and rep.summary["n_ok"] == 6
    finally:
        import shutil

        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        shutil.rmtree(base)
