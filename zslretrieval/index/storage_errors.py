"""Disk full, quota, file-size limit, read-only or unwritable folder while writing an index -> StorageError.

The write order (index/writer.py) already keeps a failed write harmless: a shard that fails is
deleted before its transaction, a catalog transaction that fails rolls back, a FAISS file that
fails to replace leaves the previous one (which the next open brings up to date). What is left is
to say so instead of a traceback: which file, which limit, and that re-running resumes.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError

from ..errors import StorageError

# errno -> what it means for the user
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# what SQLite / PostgreSQL say when they cannot write
DB_WRITE_FAILURES = ("database or disk is full", "disk i/o error", "attempt to write a readonly database",
                     "unable to open database file", "could not extend file", "no space left on device",
                     "could not write", "read-only transaction")


def is_write_failure(e: OperationalError) -> bool:
    """The database could not write (full, read-only), as opposed to a wrong URL or a missing server."""
    return any(s in str(e.orig if e.orig is not None else e).lower() for s in DB_WRITE_FAILURES)


@contextmanager
def storage_errors(folder: str | os.PathLike, resume: str) -> Iterator[None]:
    """Turn write failures under ``folder`` (files or catalog) into :class:`StorageError`; ``resume``: the command to re-run."""
    tail = (f"work committed before it is intact (catalog, feature store and FAISS index stay consistent); "
            f"free space or fix permissions, then re-run `{resume}` to resume")
    try:
        yield
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        where = e.filename or folder
        raise StorageError(f"cannot write {where}: {WRITE_ERRNOS[e.errno]} ({errno.errorcode.get(e.errno, e.errno)}); {tail}") from None
    except OperationalError as e:
        if not is_write_failure(e):
            raise
        msg = str(e.orig if e.orig is not None else e).strip().splitlines()[0]
        raise StorageError(f"the catalog could not be written ({msg}); {tail}") from None
