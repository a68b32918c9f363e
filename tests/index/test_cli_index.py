"""`zslr index` / `zslr check` through the CLI: real photos with planted bad files, benchmark features."""
from __future__ import annotations

import shutil
import sqlite3

from click.testing import CliRunner

import tests.index.fakes  # noqa: F401
from tests.index.fakes import write_images
from zslretrieval.cli import cli
from zslretrieval.index import open_index


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_real_photos_efficientnet_with_planted_bad_files(shared_data, tmp_path):
    photos = tmp_path / "awa2"
    shutil.copytree(shared_data / "photos" / "awa2" / "JPEGImages", photos)
    good = photos / "tiger" / "tiger_10020.jpg"
    data = good.read_bytes()
    (photos / "tiger" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "bat" / "notes.jpg").write_text("this is a text file, not a JPEG\n")
    res = _run("index", photos, "--backbone", "efficientnet-lite0", "--index-root", tmp_path / "ix",
               "--workers", "1", "--batch-size", "8", "-q")
    assert res.exit_code == 0, res.output
    assert "30 added" in res.output and "skipped 3 file(s)" in res.output
    for name, why in [("truncated.jpg", "truncated"), ("empty.jpg", "empty file"), ("notes.jpg", "not an image")]:
        assert any(name in line and why in line for line in res.output.splitlines()), (name, res.output)
    res = _run("check", "--index-root", tmp_path / "ix")
    assert res.exit_code == 0 and "30 image(s) ok (3 failed" in res.output and "30 vectors" in res.output
    ix = open_index("default", tmp_path / "ix")
    assert (ix.manifest.backbone, ix.manifest.feature_dim) == ("efficientnet-lite0", 1280)
    recs = {r.path.rsplit("/", 1)[1]: r for r in ix.all_records()}
    assert recs["tiger_10020.jpg"].label == "tiger"
    # every photo's nearest neighbour is itself
    ids, x = ix.vectors()
    D, I = ix.search(x, 5)
    assert (I[:, 0] == ids).all()
    ix.close()
    res = _run("index", photos, "--index-root", tmp_path / "ix", "-q")  # backbone from the manifest
    assert res.exit_code == 0 and "0 added" in res.output and "33 unchanged" in res.output  # failed ones too


def test_cli_dataset_features_and_check_failure(tmp_path):
    root = tmp_path / "ix"
    res = _run("index", "--dataset", "synthetic", "--split", "test_unseen", "--name", "syn", "--index-root", root)
    assert res.exit_code == 0, res.output
    ix = open_index("syn", root)
    recs = ix.all_records()
    assert recs and all(r.path.startswith("synthetic/test_unseen/") for r in recs)
    from zslretrieval.data import load_dataset
    ds = load_dataset("synthetic")
    unseen = {ds.class_names[c] for c in ds.split_classes("test_unseen")}
    assert {r.label for r in recs} == unseen and len(recs) == len(ds.splits["test_unseen"])
    ix.close()
    assert _run("check", "--name", "syn", "--index-root", root).exit_code == 0
    # break it: an ok image without entry -> exit 3 with the problem listed
    with sqlite3.connect(root / "syn" / "catalog.sqlite") as c:
        c.execute("delete from index_entries where faiss_id = (select min(faiss_id) from index_entries)")
    res = _run("check", "--name", "syn", "--index-root", root)
    assert res.exit_code == 3
    assert "ok image(s) without an index entry" in res.output and "n_entries" in res.output
    res = _run("index", "--dataset", "synthetic", "--split", "bogus", "--index-root", root)
    assert res.exit_code == 2 and "test_unseen" in res.output


def test_cli_errors_exit_2(tmp_path):
    res = _run("check", "--name", "nope", "--index-root", tmp_path)
    assert res.exit_code == 2 and "not found" in res.output
    res = _run("index", tmp_path / "missing-dir", "--index-root", tmp_path)
    assert res.exit_code == 2 and "missing-dir" in res.output
    write_images(tmp_path / "imgs", 3)
    res = _run("index", tmp_path / "imgs", "--backbone", "nonet", "--index-root", tmp_path)
    assert res.exit_code == 2 and "efficientnet-lite0" in res.output
    res = _run("index", tmp_path / "imgs", "--backbone", "tiny-test", "--index-type", "IVFx", "--index-root", tmp_path,
               "--device", "cpu", "--workers", "0")
    assert res.exit_code == 2 and "IVFx" in res.output
    res = _run("index", tmp_path / "imgs", "--dataset", "synthetic", "--index-root", tmp_path)
    assert res.exit_code == 2


def test_cli_file_list_and_labels(tmp_path):
    paths = write_images(tmp_path / "imgs", 5)
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p}\tcustom{i}\n" for i, p in enumerate(paths[:3])) + "imgs/class1/img0001.jpg\n")
    res = _run("index", "--file-list", lst, "--backbone", "tiny-test", "--index-root", tmp_path / "ix",
               "--device", "cpu", "--workers", "0", "-q")
    assert res.exit_code == 0, res.output
    ix = open_index("default", tmp_path / "ix")
    assert sorted(r.label for r in ix.all_records()) == ["custom0", "custom1", "custom2"]  # img0001 listed twice
    ix.close()


def test_cli_bad_cpu_forward_env_writes_nothing(tmp_path, monkeypatch):
    args = ("index", tmp_path / "imgs", "--backbone", "tiny-test", "--index-root", tmp_path / "ix",
            "--device", "cpu", "--workers", "0", "-q")
    write_images(tmp_path / "imgs", 3)
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "bogus")
    res = _run(*args)
    assert res.exit_code == 2 and "bogus" in res.output and "torchscript" in res.output, res.output
    assert not (tmp_path / "ix").exists()
    # an existing index is left as it was too, with new images waiting to be encoded
    monkeypatch.delenv("ZSLR_CPU_FORWARD")
    assert _run(*args).exit_code == 0
    write_images(tmp_path / "imgs" / "more", 2)

    def state():
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (tmp_path / "ix").rglob("*")}

    before = state()
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "bogus")
    assert _run(*args).exit_code == 2 and state() == before
