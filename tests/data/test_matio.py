"""MATLAB v5 / v7.3 reading and writing."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io as sio

from zslretrieval.data.matio import cellstr, is_v73, read_mat, write_mat
from zslretrieval.errors import DataNotFoundError, InvalidInputError


def _variables() -> dict:
    rng = np.random.default_rng(0)
    nested = np.empty((1, 2), dtype=object)
    nested[0, 0], nested[0, 1] = rng.random((2, 3)), "x"
    return {
        "att": rng.random((5, 3)),
        "single": rng.random((4, 2)).astype(np.float32),
        "loc": np.array([3, 1, 2], dtype=np.uint16),  # 1-D -> (3, 1) column
        "big": np.array([[70000, -5]], dtype=np.int32),
        "flag": np.array([[True, False, True]]),
        "names": ["abbey", "grizzly+bear", "Größe €"],
        "title": "hello world",
        "empty": "",
        "nested": nested,
    }


@pytest.mark.parametrize("v73", [False, True])
def test_round_trip(tmp_path, v73):
    v = _variables()
    path = write_mat(tmp_path / "a.mat", v, v73=v73)
    assert is_v73(path) == v73
    r = read_mat(path)
    assert set(r) == set(v)
    np.testing.assert_array_equal(r["att"], v["att"])
    assert r["single"].dtype == np.float32 and r["single"].shape == (4, 2)
    np.testing.assert_array_equal(r["single"], v["single"])
    assert r["loc"].shape == (3, 1) and r["loc"].dtype == np.uint16
    np.testing.assert_array_equal(r["loc"].ravel(), [3, 1, 2])
    np.testing.assert_array_equal(r["big"], v["big"])
    np.testing.assert_array_equal(r["flag"], [[1, 0, 1]])
    assert r["names"].shape == (3, 1) and cellstr(r["names"]) == v["names"]
    assert r["title"] == "hello world" and r["empty"] == ""
    assert r["nested"].shape == (1, 2) and r["nested"][0, 1] == "x"
    np.testing.assert_array_equal(r["nested"][0, 0], v["nested"][0, 0])
    assert list(read_mat(path, ["title", "absent"])) == ["title"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.mat"]  # no temp files left behind


def test_v73_layout_follows_matlab(tmp_path):
    path = write_mat(tmp_path / "a.mat", _variables(), v73=True)
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["att"].shape == (3, 5)  # HDF5 holds the transpose of MATLAB's (5, 3)
        assert f["att"].attrs["MATLAB_class"] == b"double"
        assert f["single"].attrs["MATLAB_class"] == b"single"
        assert f["title"].dtype == np.uint16 and f["title"].shape == (11, 1)
        assert f["title"].attrs["MATLAB_class"] == b"char" and f["title"].attrs["MATLAB_int_decode"] == 2
        assert f["names"].attrs["MATLAB_class"] == b"cell" and f["names"].shape == (1, 3)
        first = f[f["names"][0, 0]]
        assert first[()].ravel().tobytes().decode("utf-16-le") == "abbey"
        assert f["flag"].attrs["MATLAB_class"] == b"logical"


def test_reads_hand_built_v73(tmp_path):
    """A file laid out the way MATLAB writes it, built with h5py alone (independent of write_mat)."""
    path = tmp_path / "m.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        feats = f.create_dataset("features", data=np.arange(6, dtype=np.float64).reshape(3, 2))  # MATLAB 2 x 3
        feats.attrs["MATLAB_class"] = np.bytes_("double")
        refs = f.create_group("#refs#")
        names = []
        for i, s in enumerate(["cat", "dog"]):
            d = refs.create_dataset(f"n{i}", data=np.array([[ord(c)] for c in s], dtype=np.uint16))
            d.attrs["MATLAB_class"] = np.bytes_("char")
            d.attrs["MATLAB_int_decode"] = np.int32(2)
            names.append(d.ref)
        cell = f.create_dataset("allclasses_names", data=np.array([names], dtype=h5py.ref_dtype))  # MATLAB 2 x 1
        cell.attrs["MATLAB_class"] = np.bytes_("cell")
        rows = np.array([[ord(c) for c in "cat"], [ord(c) for c in "dog"]], dtype=np.uint16)  # MATLAB 2 x 3 char
        m = f.create_dataset("char_matrix", data=rows.T)
        m.attrs["MATLAB_class"] = np.bytes_("char")
        m.attrs["MATLAB_int_decode"] = np.int32(2)
        e = f.create_dataset("nothing", data=np.array([0, 0], dtype=np.uint64))
        e.attrs["MATLAB_class"] = np.bytes_("double")
        e.attrs["MATLAB_empty"] = np.uint8(1)
        s = f.create_group("opts")
        s.attrs["MATLAB_class"] = np.bytes_("struct")
        k = s.create_dataset("k", data=np.array([[7.0]]))
        k.attrs["MATLAB_class"] = np.bytes_("double")
    r = read_mat(path)
    np.testing.assert_array_equal(r["features"], np.arange(6, dtype=np.float64).reshape(3, 2).T)
    assert r["allclasses_names"].shape == (2, 1) and cellstr(r["allclasses_names"]) == ["cat", "dog"]
    assert r["char_matrix"] == ["cat", "dog"] and cellstr(r["char_matrix"]) == ["cat", "dog"]
    assert r["nothing"].size == 0
    assert r["opts"] == {"k": np.array([[7.0]])}


def test_v5_reads_scipy_written_file(tmp_path):
    cell = np.empty((2, 1), dtype=object)
    cell[0, 0], cell[1, 0] = "a", "bc"
    sio.savemat(tmp_path / "s.mat", {"x": np.eye(2), "c": cell, "s": {"f": 1.0}})
    r = read_mat(tmp_path / "s.mat")
    np.testing.assert_array_equal(r["x"], np.eye(2))
    assert cellstr(r["c"]) == ["a", "bc"]
    assert r["s"]["f"].item() == 1.0


def test_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "none.mat")):
        read_mat(tmp_path / "none.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 20)
    with pytest.raises(InvalidInputError, match="junk.mat: not a readable MATLAB"):
        read_mat(tmp_path / "junk.mat")
    with pytest.raises(InvalidInputError, match="variable name '1x' is invalid"):
        write_mat(tmp_path / "o.mat", {"1x": np.ones(2)})
    with pytest.raises(InvalidInputError, match="cannot write dtype complex128"):
        write_mat(tmp_path / "o.mat", {"z": np.ones(2, dtype=complex)}, v73=True)
    with pytest.raises(InvalidInputError, match="expected a cell array of strings"):
        cellstr(np.array([[1.0]], dtype=object), "names")
    assert not (tmp_path / "o.mat").exists()
