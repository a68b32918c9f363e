"""Where an index lives, what every file in it is called, and who may write it.

    <root>/<name>/            root: --index-root, else $ZSLR_INDEXES, else ./indexes
        zslr-index.json       format tag + the catalog URL when --db put it elsewhere
        catalog.sqlite        default catalog (SQLAlchemy URL via --db)
        features/shard-*.npy  feature store (raw backbone features; names from store.FeatureStore)
        features/shard-stage-<run>-<part>.npy   a Ray worker's partition until the commit renames it
        index-<fp>.faiss      FAISS index for the manifest's settings (fp = fingerprint of 5 fields)
        model-<sha16>.pt      copy of the embedding model checkpoint (first 16 hex of its sha256), when one is used
        image-terms-<fp>.npz  per-image score-correction terms for the model's correction (index/terms_file.py)
        .lock                 advisory write lock (flock): one writer at a time

Every other module asks this one for file names (:func:`index_file_name`, :func:`model_file_name`)
and loads the folder's model copy through :func:`load_index_model`.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConsistencyError, DataNotFoundError, IncompatibleError, InvalidInputError
from ..fileio import atomic_write
from .catalog import sqlite_url
from .searchers.faiss_files import normalize_index_type

LOCATION_FILE = "zslr-index.json"
LOCATION_FORMAT = "zslr-index/1"
CATALOG_FILE = "catalog.sqlite"
FEATURES_DIR = "features"
LOCK_FILE = ".lock"
INDEX_FILE_GLOB = "index-*.faiss"       # FAISS files of any settings (stale ones are deleted by a sync)
INDEX_TEMP_GLOB = ".index-*.tmp"        # atomic-write leftovers of an interrupted FAISS write
MODEL_FILE_GLOB = "model-*.pt"          # checkpoint copies (only the manifest's is kept)
TERMS_GLOB = "image-terms-*.npz"        # per-image correction terms (only the current FAISS file's are kept)


class IndexSettings(Protocol):
    """The five manifest fields that decide which FAISS file is current (catalog.Manifest has them)."""

    index_type: str
    dim: int
    metric: str
    model_sha256: str | None
    backbone_weights: str | None


def fingerprint(spec: str, dim: int, metric: str, model_sha256: str | None, backbone_weights: str | None) -> str:
    """Short hash naming the index file, so a file built for other settings is never mistaken as current."""
    key = json.dumps([normalize_index_type(spec), int(dim), metric, model_sha256, backbone_weights])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def index_file_name(m: IndexSettings) -> str:
    """``index-<fp>.faiss`` for a manifest's index type, dim, metric, model and backbone weights."""
    return f"index-{fingerprint(m.index_type, m.dim, m.metric, m.model_sha256, m.backbone_weights)}.faiss"


def terms_file_name(index_file: str) -> str:
    """Per-image correction terms beside the FAISS file ``index_file`` (``index-<fp>.faiss`` -> ``image-terms-<fp>.npz``)."""
    stem = Path(index_file).stem
    return f"image-terms-{stem[len('index-'):] if stem.startswith('index-') else stem}.npz"


def model_file_name(sha256: str) -> str:
    """``model-<sha16>.pt``: named by content so a crash between copying and committing the manifest can't mismatch them."""
    return f"model-{sha256[:16]}.pt"


class _ModelRef(Protocol):
    model_sha256: str | None
    model_checkpoint: str | None


def load_index_model(folder: Path, m: _ModelRef) -> Any:
    """(model, card, class_semantics) from the folder's checkpoint copy named in the manifest."""
    from ..models.checkpoint import load_checkpoint  # torch: only when an index has a model

    path = folder / model_file_name(m.model_sha256)
    if not path.is_file():
        raise ConsistencyError(f"index model copy missing: {path} (manifest names checkpoint {m.model_checkpoint}); "
                               f"re-run `zslr index --name {folder.name} --model {m.model_checkpoint}`")
    return load_checkpoint(path)
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
        self.path = folder / LOCK_FILE
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
