"""MATLAB ``.mat`` I/O for the benchmark files: v5 through :mod:`scipy.io`, v7.3 through :mod:`h5py`.

Both readers return the same Python form, so loaders never care which version a user has:

* numeric / logical arrays (logical as uint8): ``np.ndarray`` in MATLAB's shape (at least 2-D, e.g. ``att`` is (A, C),
  ``trainval_loc`` is (n, 1)); v7.3 files store the transpose (HDF5 is row-major), which is undone here;
* char arrays: ``str`` (a multi-row char matrix becomes ``list[str]``, one per row);
* cell arrays: ``np.ndarray`` of dtype object in MATLAB's shape, elements converted recursively;
  :func:`cellstr` flattens a cell of strings in MATLAB (column-major) order;
* scalar structs: ``dict`` of fields.

The writer produces files MATLAB itself would read: v5 via ``scipy.io.savemat``; v7.3 as HDF5 with a
512-byte MATLAB userblock header, transposed datasets, ``MATLAB_class`` attributes, chars as UTF-16
code units (``MATLAB_int_decode=2``) and cells as object references into ``#refs#``.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io as sio

from ..errors import DataNotFoundError, InvalidInputError

# MATLAB class name <-> numpy dtype for the numeric classes MATLAB can store in HDF5.
_MATLAB_CLASSES: dict[str, np.dtype] = {
    "double": np.dtype("float64"), "single": np.dtype("float32"),
    "int8": np.dtype("int8"), "uint8": np.dtype("uint8"), "int16": np.dtype("int16"),
    "uint16": np.dtype("uint16"), "int32": np.dtype("int32"), "uint32": np.dtype("uint32"),
    "int64": np.dtype("int64"), "uint64": np.dtype("uint64"), "logical": np.dtype("uint8"),
}
_DTYPE_TO_CLASS = {v: k for k, v in _MATLAB_CLASSES.items() if k != "logical"}
_VALID_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


def is_v73(path: str | os.PathLike) -> bool:
    """True when ``path`` is a MATLAB v7.3 (HDF5) file rather than a v5 one."""
    return bool(h5py.is_hdf5(os.fspath(path)))


def read_mat(path: str | os.PathLike, variable_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Read the variables of a v5 or v7.3 ``.mat`` file (all, or only ``variable_names``).

    Requested names that the file lacks are simply absent from the result, so callers can report
    every missing variable at once.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"MATLAB file not found: {path}")
    names = None if variable_names is None else list(variable_names)
    try:
        if is_v73(path):
            return _read_v73(path, names)
        raw = sio.loadmat(os.fspath(path), variable_names=names, squeeze_me=False,
                          chars_as_strings=True, struct_as_record=True)
    except (InvalidInputError, DataNotFoundError):
        raise
    except Exception as e:  # scipy/h5py raise ValueError, TypeError, OSError... on damaged files
        raise InvalidInputError(
            f"{path}: not a readable MATLAB v5 or v7.3 file ({type(e).__name__}: {e})") from e
    return {k: _from_scipy(v) for k, v in raw.items() if not k.startswith("__")}


def cellstr(value: Any, what: str = "cell array") -> list[str]:
    """Strings of a cell array (or char matrix) in MATLAB's column-major order."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    if isinstance(value, np.ndarray) and value.dtype == object:
        out = []
        for item in value.ravel(order="F"):
            if isinstance(item, list) and len(item) == 1:
                item = item[0]
            if not isinstance(item, str):
                raise InvalidInputError(f"{what}: expected a cell array of strings, found an element {item!r}")
            out.append(item)
        return out
    raise InvalidInputError(f"{what}: expected a cell array of strings, got {type(value).__name__}")


def write_mat(path: str | os.PathLike, variables: Mapping[str, Any], *, v73: bool = False) -> Path:
    """Atomically write ``variables`` as a MATLAB v5 (default) or v7.3 file; returns the path.

    Values: numeric/bool ``np.ndarray`` (1-D arrays become (n, 1) columns, as MATLAB loaders expect),
    ``str`` (char row), ``list``/``tuple`` of ``str`` (an (n, 1) cell), or an object ``np.ndarray``
    (a cell of that shape whose elements follow the same rules).
    """
    path = Path(path)
    for name in variables:
        if not _VALID_NAME.match(name):
            raise InvalidInputError(f"MATLAB variable name {name!r} is invalid; use a letter then letters/digits/_")
    prepared = {k: _to_matlab(v, k) for k, v in variables.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if v73:
            _write_v73(Path(tmp), prepared)
        else:
            with open(tmp, "wb") as f:
                sio.savemat(f, {k: _to_scipy(v) for k, v in prepared.items()}, format="5",
                            oned_as="column", do_compression=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------------------
# v5 (scipy) conversion


def _from_scipy(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if not isinstance(v, np.ndarray):
        return v
    if v.dtype.kind == "U":
        # chars_as_strings gives a 1-D array of row strings; '' arrives as shape (0,)
        rows = [str(s) for s in v.ravel()]
        if len(rows) == 0:
            return ""
        return rows[0] if len(rows) == 1 else rows
    if v.dtype == object:
        out = np.empty(v.shape, dtype=object)
        for idx in np.ndindex(v.shape):
            out[idx] = _from_scipy(v[idx])
        return out
    if v.dtype.names:  # struct array: only scalar structs become dicts
        if v.size == 1:
            return {name: _from_scipy(v[name].ravel()[0]) for name in v.dtype.names}
        return v
    return v


def _to_matlab(v: Any, what: str) -> Any:
    """Validate and normalise a value to be written: str, numeric ndarray (>= 2-D) or object ndarray."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)):
        cell = np.empty((len(v), 1), dtype=object)
        for i, item in enumerate(v):
            cell[i, 0] = _to_matlab(item, f"{what}[{i}]")
        return cell
    if isinstance(v, np.ndarray) and v.dtype == object:
        cell = np.empty(v.shape if v.ndim >= 2 else (v.size, 1), dtype=object)
        for idx, item in zip(np.ndindex(cell.shape), v.reshape(cell.shape).flat):
            cell[idx] = _to_matlab(item, f"{what}{list(idx)}")
        return cell
    arr = np.asarray(v)
    if arr.dtype != bool and arr.dtype not in _DTYPE_TO_CLASS:
        raise InvalidInputError(
            f"{what}: cannot write dtype {arr.dtype} to a .mat file; accepted: bool, "
            f"{', '.join(sorted(str(d) for d in _DTYPE_TO_CLASS))}, str, list of str")
    if arr.ndim == 0:
        arr = arr.reshape(1, 1)
    elif arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    return arr


def _to_scipy(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.dtype == object:
        out = np.empty(v.shape, dtype=object)
        for idx in np.ndindex(v.shape):
            out[idx] = _to_scipy(v[idx])
        return out
    return v


# ---------------------------------------------------------------------------------------------------------
# v7.3 (HDF5)


def _attr_str(obj: h5py.HLObject, key: str) -> str | None:
    val = obj.attrs.get(key)
    if val is None:
        return None
    return val.decode() if isinstance(val, bytes) else str(val)


def _read_v73(path: Path, names: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        keys = [k for k in f.keys() if not k.startswith("#")]
        for k in keys:
            if names is None or k in names:
                out[k] = _read_h5_node(f, f[k], f"{path}:{k}")
    return out


def _read_h5_node(f: h5py.File, node: h5py.HLObject, what: str) -> Any:
    cls = _attr_str(node, "MATLAB_class")
    if isinstance(node, h5py.Group):
        if node.attrs.get("MATLAB_sparse") is not None:
            raise InvalidInputError(f"{what}: sparse MATLAB matrices are not supported; save it with full()")
        if cls not in (None, "struct"):
            raise InvalidInputError(f"{what}: MATLAB class {cls!r} (a group) is not supported; accepted: struct")
        return {k: _read_h5_node(f, node[k], f"{what}.{k}") for k in node.keys()}
    if cls == "char" and node.dtype == np.uint16:
        # fast path for the common case (cells of thousands of file names): no further attribute reads
        codes = np.asarray(node[()], dtype=np.uint16).T  # (rows, cols) in MATLAB
        rows = [codes[r].tobytes().decode("utf-16-le") for r in range(codes.shape[0])]
        return rows[0] if len(rows) == 1 else rows
    if node.attrs.get("MATLAB_empty", 0):
        # Empty values store their MATLAB dims as the data
        dims = tuple(int(d) for d in np.asarray(node[()]).ravel())
        if cls == "char":
            return ""
        if cls == "cell":
            return np.empty(dims, dtype=object)
        return np.zeros(dims, dtype=_MATLAB_CLASSES.get(cls or "double", np.dtype("float64")))
    data = node[()]
    if cls == "cell" or node.dtype == h5py.ref_dtype:
        data = np.asarray(data).T  # MATLAB shape
        cell = np.empty(data.shape, dtype=object)
        for idx in np.ndindex(data.shape):
            cell[idx] = _read_h5_node(f, f[data[idx]], f"{what}{{{', '.join(str(i + 1) for i in idx)}}}")
        return cell
    if cls == "char":
        raise InvalidInputError(f"{what}: char data of type {node.dtype}; MATLAB stores chars as uint16")
    arr = np.asarray(data)
    if cls is not None and cls not in _MATLAB_CLASSES:
        raise InvalidInputError(
            f"{what}: MATLAB class {cls!r} is not supported; "
            f"accepted: {', '.join(sorted(_MATLAB_CLASSES))}, char, cell, struct")
    if arr.dtype.kind == "V" or arr.dtype.names:
        raise InvalidInputError(f"{what}: complex or compound MATLAB data is not supported")
    if arr.ndim < 2:
        arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(1, 1)
    # logical stays uint8, as scipy returns it for v5 files, so both versions read identically
    return arr.T


def _userblock() -> bytes:
    # The same 128-byte header MATLAB writes, marking the HDF5 file as a v7.3 MAT-file.
    stamp = _dt.datetime.now().strftime("%a %b %d %H:%M:%S %Y")
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {stamp} HDF5 schema 1.00 .".encode()
    header = text.ljust(116, b" ") + b"\x00" * 8 + struct.pack("<H", 0x0200) + b"IM"
    return header.ljust(512, b"\x00")


def _set_class(ds: h5py.HLObject, cls: str) -> None:
    ds.attrs.create("MATLAB_class", np.bytes_(cls))


class _V73Writer:
    def __init__(self, f: h5py.File):
        self.f = f
        self.n_refs = 0
        self.refs: h5py.Group | None = None

    def _ref_group(self) -> h5py.Group:
        if self.refs is None:
            self.refs = self.f.create_group("#refs#")
            # MATLAB's canonical empty placeholder lives at #refs#/a
            a = self.refs.create_dataset("a", data=np.array([0, 0], dtype=np.uint64))
            _set_class(a, "canonical empty")
            a.attrs.create("MATLAB_empty", np.uint8(1))
        return self.refs

    def write(self, parent: h5py.Group, name: str, v: Any) -> h5py.Dataset:
        if isinstance(v, str):
            if v == "":
                ds = parent.create_dataset(name, data=np.array([1, 0], dtype=np.uint64))
                ds.attrs.create("MATLAB_empty", np.uint8(1))
            else:
                codes = np.frombuffer(v.encode("utf-16-le"), dtype=np.uint16).reshape(-1, 1)  # MATLAB 1 x n
                ds = parent.create_dataset(name, data=codes)
            _set_class(ds, "char")
            ds.attrs.create("MATLAB_int_decode", np.int32(2))
            return ds
        if v.dtype == object:
            refs = np.empty(v.shape[::-1], dtype=h5py.ref_dtype)
            group = self._ref_group()
            for idx in np.ndindex(v.shape):
                self.n_refs += 1
                child = self.write(group, f"r{self.n_refs}", v[idx])
                refs[idx[::-1]] = child.ref
            ds = parent.create_dataset(name, data=refs, dtype=h5py.ref_dtype)
            _set_class(ds, "cell")
            return ds
        if v.size == 0:
            ds = parent.create_dataset(name, data=np.array(v.shape, dtype=np.uint64))
            ds.attrs.create("MATLAB_empty", np.uint8(1))
            _set_class(ds, "logical" if v.dtype == bool else _DTYPE_TO_CLASS[v.dtype])
            return ds
        if v.dtype == bool:
            ds = parent.create_dataset(name, data=np.ascontiguousarray(v.T).astype(np.uint8))
            _set_class(ds, "logical")
            return ds
        ds = parent.create_dataset(name, data=np.ascontiguousarray(v.T))
        _set_class(ds, _DTYPE_TO_CLASS[v.dtype])
        return ds


def _write_v73(tmp: Path, prepared: Mapping[str, Any]) -> None:
    with h5py.File(tmp, "w", userblock_size=512, libver="earliest") as f:
        w = _V73Writer(f)
        for name, v in prepared.items():
            w.write(f, name, v)
    with open(tmp, "r+b") as fh:
        fh.write(_userblock())
