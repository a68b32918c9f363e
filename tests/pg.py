"""Catalog backends under test: SQLite always, PostgreSQL when ``$ZSLR_TEST_PG_URL`` names a server.

``.ci/pg.sh start`` runs a throw-away server and prints that variable; without it the postgresql
variants skip. With it they must pass: an unreachable server fails them, it does not skip them.
Each test gets a database of its own (created empty, dropped afterwards), since one catalog
fills one database.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL = os.environ.get("ZSLR_TEST_PG_URL")
BACKENDS = ("sqlite", "postgresql")
NOT_SET = "ZSLR_TEST_PG_URL not set (start a server with: eval \"$(.ci/pg.sh start)\")"


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new empty database on the test server -> its SQLAlchemy URL; dropped on exit."""
    if not PG_URL:
        pytest.skip(NOT_SET)
    from sqlalchemy import create_engine, text

    from zslretrieval.index.catalog import normalize_url

    base = normalize_url(PG_URL)
    name = f"zslr_t{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def catalog_for(backend: str) -> Iterator[str | None]:
    """``--db`` for ``backend``: None (the default SQLite file in the index folder) or a fresh PostgreSQL URL."""
    if backend == "sqlite":
        yield None
    else:
        with fresh_pg_database() as url:
            yield url
