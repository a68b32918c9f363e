"""Incremental, crash-tolerant indexing of image folders, and OpenIndex search against brute force."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import func, select

import tests.index.fakes  # noqa: F401  (tiny-test backbone, tiny-linear / tiny-l2 models)
from tests.index.fakes import make_checkpoint, write_images
from zslretrieval.errors import DataNotFoundError, IncompatibleError, InvalidInputError
from zslretrieval.features import extract_features
from zslretrieval.index import check_index, open_index
from zslretrieval.index.catalog import Catalog, IndexEntry
from zslretrieval.index.layout import catalog_url
from zslretrieval.index.searchers import NumpySearcher
from zslretrieval.index.space import l2_normalize
from zslretrieval.index.writer import ChunkItem, IndexWriter
from zslretrieval.ingest import IndexConfig, index_images


def _cfg(tmp_path, **kw):
    base = dict(inputs=[tmp_path / "imgs"], root=tmp_path / "ix", backbone="tiny-test", device="cpu", workers=0,
                batch_size=4, chunk_size=5)
    base.update(kw)
    return IndexConfig(**base)


def _assert_consistent(tmp_path, n_ok, name="default"):
    rep = check_index(name, tmp_path / "ix")
    assert rep.current, (rep.problems, rep.repairable)
    assert rep.summary["n_ok"] == rep.summary["n_entries"] == rep.summary["ntotal"] == n_ok
    return rep


def _max_faiss_id(tmp_path):
    cat = Catalog(catalog_url(tmp_path / "ix" / "default", None), create=False)  # SQLite or PostgreSQL
    with cat.session() as s:
        out = tuple(s.execute(select(func.max(IndexEntry.faiss_id), func.count()).select_from(IndexEntry)).one())
    cat.close()
    return out


@pytest.fixture()
def imgs(tmp_path):
    paths = write_images(tmp_path / "imgs", 12, seed=3)
    (tmp_path / "imgs" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    return paths


def test_incremental_rerun_change_touch_prune(tmp_path, imgs, catalog_db):
    r = index_images(_cfg(tmp_path, db=catalog_db))  # later runs find the catalog URL in the folder
    assert (r.added, r.unchanged, len(r.failures), r.n_ok, r.n_entries) == (12, 0, 1, 12, 12)
    assert r.failures[0][0].endswith("broken.jpg")
    _assert_consistent(tmp_path, 12)

    r = index_images(_cfg(tmp_path))  # nothing new: nothing decoded, nothing added
    assert (r.added, r.replaced, r.unchanged, r.encoded, len(r.failures)) == (0, 0, 13, 0, 0)
    assert _max_faiss_id(tmp_path) == (11, 12)

    # changed content -> replaced under a fresh faiss id; same content, new mtime -> only touched
    Image.new("RGB", (40, 40), (250, 10, 10)).save(imgs[0])
    st = os.stat(imgs[1])
    os.utime(imgs[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = index_images(_cfg(tmp_path))
    assert (r.added, r.replaced, r.touched, r.unchanged) == (0, 1, 1, 11)
    assert not r.index_rebuilt  # the old vector removed in place, the new one added
    assert _max_faiss_id(tmp_path) == (12, 12)
    _assert_consistent(tmp_path, 12)
    ix = open_index("default", tmp_path / "ix")
    (rec,) = [x for x in ix.all_records() if x.path == str(imgs[0])]
    ids, vecs = ix.vectors()
    bb_feat = extract_features([imgs[0]], "tiny-test", device="cpu", workers=0)[0]
    np.testing.assert_allclose(vecs[list(ids).index(rec.id)], l2_normalize(bb_feat)[0], rtol=1e-5, atol=1e-6)
    ix.close()

    # files gone from the folder indexed again are removed by the re-run (issue 31: sync)
    os.remove(imgs[2])
    os.remove(imgs[3])
    r = index_images(_cfg(tmp_path))
    assert sorted(r.gone) == sorted(map(str, imgs[2:4])) and not r.vanished and r.pruned == 0
    assert r.n_ok == 10 and r.n_entries == 10 and not r.index_rebuilt
    rep = _assert_consistent(tmp_path, 10)
    assert rep.summary["n_removed"] == 2
    # a removed file that comes back is indexed again
    Image.new("RGB", (40, 40), (1, 2, 3)).save(imgs[2])
    r = index_images(_cfg(tmp_path))
    assert r.added == 1 and r.n_ok == 11
    # a broken file that gets fixed is retried (its size/mtime changed)
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "imgs" / "class0" / "broken.jpg")
    r = index_images(_cfg(tmp_path))
    assert r.added == 1 and r.n_failed == 0
    _assert_consistent(tmp_path, 12)


def test_search_equals_brute_force_and_records(tmp_path, imgs, catalog_db):
    index_images(_cfg(tmp_path, db=catalog_db))
    ix = open_index("default", tmp_path / "ix")
    assert ix.manifest.backbone == "tiny-test" and ix.manifest.dim == 16 and ix.manifest.metric == "ip"
    ids, x = ix.vectors()
    raw_ids, raw = ix.raw_features()
    np.testing.assert_array_equal(raw_ids, ids)
    np.testing.assert_allclose(l2_normalize(raw), x, rtol=1e-6, atol=1e-7)  # raw features, cosine space
    q = l2_normalize(np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32))
    ref = NumpySearcher(16, "ip")
    ref.add(x, ids)
    D, I = ix.search(q, 5)
    Dr, Ir = ref.search(q, 5)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    Dall, Iall = ix.search(q, None)  # exact full ranking, every entry
    assert Iall.shape == (3, 12)
    np.testing.assert_array_equal(Iall, ref.search(q, 12)[1])
    D20, I20 = ix.search(q, 20)  # more than stored: -1 padding
    assert (I20[:, 12:] == -1).all() and np.isneginf(D20[:, 12:]).all()
    recs = ix.records(I20[0])
    assert [r.id for r in recs] == I20[0, :12].tolist()
    assert all(r.label in {"class0", "class1", "class2"} and os.path.isfile(r.path) for r in recs)
    with pytest.raises(InvalidInputError, match="expects"):
        ix.search(np.zeros((1, 5), np.float32), 3)
    with pytest.raises(InvalidInputError, match="999"):
        ix.records([999])
    assert ix.model() is None


@pytest.mark.parametrize("model_name", ["tiny-linear", "tiny-l2"])
def test_model_rebuild_without_decoding(tmp_path, imgs, model_name):
    index_images(_cfg(tmp_path))
    ckpt = tmp_path / "m.pt"
    model = make_checkpoint(ckpt, 16, model_name)
    r = index_images(IndexConfig(root=tmp_path / "ix", model=ckpt))  # no inputs: store -> model -> FAISS
    assert r.encoded == 0 and r.index_rebuilt and r.n_entries == 12
    _assert_consistent(tmp_path, 12)
    ix = open_index("default", tmp_path / "ix")
    m = ix.manifest
    assert (m.dim, m.metric, m.model_card.model) == (6, model.metric, model_name)
    loaded, card, sem = ix.model()
    assert card.model == model_name and sem.shape == (4, 4)
    # index vectors are the model's embeddings of the stored raw features
    ids, vecs = ix.vectors()
    feats = extract_features(sorted(map(str, imgs)), "tiny-test", device="cpu", workers=0)[0]
    with torch.no_grad():
        emb = model.embed_images(torch.from_numpy(feats)).numpy()
    if model.metric == "ip":
        emb = l2_normalize(emb)
    by_path = {r.id: r.path for r in ix.all_records()}
    order = [sorted(map(str, imgs)).index(by_path[i]) for i in ids]
    np.testing.assert_allclose(vecs, emb[order], rtol=1e-4, atol=1e-5)
    q = emb[:2] + 0.01
    ref = NumpySearcher(6, model.metric)
    ref.add(vecs, ids)
    D, I = ix.search(q, 4)
    Dr, Ir = ref.search(q, 4)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-4, atol=1e-4)
    if model.metric == "l2":
        assert (D <= 0).all()  # negative squared distances
    ix.close()
    # back to raw features, then an IVF index of the same store
    r = index_images(IndexConfig(root=tmp_path / "ix", no_model=True, index_type="IVF2,Flat"))
    assert r.index_rebuilt
    ix = open_index("default", tmp_path / "ix")
    assert (ix.manifest.dim, ix.manifest.metric, ix.manifest.index_type) == (16, "ip", "IVF2,Flat")
    assert ix.model() is None and ix.search(ix.vectors()[1][:1], 1)[0][0, 0] == pytest.approx(1, abs=1e-5)
    _assert_consistent(tmp_path, 12)


def test_model_of_other_feature_dim_is_refused(tmp_path, imgs):
    index_images(_cfg(tmp_path))
    make_checkpoint(tmp_path / "m.pt", 2048)
    with pytest.raises(IncompatibleError, match="2048-d.*16-d tiny-test"):
        index_images(IndexConfig(root=tmp_path / "ix", model=tmp_path / "m.pt"))
    with pytest.raises(IncompatibleError, match="mix feature spaces"):
        index_images(_cfg(tmp_path, backbone="efficientnet-lite0"))


def test_repair_after_interrupted_sync_and_debris(tmp_path, imgs, catalog_db):
    index_images(_cfg(tmp_path, db=catalog_db))
    folder = tmp_path / "ix" / "default"
    # as if killed after a chunk commit but before the FAISS update
    with IndexWriter(folder) as w:
        feats = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
        w.commit_chunk([ChunkItem("/virtual/a.jpg", "x", None), ChunkItem("/virtual/b.jpg", "x", None)], feats, [])
    (folder / "features" / "shard-99999999.npy").write_bytes(b"half-written")  # as if killed before commit
    rep = check_index("default", tmp_path / "ix")
    assert rep.ok and not rep.current and any("behind the catalog: 2 entr" in r for r in rep.repairable)
    assert any("uncommitted shard" in n for n in rep.notes)
    ix = open_index("default", tmp_path / "ix")  # repairs the FAISS file from the store, drops debris
    assert ix.ntotal == 14
    ix.close()
    assert not (folder / "features" / "shard-99999999.npy").exists()
    rep = _assert_consistent(tmp_path, 14)
    assert not rep.notes
    (folder / "features" / ".shard-00000042.npy.x1.tmp").write_bytes(b"partial temp file")
    r = index_images(_cfg(tmp_path))
    assert r.debris_removed == [".shard-00000042.npy.x1.tmp"]
    assert sorted(r.vanished) == ["/virtual/a.jpg", "/virtual/b.jpg"]
    # the FAISS file itself lost: rebuilt from the store on open
    for p in folder.glob("index-*.faiss"):
        p.unlink()
    assert open_index("default", tmp_path / "ix").ntotal == 14


def test_missing_index_and_bad_options(tmp_path):
    with pytest.raises(DataNotFoundError, match="zslr index"):
        open_index("nothing", tmp_path)
    with pytest.raises(InvalidInputError, match="chunk-size"):
        index_images(IndexConfig(inputs=[tmp_path], root=tmp_path / "ix", chunk_size=0))
    with pytest.raises(DataNotFoundError, match="no-such-dir"):
        index_images(IndexConfig(inputs=[tmp_path / "no-such-dir"], root=tmp_path / "ix"))
    with pytest.raises(InvalidInputError, match="index name"):
        open_index("bad name!", tmp_path)
