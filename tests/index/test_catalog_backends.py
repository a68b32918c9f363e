"""The catalog on SQLite and on PostgreSQL (``catalog_db``): one schema path, serialised writers."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sqlalchemy import inspect, select

from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.index import catalog as catalog_mod
from zslretrieval.index import check_index, open_index
from zslretrieval.index.catalog import Catalog, FeatureShard, IndexEntry, Manifest, SchemaVersion, normalize_url
from zslretrieval.index.layout import WriteLock, catalog_url
from zslretrieval.index.store import FeatureStore
from zslretrieval.index.writer import ChunkItem, IndexWriter
from zslretrieval.ingest import index_features


def _features(n=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), [f"toy/test/{i}" for i in range(n)], [f"c{i % 4}" for i in range(n)]


def test_bare_postgresql_url_means_psycopg3():
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"  # explicit choice kept
    assert normalize_url("sqlite:////x/y.db").drivername == "sqlite"
    with pytest.raises(InvalidInputError, match="not installed.*zslretrieval\\[postgres\\]"):
        Catalog("postgresql+pg8000://u@h/db", create=False)  # a driver nobody installed


def test_index_query_check_round_trip(tmp_path, catalog_db):
    x, paths, labels = _features()
    ix = index_features("toy", x, paths, labels, root=tmp_path, db=catalog_db, chunk_size=16)
    assert ix.manifest.n_ok == 40 and ix.ntotal == 40
    assert ix.manifest.db_url.startswith("postgresql" if catalog_db else "sqlite")
    D, I = ix.search(x[:3] / np.linalg.norm(x[:3], axis=1, keepdims=True), 1)
    assert [r.path for r in ix.records(I[:, 0])] == paths[:3]
    ix.close()
    ix = index_features("toy", x[5:], paths[5:], labels[5:], root=tmp_path, db=catalog_db)  # 5 removed
    assert (ix.manifest.n_ok, ix.manifest.n_removed, ix.ntotal) == (35, 5, 35)
    ix.close()
    rep = check_index("toy", tmp_path)
    assert rep.current, (rep.problems, rep.repairable)
    assert rep.summary["n_entries"] == rep.summary["ntotal"] == 35


def test_schema_created_then_migrated(tmp_path, catalog_db, monkeypatch):
    x, paths, labels = _features(n=10)
    index_features("toy", x, paths, labels, root=tmp_path, db=catalog_db).close()
    url = catalog_url(tmp_path / "toy", catalog_db)
    cat = Catalog(url, create=False)
    with cat.session() as s:
        assert s.scalars(select(SchemaVersion.version)).all() == [catalog_mod.SCHEMA_VERSION]
    cat.close()

    # a newer zslr with schema version +1 but no migration refuses, naming both versions
    v = catalog_mod.SCHEMA_VERSION
    monkeypatch.setattr(catalog_mod, "SCHEMA_VERSION", v + 1)
    with pytest.raises(IncompatibleError, match=f"schema version {v}; this zslr reads schema version {v + 1}"):
        Catalog(url, create=False)
    # with its migration, opening migrates (same DDL on both backends) and the data survives
    monkeypatch.setitem(catalog_mod.MIGRATIONS, v, lambda conn: conn.exec_driver_sql("ALTER TABLE manifest ADD COLUMN note VARCHAR(64)"))
    cat = Catalog(url, create=False)
    with cat.session() as s:
        assert s.scalars(select(SchemaVersion.version)).all() == [v + 1]
        assert s.get(Manifest, 1).n_ok == 10
    assert "note" in {c["name"] for c in inspect(cat.engine).get_columns("manifest")}
    cat.close()
    Catalog(url, create=False).close()  # now current


def test_concurrent_schema_creation(tmp_path, catalog_db):
    url = catalog_db or f"sqlite:///{tmp_path / 'cat.sqlite'}"
    errors, start = [], threading.Barrier(4)

    def create():
        try:
            start.wait()
            Catalog(url, create=True).close()
        except Exception as e:  # noqa: BLE001  (collected and asserted below)
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    cat = Catalog(url, create=False)
    with cat.session() as s:
        assert s.scalars(select(SchemaVersion.version)).all() == [catalog_mod.SCHEMA_VERSION]
    cat.close()


def test_concurrent_writers_are_serialised(tmp_path, catalog_db, monkeypatch):
    """Two writers of one catalog that the folder's flock cannot order (as on two hosts): the
    catalog's write lock must, or both take the same shard and faiss ids from the manifest."""
    x, paths, labels = _features(n=8)
    index_features("toy", x, paths, labels, root=tmp_path, db=catalog_db).close()
    folder = tmp_path / "toy"
    monkeypatch.setattr(WriteLock, "acquire", lambda self, blocking=True: True)
    write = FeatureStore.write

    def slow_write(self, shard_id, arr):  # widen the window between reading and bumping the counters
        time.sleep(0.02)
        return write(self, shard_id, arr)

    monkeypatch.setattr(FeatureStore, "write", slow_write)
    writers = [IndexWriter(folder, "toy"), IndexWriter(folder, "toy")]
    errors, start = [], threading.Barrier(2)

    def run(tag, w):
        rng = np.random.default_rng(len(tag))
        try:
            start.wait()
            for c in range(5):
                items = [ChunkItem(f"{tag}/{c}/{i}", None, None) for i in range(3)]
                w.commit_chunk(items, rng.standard_normal((3, 8)).astype(np.float32), [])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t, w)) for t, w in zip("ab", writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    writers[0].sync_index()
    for w in writers:
        w.close()
    cat = Catalog(catalog_url(folder, None), create=False)
    with cat.session() as s:
        m = s.get(Manifest, 1)
        fids = s.scalars(select(IndexEntry.faiss_id)).all()
        shards = s.scalars(select(FeatureShard.id)).all()
        assert (m.n_ok, m.n_entries, m.next_faiss_id) == (38, 38, 38)
        assert sorted(fids) == list(range(38)) and len(set(shards)) == len(shards) == m.next_shard_id
    cat.close()
    rep = check_index("toy", tmp_path)
    assert rep.current, (rep.problems, rep.repairable)
    with open_index("toy", tmp_path) as ix:
        assert ix.ntotal == 38


def test_v1_catalog_migrates_to_shard_checksums(tmp_path, catalog_db):
    """A schema-1 catalog (no feature_shards.sha256) opens and migrates; its old shards are reported unverified."""
    x, paths, labels = _features(n=12)
    index_features("toy", x, paths, labels, root=tmp_path, db=catalog_db, chunk_size=6).close()
    url = catalog_url(tmp_path / "toy", catalog_db)
    cat = Catalog(url, create=False)
    with cat.engine.begin() as c:  # back to what zslr with schema 1 wrote
        c.exec_driver_sql("ALTER TABLE feature_shards DROP COLUMN sha256")
        c.exec_driver_sql("DROP INDEX ix_images_taken_at")  # and without schema 3's columns
        for col in catalog_mod.IMAGE_INFO_COLUMNS:
            c.exec_driver_sql(f"ALTER TABLE images DROP COLUMN {col}")
        c.exec_driver_sql("UPDATE schema_version SET version = 1")
    cat.close()
    with open_index("toy", tmp_path) as ix:  # a reader migrates too (one write transaction)
        assert ix.ntotal == 12
    rep = check_index("toy", tmp_path)
    assert rep.current and any("2 feature shard(s) written before schema version 2" in n for n in rep.notes), rep.notes
    index_features("toy", x + 1, paths, labels, root=tmp_path).close()  # every row replaced: a new, checksummed shard
    rep = check_index("toy", tmp_path)
    assert rep.current and rep.summary["shards"] == 3 and not any("schema version 2" in n for n in rep.notes), rep.notes


def test_counters_follow_each_commit_without_a_recount(tmp_path, catalog_db):
    """The manifest's counters are updated from each commit's own rows (no recount of the catalog per
    commit); through adds, failures, a failure fixed, a replacement, a touch, a removal and a re-add they
    equal a recount of the tables."""
    from zslretrieval.features.pipeline import FileMeta
    from zslretrieval.index.catalog import count_status

    x, paths, labels = _features(n=6)
    index_features("toy", x[:2], paths[:2], labels[:2], root=tmp_path, db=catalog_db).close()
    folder = tmp_path / "toy"
    rng = np.random.default_rng(0)

    def meta(tag):
        return FileMeta(sha256=tag * 8, size=10, mtime_ns=1)

    def recount(w):
        with w.catalog.session() as s:
            m, c = s.get(Manifest, 1), count_status(s)
            n_entries = len(s.scalars(select(IndexEntry.faiss_id)).all())
            return ((m.n_ok, m.n_failed, m.n_removed, m.n_images, m.n_entries),
                    (c["ok"], c["failed"], c["removed"], sum(c.values()), n_entries))

    with IndexWriter(folder, "toy", catalog_db) as w:
        steps = [
            ([ChunkItem("p/a", "c", meta("a")), ChunkItem("p/b", "c", meta("b"))], [(ChunkItem("p/c", "c", meta("c")), "bad")]),
            ([ChunkItem("p/c", "c", meta("c"))], []),                                  # the failure fixed
            ([ChunkItem("p/a", "c", meta("A"))], []),                                  # replaced (new content)
            ([ChunkItem("p/b", "c", meta("b"))], [(ChunkItem("p/d", None, None), "bad")]),  # touched + a new failure
            ([], [(ChunkItem("p/a", "c", meta("a")), "now unreadable")]),             # ok -> failed
        ]
        for ok, failed in steps:
            w.commit_chunk(ok, rng.standard_normal((len(ok), 8)).astype(np.float32), failed)
            have, want = recount(w)
            assert have == want
        w.mark_removed(["p/b"])
        w.commit_chunk([ChunkItem("p/b", "c", meta("b"))], rng.standard_normal((1, 8)).astype(np.float32), [])  # re-added
        have, want = recount(w)
        assert have == want == (4, 2, 0, 6, 4)
