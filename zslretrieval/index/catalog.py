"""The SQL catalog (SQLAlchemy 2.0 ORM): the source of truth of an index.

Tables
    images          one row per file ever seen: path (unique), sha256, size, mtime, status
                    ("ok" | "failed" | "removed"), error reason, known label; for filters (schema 3):
                    taken_at (naive UTC datetime: EXIF DateTimeOriginal, else the file's mtime),
                    taken_at_source ("exif" | "mtime"), width and height (pixels as displayed,
                    EXIF orientation applied; NULL when the header could not be read). All four are
                    set for every "ok" image file (read from its header at index time); NULL for
                    benchmark feature rows, and for rows of a schema-2 catalog until the next
                    ``zslr index`` of their folder fills them in
    index_entries   faiss_id (explicit int64, never row order) <-> image id, and where the
                    image's raw features live in the feature store (shard, row)
    feature_shards  the committed feature-store files with their sha256 (`zslr check` verifies it);
                    a shard file not listed here is debris of a crash, deleted on the next write
    manifest        one row: backbone, model checkpoint + card, dims, metric, index type, counts
    schema_version  one row: :data:`SCHEMA_VERSION`; older versions are migrated on open (:data:`MIGRATIONS`),
                    newer or unknown ones refused

A chunk of work is one transaction: shard row + image rows + entries + manifest counters
commit together, so a crash at any point loses at most the chunk in flight.

Backends: SQLite (default, a file in the index folder) and PostgreSQL (``--db postgresql://...``,
``pip install 'zslretrieval[postgres]'``) go through the same code: the schema is created, and
migrated from older versions by :data:`MIGRATIONS`, inside one write transaction, and every
write transaction (:meth:`Catalog.write`) is serialised against all other writers of the
catalog: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL. The
index folder's flock already serialises writers on one machine; this also covers writers on
several machines sharing one catalog, and two processes creating the same schema at once.
"""
from __future__ import annotations

import datetime as _dt
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from sqlalchemy import (BigInteger, DateTime, ForeignKey, Integer, String, Text, create_engine, event, func, inspect, select,
                        text)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError, StorageError

SCHEMA_VERSION = 3
STATUSES = ("ok", "failed", "removed")
TAKEN_AT_SOURCES = ("exif", "mtime")
# the images columns of schema 3, for date and size filters (see ImageRow)
IMAGE_INFO_COLUMNS = ("taken_at", "taken_at_source", "width", "height")


def _v1_shard_checksums(conn: Connection) -> None:
    # v2: feature_shards.sha256; shards written before stay NULL (`zslr check` says they are unverified)
    conn.exec_driver_sql("ALTER TABLE feature_shards ADD COLUMN sha256 VARCHAR(64)")


def _v2_image_dates(conn: Connection) -> None:
    # v3: images.taken_at / taken_at_source / width / height (NULL for existing rows: `zslr index`
    # fills them in for the files it walks). The column types and the taken_at index are compiled
    # from the ORM for the connection's dialect, so SQLite and PostgreSQL get the DDL create_all would.
    table = ImageRow.__table__
    for name in IMAGE_INFO_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE images ADD COLUMN {name} {table.c[name].type.compile(dialect=conn.dialect)}")
    for ix in table.indexes:
        if {c.name for c in ix.columns} <= set(IMAGE_INFO_COLUMNS):
            ix.create(conn)


# version v -> the DDL/DML that turns a version-v catalog into v+1, run in the write transaction
# that also bumps schema_version (so a crash mid-migration leaves version v intact).
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_shard_checksums, 2: _v2_image_dates}
# pg_advisory_xact_lock key of catalog writers (any constant; "zslr" in ASCII)
PG_WRITE_LOCK = 0x7A736C72


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(4096), unique=True, index=True)
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    label: Mapped[str | None] = mapped_column(String(512), index=True)
    # schema 3, for filters: when the photo was taken (naive UTC) and from where ("exif" | "mtime"),
    # its displayed size in pixels. NULL: benchmark rows, failed files, rows a schema-2 zslr wrote.
    taken_at: Mapped[_dt.datetime | None] = mapped_column(DateTime, index=True)
    taken_at_source: Mapped[str | None] = mapped_column(String(8))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    created: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)


class FeatureShard(Base):
    __tablename__ = "feature_shards"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    file: Mapped[str] = mapped_column(String(255), unique=True)
    rows: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))  # of the file; None: written by schema v1
    created: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


class IndexEntry(Base):
    __tablename__ = "index_entries"
    faiss_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"), unique=True, index=True)
    shard_id: Mapped[int] = mapped_column(ForeignKey("feature_shards.id"), index=True)
    row: Mapped[int] = mapped_column(Integer)


class Manifest(Base):
    __tablename__ = "manifest"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, default=1)
    source: Mapped[str] = mapped_column(String(512))          # "images" or "dataset:<name>/<split>"
    backbone: Mapped[str | None] = mapped_column(String(128))
    backbone_weights: Mapped[str | None] = mapped_column(String(512))
    feature_dim: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)                  # dimension of the vectors in the index
    metric: Mapped[str] = mapped_column(String(8))
    index_type: Mapped[str] = mapped_column(String(256))
    search_params: Mapped[str | None] = mapped_column(String(256))  # FAISS ParameterSpace string; None = defaults
    model_checkpoint: Mapped[str | None] = mapped_column(Text)  # as given by the user
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_card: Mapped[str | None] = mapped_column(Text)        # the checkpoint's card JSON
    n_images: Mapped[int] = mapped_column(Integer, default=0)
    n_ok: Mapped[int] = mapped_column(Integer, default=0)
    n_failed: Mapped[int] = mapped_column(Integer, default=0)
    n_removed: Mapped[int] = mapped_column(Integer, default=0)
    n_entries: Mapped[int] = mapped_column(Integer, default=0)
    next_faiss_id: Mapped[int] = mapped_column(BigInteger, default=0)
    next_shard_id: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated: Mapped[_dt.datetime] = mapped_column(DateTime, default=utcnow)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).absolute()}"


def _migratable(found: list[int]) -> bool:
    """An older schema version with a migration for every step up to :data:`SCHEMA_VERSION`."""
    return len(found) == 1 and found[0] < SCHEMA_VERSION and all(v in MIGRATIONS for v in range(found[0], SCHEMA_VERSION))


def normalize_url(url: str):
    """Parse ``--db``; a bare ``postgresql://`` (or ``postgres://``) means the psycopg 3 driver of the postgres extra."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")  # a reader waits for a writer's commit instead of failing
    cur.close()


class Catalog:
    """An open catalog: an engine plus a session factory, schema created or version-checked."""

    def __init__(self, url: str, *, create: bool):
        self.url = url
        try:
            self.engine: Engine = create_engine(normalize_url(url))
        except ImportError as e:
            extra = " (pip install 'zslretrieval[postgres]')" if url.startswith("postgres") else ""
            raise InvalidInputError(f"--db {url!r}: its database driver is not installed ({e}){extra}") from e
        except (ArgumentError, ValueError) as e:
            raise InvalidInputError(f"--db {url!r} is not a usable SQLAlchemy URL ({e}); e.g. sqlite:////abs/path/catalog.sqlite "
                                    f"or postgresql://user@host/dbname") from e
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            db = self.engine.url.database
            if db and db != ":memory:" and not create and not Path(db).is_file():
                raise DataNotFoundError(f"catalog not found: {db}")
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._check_schema(create)
        except OperationalError as e:
            from .storage_errors import is_write_failure

            if is_write_failure(e):  # creating or migrating the schema on a full or read-only disk
                raise StorageError(f"cannot write catalog {self.engine.url!r}: {e.orig}; free space or fix "
                                   f"permissions and run the command again (nothing was changed)") from None
            raise DataNotFoundError(f"cannot open catalog {self.engine.url!r}: {e.orig}") from e

    def _check_schema(self, create: bool) -> None:
        tables = set(inspect(self.engine).get_table_names())
        if not tables and not create:
            raise DataNotFoundError(f"catalog {self.engine.url!r} is empty (no zslr tables)")
        if not tables or ("schema_version" in tables and _migratable(self._versions())):
            # decided again under the write lock: another process may have created or migrated it meanwhile
            with self.write() as s:
                self._create_or_migrate(s.connection())
            tables = set(inspect(self.engine).get_table_names())
        if "schema_version" not in tables:
            raise IncompatibleError(f"catalog {self.engine.url!r} has tables {sorted(tables)[:5]} but no schema_version: "
                                    f"not a zslr catalog (expected schema version {SCHEMA_VERSION})")
        found = self._versions()
        if found != [SCHEMA_VERSION]:
            hint = "re-create the index with `zslr index`"
            raise IncompatibleError(f"catalog {self.engine.url!r} has schema version {found[0] if len(found) == 1 else found}; "
                                    f"this zslr reads schema version {SCHEMA_VERSION} ({hint})")
        missing = set(Base.metadata.tables) - tables
        if missing:
            raise IncompatibleError(f"catalog {self.engine.url!r} is missing tables {sorted(missing)} of schema version {SCHEMA_VERSION}")

    def _create_or_migrate(self, conn: Connection) -> None:
        """Inside a write transaction: create an empty catalog, or migrate an older one step by step."""
        tables = set(inspect(conn).get_table_names())
        if not tables:
            Base.metadata.create_all(conn)
            conn.execute(SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION))
            return
        if "schema_version" not in tables:
            return  # a foreign database: _check_schema names it
        found = conn.execute(select(SchemaVersion.version)).scalars().all()
        if not _migratable(found):
            return  # current, newer, or no migration path: _check_schema explains
        for v in range(found[0], SCHEMA_VERSION):
            MIGRATIONS[v](conn)
        conn.execute(SchemaVersion.__table__.update().values(version=SCHEMA_VERSION))

    def _versions(self) -> list[int]:
        with self.Session() as s:
            return list(s.scalars(select(SchemaVersion.version)))

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction, serialised against every other writer of this catalog; commits on exit."""
        with self.Session.begin() as s:
            conn = s.connection()
            if self.engine.dialect.name == "sqlite":
                # pysqlite would BEGIN (deferred) only at the first write, after our reads of the
                # manifest counters; IMMEDIATE takes the write lock first (waits busy_timeout).
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif self.engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_WRITE_LOCK})
            yield s

    def session(self) -> Session:
        return self.Session()

    def manifest(self, s: Session | None = None) -> Manifest | None:
        if s is not None:
            return s.get(Manifest, 1)
        with self.Session() as s2:
            return s2.get(Manifest, 1)

    def close(self) -> None:
        self.engine.dispose()


def count_status(s: Session) -> dict[str, int]:
    rows = s.execute(select(ImageRow.status, func.count()).group_by(ImageRow.status)).all()
    out = dict.fromkeys(STATUSES, 0)
    out.update({k: int(v) for k, v in rows})
    return out


def refresh_counts(s: Session, m: Manifest) -> None:
    """Recount the manifest's counters from the tables (inside the caller's transaction)."""
    c = count_status(s)
    m.n_ok, m.n_failed, m.n_removed = c["ok"], c["failed"], c["removed"]
    m.n_images = sum(c.values())
    m.n_entries = int(s.scalar(select(func.count()).select_from(IndexEntry)) or 0)
    m.updated = utcnow()


def entries_table(s: Session) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All entries as parallel int64 arrays (faiss_id, image_id, shard_id, row), sorted by faiss_id.

    Read through the driver's own cursor, inside the session's transaction: a million rows go
    from plain tuples into one array, without SQLAlchemy's per-row objects (which were most of
    a 2.6 s open of a million-image index).
    """
    q = select(IndexEntry.faiss_id, IndexEntry.image_id, IndexEntry.shard_id, IndexEntry.row).order_by(IndexEntry.faiss_id)
    conn = s.connection()
    cur = conn.connection.cursor()
    try:
        cur.execute(str(q.compile(dialect=conn.dialect)))
        rows = cur.fetchall()
    finally:
        cur.close()
    a = np.fromiter(itertools.chain.from_iterable(rows), np.int64, count=4 * len(rows)).reshape(-1, 4)
    return a[:, 0].copy(), a[:, 1].copy(), a[:, 2].copy(), a[:, 3].copy()


def chunked(items: Iterable, n: int = 500):
    buf = []
    for x in items:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


__all__ = ["IMAGE_INFO_COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "STATUSES", "TAKEN_AT_SOURCES", "Base", "Catalog", "FeatureShard", "ImageRow", "IndexEntry", "Manifest",
           "SchemaVersion", "SQLAlchemyError", "chunked", "count_status", "entries_table", "normalize_url", "refresh_counts",
           "sqlite_url", "utcnow"]
