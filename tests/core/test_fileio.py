"""zslretrieval.fileio.atomic_write: all or nothing, and ordinary permissions."""
import os
import stat

import pytest

from zslretrieval.fileio import atomic_write


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_new_file_gets_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.bin") == 0o644


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_replacing_keeps_the_existing_permissions(tmp_path):
    p = tmp_path / "b.bin"
    p.write_bytes(b"old")
    p.chmod(0o640)
    atomic_write(p, lambda f: f.write(b"new"))
    assert p.read_bytes() == b"new" and _mode(p) == 0o640


def test_a_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    p = tmp_path / "c.bin"
    p.write_bytes(b"old")

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["c.bin"]
