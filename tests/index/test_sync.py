"""``zslr index DIR`` re-runs keep the index in sync with the folder (issue 31): files that are gone or
now excluded leave the catalog *and* the FAISS file; hidden names, --exclude, symlinked folders; the
date taken and size of every image are stored for filters, and filled in for a schema-2 catalog."""
from __future__ import annotations

import datetime as dt
import os

from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select

import tests.index.fakes  # noqa: F401  (tiny-test backbone)
from tests.index.fakes import write_images
from zslretrieval.cli import cli
from zslretrieval.index import catalog as catalog_mod
from zslretrieval.index import check_index, open_index
from zslretrieval.index.catalog import Catalog, ImageRow
from zslretrieval.index.layout import catalog_url
from zslretrieval.index.searchers.faiss_files import index_ids, read_index
from zslretrieval.ingest import IndexConfig, index_images


def _cfg(tmp_path, inputs=None, **kw):
    base = dict(inputs=inputs or [tmp_path / "imgs"], root=tmp_path / "ix", backbone="tiny-test", device="cpu",
                workers=0, batch_size=4, chunk_size=5)
    base.update(kw)
    return IndexConfig(**base)


def _faiss_paths(tmp_path, name="default"):
    """Paths of the images whose vectors the FAISS file holds (its own id list, mapped through the catalog)."""
    folder = tmp_path / "ix" / name
    (faiss_file,) = folder.glob("index-*.faiss")
    fids = set(int(i) for i in index_ids(read_index(faiss_file)))
    with open_index(name, tmp_path / "ix") as ix:
        all_fids, img = ix.entry_ids()
        by_fid = dict(zip(all_fids.tolist(), img.tolist()))
        assert fids == set(by_fid), "FAISS ids differ from the catalog entries"
        return sorted(r.path for r in ix.records([by_fid[f] for f in sorted(fids)]))


def _rows(tmp_path, name="default"):
    cat = Catalog(catalog_url(tmp_path / "ix" / name, None), create=False)
    with cat.session() as s:
        out = {r.path: r for r in s.scalars(select(ImageRow))}
    cat.close()
    return out


def test_deleted_file_leaves_catalog_and_faiss_file(tmp_path, catalog_db):
    paths = write_images(tmp_path / "imgs", 9, seed=1)
    other = write_images(tmp_path / "other", 2, seed=2)
    index_images(_cfg(tmp_path, db=catalog_db))
    index_images(_cfg(tmp_path, inputs=[tmp_path / "other"]))
    assert _faiss_paths(tmp_path) == sorted(map(str, paths + other))
    os.remove(paths[4])
    os.remove(other[0])          # outside the folder indexed next: reported, kept until --prune
    r = index_images(_cfg(tmp_path))
    assert r.gone == [str(paths[4])] and r.vanished == [str(other[0])] and r.pruned == 0
    assert (r.n_ok, r.n_entries, r.added, r.unchanged) == (10, 10, 0, 8)
    assert _faiss_paths(tmp_path) == sorted(map(str, paths[:4] + paths[5:] + other))
    assert _rows(tmp_path)[str(paths[4])].status == "removed"
    r = index_images(_cfg(tmp_path, prune=True))
    assert r.pruned == 1 and r.n_ok == 9 and str(other[0]) not in _faiss_paths(tmp_path)
    rep = check_index("default", tmp_path / "ix")
    assert rep.current and rep.summary["n_removed"] == 2, (rep.problems, rep.repairable)
    # the file comes back: indexed again under a new id
    Image.new("RGB", (40, 40), (5, 6, 7)).save(paths[4])
    r = index_images(_cfg(tmp_path))
    assert r.added == 1 and str(paths[4]) in _faiss_paths(tmp_path)


def test_exclude_and_hidden_on_rerun(tmp_path):
    write_images(tmp_path / "imgs", 6, seed=1)
    write_images(tmp_path / "imgs" / ".trash", 2, seed=5)
    write_images(tmp_path / "imgs" / "thumbs", 2, seed=6)
    r = index_images(_cfg(tmp_path))
    assert r.n_ok == 8 and not any("/.trash/" in p for p in _faiss_paths(tmp_path))
    r = index_images(_cfg(tmp_path, include_hidden=True))
    assert r.added == 2 and r.n_ok == 10
    # excluded (and hidden again) on the next run: removed from catalog and FAISS file, reported
    r = index_images(_cfg(tmp_path, exclude=["thumbs"]))
    assert len(r.deselected) == 4 and not r.gone and r.n_ok == 6
    kept = _faiss_paths(tmp_path)
    assert len(kept) == 6 and not any("/thumbs/" in p or "/.trash/" in p for p in kept)
    assert r.walks[0].excluded == 1 and r.walks[0].hidden == 1


def test_cli_symlinked_species_folders_indexed_and_reported(tmp_path):
    """A library of symlinked species folders indexes their photos (it used to say "0 image(s) ok, 0 failed")."""
    write_images(tmp_path / "store", 6, seed=3)   # store/class0..2
    lib = tmp_path / "lib"
    lib.mkdir()
    for k in range(3):
        os.symlink(tmp_path / "store" / f"class{k}", lib / f"species{k}")
    os.symlink(lib, tmp_path / "store" / "class0" / "loop")
    res = CliRunner().invoke(cli, ["index", str(lib), "--index-root", str(tmp_path / "ix"), "--backbone", "tiny-test",
                                   "--device", "cpu", "--workers", "0", "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "6 image(s) ok" in res.output and "0 removed (gone)" in res.output
    assert f"not walked: {lib / 'species0' / 'loop'}: symlink to {lib}, already walked as {lib}" in res.output
    # a folder with nothing to index says why instead of a silent "0 image(s) ok"
    (tmp_path / "empty" / ".x").mkdir(parents=True)
    (tmp_path / "empty" / ".x" / "a.jpg").write_bytes(b"x")
    (tmp_path / "empty" / "readme.txt").write_text("x")
    res = CliRunner().invoke(cli, ["index", str(tmp_path / "empty"), "--index-root", str(tmp_path / "ix"), "--name", "e",
                                   "--backbone", "tiny-test", "--device", "cpu", "--workers", "0", "-q"])
    assert res.exit_code == 0, res.output
    assert f"warning: no image files under {tmp_path / 'empty'}: 1 file(s) without an image extension" in res.output
    assert "1 hidden name(s) skipped (--include-hidden takes them)" in res.output
    # a removal through the CLI is counted
    os.remove(tmp_path / "store" / "class1" / "img0001.jpg")
    res = CliRunner().invoke(cli, ["index", str(lib), "--index-root", str(tmp_path / "ix"), "--backbone", "tiny-test",
                                   "--device", "cpu", "--workers", "0", "-q"], catch_exceptions=False)
    assert "1 removed (gone)" in res.output and "5 image(s) ok" in res.output, res.output


def _jpeg_with_date(path, when):
    img = Image.new("RGB", (48, 32), (90, 10, 200))
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = when
    exif.get_ifd(0x8769)[36881] = "+00:00"
    img.save(path, "JPEG", exif=exif)


def test_date_and_size_stored_and_filled_in_after_migration(tmp_path, catalog_db):
    (tmp_path / "imgs").mkdir()
    _jpeg_with_date(tmp_path / "imgs" / "dated.jpg", "2011:03:04 05:06:07")
    Image.new("RGB", (20, 30), (1, 2, 3)).save(tmp_path / "imgs" / "plain.png")
    os.utime(tmp_path / "imgs" / "plain.png", ns=(0, 1_500_000_000 * 10**9))
    index_images(_cfg(tmp_path, db=catalog_db))
    rows = _rows(tmp_path) if catalog_db is None else None
    url = catalog_url(tmp_path / "ix" / "default", catalog_db)
    cat = Catalog(url, create=False)

    def info():
        with cat.session() as s:
            return {os.path.basename(r.path): (r.taken_at, r.taken_at_source, r.width, r.height)
                    for r in s.scalars(select(ImageRow))}
    want = {"dated.jpg": (dt.datetime(2011, 3, 4, 5, 6, 7), "exif", 48, 32),
            "plain.png": (dt.datetime(2017, 7, 14, 2, 40), "mtime", 20, 30)}
    assert info() == want
    assert rows is None or rows[str(tmp_path / "imgs" / "dated.jpg")].status == "ok"
    # back to a schema-2 catalog (no date columns), as an older zslr wrote it: opening migrates it,
    # the next run fills the dates in without decoding anything
    with cat.engine.begin() as c:
        c.exec_driver_sql("DROP INDEX ix_images_taken_at")
        for col in catalog_mod.IMAGE_INFO_COLUMNS:
            c.exec_driver_sql(f"ALTER TABLE images DROP COLUMN {col}")
        c.exec_driver_sql("UPDATE schema_version SET version = 2")
    cat.close()
    with open_index("default", tmp_path / "ix") as ix:
        assert ix.ntotal == 2
    cat = Catalog(url, create=False)
    assert set(info().values()) == {(None, None, None, None)}
    r = index_images(_cfg(tmp_path))
    assert (r.encoded, r.unchanged, r.dates_filled) == (0, 2, 2)
    assert info() == want
    cat.close()
    assert catalog_mod.SCHEMA_VERSION == 3


def test_failed_rows_have_no_date(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "ok.jpg")
    r = index_images(_cfg(tmp_path))
    assert r.n_failed == 1 and r.n_ok == 1
    rows = _rows(tmp_path)
    assert rows[str(tmp_path / "imgs" / "bad.jpg")].taken_at is None
    assert rows[str(tmp_path / "imgs" / "ok.jpg")].taken_at_source == "mtime"
    assert (rows[str(tmp_path / "imgs" / "ok.jpg")].width, rows[str(tmp_path / "imgs" / "ok.jpg")].height) == (8, 8)


def test_removal_is_crash_safe(tmp_path):
    """Killed after the removal's catalog commit, before the FAISS sync: the FAISS file is ahead of the
    catalog (repairable, not a problem) and the next open or run drops the stale ids."""
    from zslretrieval.index.writer import IndexWriter

    paths = write_images(tmp_path / "imgs", 6, seed=4)
    index_images(_cfg(tmp_path))
    os.remove(paths[0])
    with IndexWriter(tmp_path / "ix" / "default") as w:   # what the run commits first, then "crash"
        w.mark_removed([str(paths[0])])
    rep = check_index("default", tmp_path / "ix")
    assert rep.ok and not rep.current and rep.repairable, (rep.problems, rep.repairable)
    r = index_images(_cfg(tmp_path))       # the re-run finds nothing more to remove and syncs FAISS
    assert not r.gone and r.n_ok == 5
    assert _faiss_paths(tmp_path) == sorted(map(str, paths[1:]))
    assert check_index("default", tmp_path / "ix").current


def test_emptied_folder_is_not_a_mass_deletion(tmp_path):
    """A folder that holds no image at all any more (an unmounted drive's mount point) keeps its rows
    unless --prune says otherwise; one file left in it is enough for the others to count as gone."""
    paths = write_images(tmp_path / "imgs", 4, seed=7)
    index_images(_cfg(tmp_path))
    for p in paths:
        os.remove(p)
    r = index_images(_cfg(tmp_path))
    assert r.empty_roots == [str(tmp_path / "imgs")] and not r.gone and len(r.vanished) == 4 and r.n_ok == 4
    r = index_images(_cfg(tmp_path, prune=True))
    assert len(r.gone) == 4 and r.n_ok == 0 and r.n_entries == 0 and not r.empty_roots
