"""Where an index lives and who may write it.

    <root>/<name>/            root: --index-root, else $ZSLR_INDEXES, else ./indexes
        zslr-index.json       format tag + the catalog URL when --db put it elsewhere
        catalog.sqlite        default catalog (SQLAlchemy URL via --db)
        features/shard-*.npy  feature store (raw backbone features)
        index-<fp>.faiss      FAISS index for the manifest's settings (fp = fingerprint)
        model.pt              copy of the embedding model checkpoint, when one is used
        .lock                 advisory write lock (flock): one writer at a time
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from .catalog import sqlite_url
from .store import atomic_write

LOCATION_FILE = "zslr-index.json"
LOCATION_FORMAT = "zslr-index/1"
CATALOG_FILE = "catalog.sqlite"
MODEL_FILE = "model.pt"
FEATURES_DIR = "features"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def resolve_index_root(root: str | os.PathLike | None = None) -> Path:
    """``--index-root``, else ``$ZSLR_INDEXES``, else ``./indexes``."""
    if root:
        return Path(root).expanduser()
    env = os.environ.get("ZSLR_INDEXES")
    return Path(env).expanduser() if env else Path("indexes")


def index_folder(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A bare name (``default``) lives under the root; anything with a path separator is a folder."""
    s = str(name_or_path)
    if os.sep in s or (os.altsep and os.altsep in s) or Path(s).is_absolute() or s in (".", ".."):
        return Path(s).expanduser()
    if not _NAME_RE.match(s):
        raise InvalidInputError(f"index name {s!r}: use letters, digits, '.', '_' or '-' (or give a folder path)")
    return resolve_index_root(root) / s


def write_location(folder: Path, db_url: str | None) -> None:
    data = {"format": LOCATION_FORMAT, "db": db_url}
    atomic_write(folder / LOCATION_FILE, lambda f: f.write(json.dumps(data, indent=2).encode()))


def read_location(folder: Path) -> dict | None:
    p = folder / LOCATION_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise IncompatibleError(f"{p}: unreadable index location file ({e})") from e
    if data.get("format") != LOCATION_FORMAT:
        raise IncompatibleError(f"{p}: format {data.get('format')!r}; this zslr reads {LOCATION_FORMAT!r}")
    return data


def catalog_url(folder: Path, db: str | None) -> str:
    """The catalog URL: ``db`` if given, else the one recorded in the folder, else ``catalog.sqlite``."""
    if db:
        return db
    loc = read_location(folder)
    if loc and loc.get("db"):
        return loc["db"]
    return sqlite_url(folder / CATALOG_FILE)


def require_index(folder: Path, name: str) -> None:
    if not (folder / LOCATION_FILE).is_file():
        raise DataNotFoundError(f"index {name!r} not found: no {LOCATION_FILE} in {folder.absolute()}; "
                                f"create it with `zslr index DIR --name {folder.name}` (or --dataset D)")


class WriteLock:
    """Exclusive advisory lock on ``<folder>/.lock``; released by the OS if the process dies."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self._f = None

    def acquire(self, blocking: bool = True) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # Windows: no flock; single-writer is then the user's responsibility
            return True
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if not blocking:
                self._f.close()
                self._f = None
                return False
            print(f"zslr: waiting for another process writing {self.path.parent} ...", file=sys.stderr)
            fcntl.flock(self._f, fcntl.LOCK_EX)
            return True

    def release(self) -> None:
        if self._f is not None:
            self._f.close()  # closing drops the flock
            self._f = None

    def __enter__(self) -> "WriteLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
