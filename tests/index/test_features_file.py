"""``zslr index --features FILE``: precomputed features in through the catalog, every bad file refused
(exit 2) naming the value and what is accepted, the index's backbone and dimension enforced."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from zslretrieval.cli import main
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.index import open_index
from zslretrieval.ingest import FeaturesIndexConfig, index_features_file
from zslretrieval.ingest.features_file import read_features_file

D = 1280   # efficientnet-lite0's: a new index's dimension must be its backbone's


def feats(n: int, d: int = D, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def paths(n: int, start: int = 0) -> list[str]:
    return [f"/photos/p{i:05d}.jpg" for i in range(start, start + n)]


def run(args) -> int:
    try:
        main(list(map(str, args)))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_npz_in_then_npy_with_file_list_added_and_replaced(tmp_path):
    x = feats(40)
    np.savez(tmp_path / "a.npz", features=x, paths=np.array(paths(40)), labels=np.array(["cat", ""] * 20),
             backbone=np.array("efficientnet-lite0"))
    r = index_features_file(FeaturesIndexConfig(features=tmp_path / "a.npz", name="ix", root=tmp_path / "idx"))
    assert (r.rows, r.n_ok, r.n_entries, r.feature_dim, r.backbone) == (40, 40, 40, D, "efficientnet-lite0")
    with open_index(r.folder) as ix:
        ids, raw = ix.raw_features()
        recs = {rec.id: rec for rec in ix.records(ids)}
        by_path = {recs[i].path: raw[k] for k, i in enumerate(ids)}
        assert ix.manifest.backbone == "efficientnet-lite0" and ix.manifest.feature_dim == D
        assert recs[ids[0]].label in ("cat", None)
    np.testing.assert_array_equal(by_path["/photos/p00007.jpg"], x[7])
    # an .npy with a file list: 10 new rows and 5 replaced ones; the 35 others are kept
    y = feats(15, seed=1)
    np.save(tmp_path / "b.npy", y)
    (tmp_path / "b.txt").write_text("\n".join(f"{p}\tdog" for p in paths(15, start=35)) + "\n")
    assert run(["index", "--features", tmp_path / "b.npy", "--file-list", tmp_path / "b.txt", "--name", "ix",
                "--index-root", tmp_path / "idx"]) == 0
    with open_index(r.folder) as ix:
        assert ix.ntotal == 50 and ix.manifest.n_ok == 50
        ids, raw = ix.raw_features()
        recs = {rec.id: rec for rec in ix.records(ids)}
        by_path = {recs[i].path: raw[k] for k, i in enumerate(ids)}
        D_, I_ = ix.search(y[3:4] / np.linalg.norm(y[3]), 1)
        assert recs[int(I_[0, 0])].path == "/photos/p00038.jpg"
    np.testing.assert_array_equal(by_path["/photos/p00036.jpg"], y[1])
    np.testing.assert_array_equal(by_path["/photos/p00002.jpg"], x[2])


def test_backbone_and_dimension_mismatch_exit_2_naming_both(tmp_path, capsys):
    np.savez(tmp_path / "a.npz", features=feats(5), paths=np.array(paths(5)))
    root = tmp_path / "idx"
    assert run(["index", "--features", tmp_path / "a.npz", "--name", "ix", "--index-root", root]) == 0
    np.savez(tmp_path / "wide.npz", features=feats(5, d=D + 1), paths=np.array(paths(5, 100)))
    assert run(["index", "--features", tmp_path / "wide.npz", "--name", "ix", "--index-root", root]) == 2
    err = capsys.readouterr().err
    assert f"{D + 1}-d" in err and f"{D}-d" in err
    np.savez(tmp_path / "other.npz", features=feats(5), paths=np.array(paths(5, 200)), backbone=np.array("resnet101"))
    with pytest.raises(IncompatibleError, match="resnet101.*efficientnet-lite0"):
        index_features_file(FeaturesIndexConfig(features=tmp_path / "other.npz", name="ix", root=root))
    assert run(["index", "--features", tmp_path / "a.npz", "--backbone", "resnet101", "--name", "ix",
                "--index-root", root]) == 2
    err = capsys.readouterr().err
    assert "resnet101" in err and "efficientnet-lite0" in err
    with open_index(root / "ix") as ix:   # nothing was added by the refused runs
        assert ix.ntotal == 5


def _npz_with_member(path, name: str, data: bytes) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(name, data)


@pytest.mark.parametrize("make, words", [
    (lambda p: np.savez(p, features=feats(4).astype(np.int32), paths=np.array(paths(4))), ["int32", "float32"]),
    (lambda p: np.savez(p, features=feats(4).astype(np.complex64), paths=np.array(paths(4))), ["complex64"]),
    (lambda p: np.savez(p, features=np.where(np.eye(4, D) > 0, np.nan, 1).astype(np.float32),
                        paths=np.array(paths(4))), ["row 0", "NaN"]),
    (lambda p: np.savez(p, features=np.full((3, D), np.inf, np.float32), paths=np.array(paths(3))), ["row 0"]),
    (lambda p: np.savez(p, features=feats(4), paths=np.array(paths(3))), ["3 values", "4 feature rows"]),
    (lambda p: np.savez(p, features=feats(4)), ["no paths", "--file-list"]),
    (lambda p: np.savez(p, vectors=feats(4), paths=np.array(paths(4))), ["no 'features'", "vectors"]),
    (lambda p: np.savez(p, features=feats(4)[0], paths=np.array(paths(4))), ["shape (1280,)", "(N, D)"]),
    (lambda p: np.savez(p, features=np.zeros((0, D), np.float32), paths=np.array([], str)), ["N >= 1"]),
    (lambda p: np.savez(p, features=feats(2), paths=np.array(["/a.jpg", "/a.jpg"])), ["duplicate", "/a.jpg"]),
    (lambda p: np.savez(p, features=feats(2), paths=np.array([1, 2])), ["paths", "int64", "strings"]),
    (lambda p: np.savez(p, features=feats(2), paths=np.array(["/a", ""])), ["row 1", "empty"]),
    (lambda p: p.write_bytes(b"not a zip"), ["not an .npz"]),
])
def test_bad_npz_files_exit_2_naming_the_value(tmp_path, capsys, make, words):
    make(tmp_path / "bad.npz")
    assert run(["index", "--features", tmp_path / "bad.npz", "--name", "ix", "--index-root", tmp_path / "idx"]) == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "idx" / "ix").exists()   # refused before anything was written


def test_ragged_rows_are_refused(tmp_path):
    ragged = np.empty(2, object)
    ragged[0], ragged[1] = [1.0, 2.0], [1.0]
    path = tmp_path / "r.npz"
    # np.savez would pickle it; the reader refuses object arrays before reading any
    np.savez(path, features=ragged, paths=np.array(paths(2)))
    with pytest.raises(InvalidInputError, match="ragged"):
        read_features_file(path)


def test_no_allocation_sized_by_a_claimed_shape(tmp_path):
    # an .npy header claiming 10^12 rows over a 1 kB body: refused from the header and the file size
    import numpy.lib.format as fmt

    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        fmt.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**12, D)})
        f.write(b"\0" * 1024)
    with pytest.raises(InvalidInputError, match="header says"):
        read_features_file(path)
    # the same claim inside an .npz member
    with open(path, "rb") as f:
        member = f.read()
    npz = tmp_path / "huge.npz"
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("features.npy", member)
        z.writestr("paths.npy", b"")
    with pytest.raises(InvalidInputError, match="header says"):
        read_features_file(npz)
    # a file list far longer than the rows could name is refused before it is read
    np.save(tmp_path / "two.npy", feats(2))
    (tmp_path / "long.txt").write_text("x" * 100_000)
    with pytest.raises(InvalidInputError, match="too long"):
        read_features_file(tmp_path / "two.npy", tmp_path / "long.txt")


def test_npy_needs_a_matching_file_list(tmp_path, capsys):
    np.save(tmp_path / "f.npy", feats(3))
    root = ["--name", "ix", "--index-root", tmp_path / "idx"]
    assert run(["index", "--features", tmp_path / "f.npy", *root]) == 2
    assert "--file-list" in capsys.readouterr().err
    (tmp_path / "l.txt").write_text("/a.jpg\n/b.jpg\n")
    assert run(["index", "--features", tmp_path / "f.npy", "--file-list", tmp_path / "l.txt", *root]) == 2
    assert "2 paths for 3 feature rows" in capsys.readouterr().err
    np.save(tmp_path / "f.npy", np.asfortranarray(feats(3)))
    (tmp_path / "l.txt").write_text("/a.jpg\n/b.jpg\n/c.jpg\n")
    assert run(["index", "--features", tmp_path / "f.npy", "--file-list", tmp_path / "l.txt", *root]) == 2
    assert "Fortran" in capsys.readouterr().err
    np.save(tmp_path / "i.npy", np.arange(3 * D).reshape(3, D))
    assert run(["index", "--features", tmp_path / "i.npy", "--file-list", tmp_path / "l.txt", *root]) == 2
    assert "int64" in capsys.readouterr().err
    (tmp_path / "f.csv").write_text("1,2\n")
    assert run(["index", "--features", tmp_path / "f.csv", *root]) == 2
    err = capsys.readouterr().err
    assert "'.csv'" in err and ".parquet" in err
    np.save(tmp_path / "h.npy", feats(3, dtype=np.float16))
    assert run(["index", "--features", tmp_path / "h.npy", "--file-list", tmp_path / "l.txt", *root]) == 0
    with open_index(tmp_path / "idx" / "ix") as ix:
        assert ix.ntotal == 3


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    x = feats(12)
    table = pa.table({"path": paths(12), "features": [list(map(float, r)) for r in x], "label": ["a"] * 12})
    table = table.replace_schema_metadata({"backbone": "efficientnet-lite0"})
    pq.write_table(table, tmp_path / "f.parquet", row_group_size=5)
    r = index_features_file(FeaturesIndexConfig(features=tmp_path / "f.parquet", name="ix", root=tmp_path / "idx"))
    assert r.n_entries == 12
    with open_index(r.folder) as ix:
        ids, raw = ix.raw_features()
        recs = {rec.id: rec for rec in ix.records(ids)}
        got = {recs[i].path: raw[k] for k, i in enumerate(ids)}
    np.testing.assert_allclose(got["/photos/p00011.jpg"], x[11], rtol=1e-6)
    bad = pa.table({"path": paths(2), "features": [[1.0, 2.0], [1.0]]})
    pq.write_table(bad, tmp_path / "ragged.parquet")
    with pytest.raises(InvalidInputError, match="ragged.*row 1 has 1"):
        read_features_file(tmp_path / "ragged.parquet")
    pq.write_table(pa.table({"features": [[1.0]]}), tmp_path / "nopath.parquet")
    with pytest.raises(InvalidInputError, match="no 'path' column"):
        read_features_file(tmp_path / "nopath.parquet")
    pq.write_table(pa.table({"path": ["/a"], "features": [[1, 2]]}), tmp_path / "ints.parquet")
    with pytest.raises(InvalidInputError, match="int64"):
        read_features_file(tmp_path / "ints.parquet")
    pq.write_table(pa.table({"path": ["/a"], "features": [[float("nan"), 1.0]]}), tmp_path / "nan.parquet")
    with pytest.raises(InvalidInputError, match="row 0 holds NaN"):
        read_features_file(tmp_path / "nan.parquet")
