"""Catalog schema: version check, other SQLAlchemy URLs, index_features semantics."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

import tests.index.fakes  # noqa: F401
from tests.index.fakes import make_checkpoint, write_images
from zslretrieval.cli import cli
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.index import SCHEMA_VERSION, check_index, open_index
from zslretrieval.index.searchers import NumpySearcher
from zslretrieval.index.space import l2_normalize
from zslretrieval.ingest import IndexConfig, index_features, index_images


def _features(n=40, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, [f"toy/test/{i}" for i in range(n)], [f"class{i % 4}" for i in range(n)]


def test_schema_version_mismatch_names_both(tmp_path):
    x, paths, labels = _features()
    index_features("toy", x, paths, labels, root=tmp_path).close()
    with sqlite3.connect(tmp_path / "toy" / "catalog.sqlite") as c:
        c.execute("update schema_version set version = 99")
    with pytest.raises(IncompatibleError, match=rf"schema version 99.*schema version {SCHEMA_VERSION}"):
        open_index("toy", tmp_path)
    res = CliRunner().invoke(cli, ["check", "--name", "toy", "--index-root", str(tmp_path)])
    assert res.exit_code == 2 and "schema version 99" in res.output


def test_foreign_database_is_not_a_catalog(tmp_path):
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as c:
        c.execute("create table customers (id integer)")
    x, paths, labels = _features()
    with pytest.raises(IncompatibleError, match="no schema_version"):
        index_features("toy", x, paths, labels, root=tmp_path, db=f"sqlite:///{db}")


def test_second_sqlite_url(tmp_path):
    write_images(tmp_path / "imgs", 6)
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'cat.db'}"
    r = index_images(IndexConfig(inputs=[tmp_path / "imgs"], root=tmp_path / "ix", db=url, backbone="tiny-test",
                                 device="cpu", workers=0))
    assert r.n_ok == 6
    assert (tmp_path / "elsewhere" / "cat.db").is_file()
    assert not (tmp_path / "ix" / "default" / "catalog.sqlite").exists()
    ix = open_index("default", tmp_path / "ix")  # the folder remembers its catalog URL
    assert ix.manifest.db_url == url and ix.ntotal == 6
    ix.close()
    assert check_index("default", tmp_path / "ix").current
    res = CliRunner().invoke(cli, ["check", "--index-root", str(tmp_path / "ix"), "--db", url])
    assert res.exit_code == 0, res.output
    with pytest.raises(IncompatibleError, match="another catalog"):
        index_images(IndexConfig(inputs=[tmp_path / "imgs"], root=tmp_path / "ix", db=f"sqlite:///{tmp_path}/x.db",
                                 backbone="tiny-test", device="cpu", workers=0))
    with pytest.raises(InvalidInputError, match="SQLAlchemy URL"):
        index_images(IndexConfig(inputs=[tmp_path / "imgs"], root=tmp_path / "ix2", db="not a url",
                                 backbone="tiny-test", device="cpu", workers=0))


def test_index_features_replaces_content_and_searches_exactly(tmp_path):
    x, paths, labels = _features(n=60)
    ix = index_features("toy", x, paths, labels, root=tmp_path, chunk_size=16)
    assert ix.manifest.n_ok == 60 and ix.manifest.source == "features"
    ids, vecs = ix.vectors()
    np.testing.assert_allclose(vecs, l2_normalize(x)[[paths.index(r.path) for r in ix.records(ids)]], atol=1e-6)
    q = l2_normalize(x[:3])
    ref = NumpySearcher(8, "ip")
    ref.add(vecs, ids)
    np.testing.assert_array_equal(ix.search(q, 7)[1], ref.search(q, 7)[1])
    recs = ix.records(ix.search(q, 1)[1][:, 0])
    assert [r.path for r in recs] == paths[:3] and [r.label for r in recs] == labels[:3]
    ix.close()
    # same call again: nothing re-added; a subset: the rest removed; a changed row: replaced
    x2 = x[:50].copy()
    x2[0] += 1
    ix = index_features("toy", x2, paths[:50], labels[:50], root=tmp_path)
    assert (ix.manifest.n_ok, ix.manifest.n_removed, ix.ntotal) == (50, 10, 50)
    ix.close()
    assert check_index("toy", tmp_path).current
    # with an IVF index type and a model checkpoint
    ck = tmp_path / "m.pt"
    make_checkpoint(ck, 8, "tiny-l2")
    ix = index_features("toy", x2, paths[:50], labels[:50], root=tmp_path, index_type="IVF2,Flat", model_checkpoint=ck)
    assert (ix.manifest.dim, ix.manifest.metric, ix.manifest.index_type) == (6, "l2", "IVF2,Flat")
    D, I = ix.search(ix.vectors()[1][:2], None)
    assert D.shape == (2, 50) and (D[:, 0] == pytest.approx(0, abs=1e-4))
    ix.close()
    with pytest.raises(InvalidInputError, match="duplicate"):
        index_features("toy", x[:2], ["a", "a"], [None, None], root=tmp_path)
    with pytest.raises(InvalidInputError, match="2 feature rows but 1 paths"):
        index_features("toy", x[:2], ["a"], [None, None], root=tmp_path)
    with pytest.raises(InvalidInputError, match="IVF64"):
        index_features("tiny", x[:10], paths[:10], labels[:10], root=tmp_path, index_type="IVF64,Flat")


def test_untrainable_index_type_refused_before_writing(tmp_path):
    x, paths, labels = _features(n=10)
    with pytest.raises(InvalidInputError, match="at least 64"):
        index_features("tiny", x, paths, labels, root=tmp_path, index_type="IVF64,Flat")
    assert not (tmp_path / "tiny").exists()
    index_features("tiny", x, paths, labels, root=tmp_path).close()
    with pytest.raises(InvalidInputError, match="at least 64"):
        index_images(IndexConfig(root=tmp_path, name="tiny", index_type="IVF64,Flat"))
    assert open_index("tiny", tmp_path).manifest.index_type == "Flat"  # unchanged, still searchable


@pytest.mark.parametrize("spec", ["Flat", "HNSW8"])
def test_removal_in_place_or_by_rebuild(tmp_path, spec):
    x, paths, labels = _features(n=30)
    index_features("toy", x, paths, labels, root=tmp_path, index_type=spec).close()
    ix = index_features("toy", x[5:], paths[5:], labels[5:], root=tmp_path, index_type=spec)  # HNSW cannot remove
    assert ix.ntotal == 25 and {r.path for r in ix.records(ix.search(x[:5], 25)[1].ravel())} == set(paths[5:])
    ix.close()
    assert check_index("toy", tmp_path).current
