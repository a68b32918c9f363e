"""Reading a file of precomputed image features (``zslr index --features FILE``), every value checked.

Accepted layouts (features made elsewhere: another machine, another tool, a GPU box):

- ``.npy``: one (N, D) float16/32/64 matrix; the paths come from ``--file-list`` (one per line,
  optional TAB label). Memory-mapped: nothing is read into memory beyond the rows being committed.
- ``.npz``: ``features`` (N, D) float, ``paths`` (N,) strings (else ``--file-list``), optional
  ``labels`` (N,) strings (empty string: no label) and ``backbone`` (a 0-d string).
- ``.parquet`` (optional extra ``zslretrieval[parquet]``: pyarrow): a ``path`` column of strings, a
  ``features`` column of equal-length float lists, an optional ``label`` column, and optionally
  the backbone in the file's key-value metadata under ``backbone``.

Before any array is read, its header is checked (dtype, shape, and that the file holds exactly the
bytes the header promises), so no allocation is sized by a number the file merely claims. Rows
are checked for NaN/inf chunk by chunk. Every refusal is an :class:`InvalidInputError` (exit 2)
naming the value found and what is accepted.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError

SUFFIXES = (".npy", ".npz", ".parquet")
FLOAT_DTYPES = ("float16", "float32", "float64")
MAX_NPZ_BYTES = 4 << 30          # an .npz member is read whole into memory; larger matrices: use .npy
MAX_PATH_CHARS = 4096
MAX_DIM = 1 << 16
CHECK_ROWS = 65536               # rows per NaN/inf check (bounded temporary memory)


@dataclass
class FeaturesFile:
    """What a features file holds: ``features`` (N, D) floating (possibly a read-only memory map),
    ``paths`` N unique strings, ``labels`` N strings or None, ``backbone`` the file's own or None."""

    features: np.ndarray
    paths: list[str]
    labels: list[str | None]
    backbone: str | None
    source: Path


def _accepted() -> str:
    return ("accepted: .npy (N, D) float matrix with --file-list; .npz with 'features' (N, D) float and 'paths' "
            "(N,) strings (or --file-list), optional 'labels', 'backbone'; .parquet with a 'path' string column "
            "and a 'features' column of equal-length float lists, optional 'label'")


def _check_matrix_header(where: str, shape: tuple, dtype: np.dtype, fortran: bool) -> tuple[int, int]:
    if dtype.hasobject or dtype.fields is not None:
        raise InvalidInputError(f"{where}: dtype {dtype} (ragged rows or objects); accepted: a 2-D array of "
                                f"{', '.join(FLOAT_DTYPES)}")
    if dtype.name not in FLOAT_DTYPES:
        raise InvalidInputError(f"{where}: dtype {dtype.name}; accepted: {', '.join(FLOAT_DTYPES)}")
    if len(shape) != 2:
        raise InvalidInputError(f"{where}: shape {shape}; accepted: (N, D), one row of D features per image")
    n, d = int(shape[0]), int(shape[1])
    if n < 1 or not 1 <= d <= MAX_DIM:
        raise InvalidInputError(f"{where}: shape {shape}; accepted: N >= 1 rows of 1 <= D <= {MAX_DIM} features")
    if fortran:
        raise InvalidInputError(f"{where}: Fortran (column-major) order; accepted: C order (np.save of a "
                                "C-contiguous array)")
    return n, d


def _read_header(f) -> tuple[tuple, bool, np.dtype]:
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)
    raise InvalidInputError(f"npy format version {version}; accepted: 1.0, 2.0")


def read_npy(path: Path) -> np.ndarray:
    """The (N, D) matrix of an .npy file, memory-mapped, after checking its header against the file size."""
    try:
        with open(path, "rb") as f:
            shape, fortran, dtype = _read_header(f)
            offset = f.tell()
    except ValueError as e:
        raise InvalidInputError(f"{path}: not an .npy file ({e}); {_accepted()}") from None
    n, d = _check_matrix_header(str(path), shape, dtype, fortran)
    want, have = n * d * dtype.itemsize, os.path.getsize(path) - offset
    if want != have:
        raise InvalidInputError(f"{path}: header says {n} x {d} {dtype.name} ({want:,} bytes) but the file holds "
                                f"{have:,} bytes of data; accepted: a complete np.save file")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _npz_member(z: zipfile.ZipFile, key: str, path: Path) -> tuple[zipfile.ZipInfo, tuple, bool, np.dtype, int]:
    info = z.getinfo(key + ".npy")
    with z.open(info) as f:
        try:
            shape, fortran, dtype = _read_header(f)
        except ValueError as e:
            raise InvalidInputError(f"{path}: member {key!r} is not an array ({e})") from None
        header = f.tell()
    if dtype.hasobject:
        raise InvalidInputError(f"{path}: {key!r} holds Python objects (dtype {dtype}: ragged rows or mixed "
                                f"values); {_accepted()}")
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size != header + want:
        raise InvalidInputError(f"{path}: {key!r} header says shape {shape} {dtype} ({want:,} bytes) but the member "
                                f"holds {info.file_size - header:,}; accepted: a complete np.savez file")
    if want > MAX_NPZ_BYTES:
        raise InvalidInputError(f"{path}: {key!r} is {want:,} bytes; an .npz member is read whole, at most "
                                f"{MAX_NPZ_BYTES:,}: save the matrix as .npy (memory-mapped) with --file-list")
    return info, shape, fortran, dtype, want


def _strings(arr: np.ndarray, where: str, n: int) -> list[str]:
    if arr.dtype.kind not in "US" or arr.ndim != 1:
        raise InvalidInputError(f"{where}: dtype {arr.dtype}, shape {arr.shape}; accepted: ({n},) strings")
    if len(arr) != n:
        raise InvalidInputError(f"{where}: {len(arr)} values for {n} feature rows; accepted: one per row")
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in arr.tolist()]


def read_npz(path: Path) -> tuple[np.ndarray, list[str] | None, list[str] | None, str | None]:
    """(features, paths or None, labels or None, backbone or None) of an .npz file, headers checked first."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise InvalidInputError(f"{path}: not an .npz file ({e}); {_accepted()}") from None
    with z:
        keys = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
        if "features" not in keys:
            raise InvalidInputError(f"{path}: no 'features' array (found: {', '.join(sorted(keys)) or 'none'}); "
                                    f"{_accepted()}")
        _, shape, fortran, dtype, _ = _npz_member(z, "features", path)
        n, _d = _check_matrix_header(f"{path}:features", shape, dtype, fortran)
        for key in ("paths", "labels", "backbone"):
            if key in keys:
                _npz_member(z, key, path)
    with np.load(path, allow_pickle=False) as npz:
        x = npz["features"]
        paths = _strings(npz["paths"], f"{path}:paths", n) if "paths" in keys else None
        labels = _strings(npz["labels"], f"{path}:labels", n) if "labels" in keys else None
        backbone = None
        if "backbone" in keys:
            b = npz["backbone"]
            if b.dtype.kind not in "US" or b.ndim != 0:
                raise InvalidInputError(f"{path}:backbone: dtype {b.dtype}, shape {b.shape}; accepted: one string")
            backbone = str(b[()].decode() if isinstance(b[()], bytes) else b[()])
    return x, paths, labels, backbone


def read_parquet(path: Path) -> tuple[np.ndarray, list[str], list[str] | None, str | None]:
    """(features, paths, labels or None, backbone or None) of a Parquet file; needs pyarrow."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError(f"{path}: reading Parquet needs pyarrow: pip install 'zslretrieval[parquet]' "
                                "(or save the features as .npz / .npy)") from None
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise InvalidInputError(f"{path}: not a Parquet file ({e}); {_accepted()}") from None
    schema = pf.schema_arrow
    names = set(schema.names)
    for col in ("path", "features"):
        if col not in names:
            raise InvalidInputError(f"{path}: no {col!r} column (columns: {', '.join(schema.names)}); {_accepted()}")
    ftype = schema.field("features").type
    if not (pa.types.is_list(ftype) or pa.types.is_large_list(ftype) or pa.types.is_fixed_size_list(ftype)) \
            or not pa.types.is_floating(ftype.value_type):
        raise InvalidInputError(f"{path}: column 'features' is {ftype}; accepted: a list of float16/32/64 per row")
    if not pa.types.is_string(schema.field("path").type) and not pa.types.is_large_string(schema.field("path").type):
        raise InvalidInputError(f"{path}: column 'path' is {schema.field('path').type}; accepted: strings")
    cols = ["path", "features"] + (["label"] if "label" in names else [])
    blocks, paths, labels, d, row0 = [], [], [] if "label" in names else None, None, 0
    for batch in pf.iter_batches(batch_size=CHECK_ROWS, columns=cols):   # memory follows the data actually read
        feats = batch.column("features")
        lengths = feats.value_lengths().to_numpy(zero_copy_only=False) if hasattr(feats, "value_lengths") else \
            np.full(len(feats), ftype.list_size)
        if feats.null_count:
            i = row0 + int(np.flatnonzero(feats.is_null().to_numpy(zero_copy_only=False))[0])
            raise InvalidInputError(f"{path}: row {i} has no features (null); accepted: one list per row")
        d = int(lengths[0]) if d is None else d
        bad = np.flatnonzero(lengths != d)
        if len(bad):
            raise InvalidInputError(f"{path}: ragged features: row {row0 + int(bad[0])} has {int(lengths[bad[0]])} "
                                    f"values, row 0 has {d}; accepted: the same D per row")
        if not 1 <= d <= MAX_DIM:
            raise InvalidInputError(f"{path}: rows of {d} features; accepted: 1 <= D <= {MAX_DIM}")
        blocks.append(feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d))
        pcol = batch.column("path")
        if pcol.null_count:
            raise InvalidInputError(f"{path}: a null path near row {row0}; accepted: one path per row")
        paths += pcol.to_pylist()
        if labels is not None:
            labels += batch.column("label").to_pylist()
        row0 += len(batch)
    if not blocks:
        raise InvalidInputError(f"{path}: no rows; accepted: at least one row")
    meta = schema.metadata or {}
    backbone = meta.get(b"backbone", b"").decode("utf-8", "replace") or None
    return np.concatenate(blocks), paths, labels, backbone


def read_file_list(path: Path, n: int) -> tuple[list[str], list[str | None]]:
    """Paths (and optional TAB labels) of ``--file-list``, one per line; exactly ``n`` lines expected."""
    if not Path(path).is_file():
        raise DataNotFoundError(f"--file-list {path}: no such file")
    size = os.path.getsize(path)
    if size > n * (MAX_PATH_CHARS + 256) + 1024:   # before reading: longer than n lines of the longest path
        raise InvalidInputError(f"--file-list {path} is {size:,} bytes, too long for {n} paths of at most "
                                f"{MAX_PATH_CHARS} characters")
    paths, labels = [], []
    with open(path, encoding="utf-8", errors="strict") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            p, _, label = line.partition("\t")
            paths.append(p)
            labels.append(label or None)
    if len(paths) != n:
        raise InvalidInputError(f"--file-list {path} names {len(paths)} paths for {n} feature rows; accepted: one "
                                "path per row, in row order")
    return paths, labels


def check_rows(x: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite values, naming the first bad row; chunked, so memory stays bounded."""
    for start in range(0, len(x), CHECK_ROWS):
        block = np.asarray(x[start:start + CHECK_ROWS])
        ok = np.isfinite(block).all(axis=1)
        if not ok.all():
            i = start + int(np.flatnonzero(~ok)[0])
            raise InvalidInputError(f"{where}: row {i} holds NaN or infinite values; accepted: finite numbers")
        if block.dtype == np.float64 and np.abs(block).max(initial=0) > np.finfo(np.float32).max:
            raise InvalidInputError(f"{where}: values beyond float32 range near row {start}; accepted: finite float32")


def read_features_file(path: str | os.PathLike, file_list: str | os.PathLike | None = None) -> FeaturesFile:
    """Read and check ``path`` (see the module docstring); ``file_list`` gives the paths (and labels) instead."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"--features {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InvalidInputError(f"--features {path}: suffix {path.suffix or '(none)'!r}; {_accepted()}")
    labels: list[str | None] | None = None
    backbone = None
    if suffix == ".npy":
        x, paths = read_npy(path), None
    elif suffix == ".npz":
        x, paths, labels, backbone = read_npz(path)
    else:
        x, paths, labels, backbone = read_parquet(path)
    if file_list is not None:
        if paths is not None:
            raise InvalidInputError(f"{path} holds its own paths; give --file-list only with a file that has none")
        paths, list_labels = read_file_list(Path(file_list), len(x))
        labels = labels or list_labels
    if paths is None:
        raise InvalidInputError(f"{path}: no paths for its {len(x)} rows: give --file-list (one path per row) or "
                                f"store them in the file; {_accepted()}")
    if len(paths) != len(x):
        raise InvalidInputError(f"{path}: {len(x)} feature rows but {len(paths)} paths; accepted: one path per row")
    for i, p in enumerate(paths):
        if not p or len(p) > MAX_PATH_CHARS or "\0" in p:
            raise InvalidInputError(f"{path}: path of row {i} ({p[:60]!r}) is empty, longer than {MAX_PATH_CHARS} "
                                    "characters or holds a NUL")
    labels = [lab or None for lab in labels] if labels is not None else [None] * len(paths)
    check_rows(x, str(path))
    return FeaturesFile(x, paths, labels, backbone, path)
