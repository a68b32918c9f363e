"""Append-only feature store: raw backbone features in immutable shard files.

Each committed chunk of images writes one ``features/shard-<id>.npy`` holding a float32 matrix
(rows, feature_dim), written to a temp file, fsynced and ``os.replace``d into place *before*
the catalog transaction that lists it commits. So after a crash a shard is either listed in the
catalog (and complete) or debris that :meth:`FeatureStore.remove_unlisted` deletes. The catalog's
``index_entries`` say which (shard, row) holds each faiss id's vector; rows of replaced or
removed images simply stop being referenced.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConsistencyError
from ..fileio import atomic_write, file_digest, fsync_dir  # noqa: F401  (re-exported for index/*)


class FeatureStore:
    """Shard files under ``folder``; shard ids are allocated by the catalog's manifest."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def file_name(shard_id: int) -> str:
        return f"shard-{shard_id:08d}.npy"

    def path(self, shard_id: int) -> Path:
        return self.folder / self.file_name(shard_id)

    @staticmethod
    def stage_prefix(token: str) -> str:
        # starts with "shard-" so that an uncommitted staged file is debris for remove_unlisted
        return f"shard-stage-{token}-"

    def stage_path(self, token: str, part: int) -> Path:
        """Where a worker writes partition ``part`` of run ``token`` before the commit adopts it."""
        return self.folder / f"{self.stage_prefix(token)}{part:08d}.npy"

    def adopt(self, staged: Path, shard_id: int) -> tuple[str, str]:
        """Rename a complete staged file into shard ``shard_id`` (same folder: atomic); returns its name and sha256."""
        digest = file_digest(staged)
        os.replace(staged, self.path(shard_id))
        fsync_dir(self.folder)
        return self.file_name(shard_id), digest

    def write(self, shard_id: int, x: np.ndarray) -> tuple[str, str]:
        """Write (rows, dim) float32 as a new shard; returns its file name and the sha256 of its bytes."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        data = buf.getbuffer()
        atomic_write(self.path(shard_id), lambda f: f.write(data))
        return self.file_name(shard_id), hashlib.sha256(data).hexdigest()

    def read(self, shard_id: int, mmap: bool = True) -> np.ndarray:
        p = self.path(shard_id)
        try:
            return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
        except FileNotFoundError:
            raise ConsistencyError(f"feature shard missing: {p} (listed in the catalog)") from None
        except ValueError as e:
            raise ConsistencyError(f"feature shard unreadable: {p} ({e})") from e

    def gather(self, shard_ids: Sequence[int], rows: Sequence[int], dim: int) -> np.ndarray:
        """Vectors at (shard_ids[i], rows[i]) -> (n, dim) float32, in the given order."""
        shard_ids, rows = np.asarray(shard_ids, np.int64), np.asarray(rows, np.int64)
        out = np.empty((len(rows), dim), np.float32)
        # grouped by one sort, not one scan of shard_ids per shard: a million rows over thousands of
        # 256-row shards would otherwise cost shards x rows comparisons
        order = np.argsort(shard_ids, kind="stable")
        sids, starts = np.unique(shard_ids[order], return_index=True)
        for sid, sel in zip(sids, np.split(order, starts[1:])):
            data = self.read(int(sid))
            if data.ndim != 2 or data.shape[1] != dim:
                raise ConsistencyError(f"feature shard {self.path(int(sid))} has shape {data.shape}; expected (rows, {dim})")
            if rows[sel].max(initial=-1) >= len(data):
                raise ConsistencyError(f"feature shard {self.path(int(sid))} has {len(data)} rows; catalog points at row {rows[sel].max()}")
            out[sel] = data[rows[sel]]
        return out

    def files(self) -> set[str]:
        """Every shard or temp file present in the folder."""
        if not self.folder.is_dir():
            return set()
        return {p.name for p in self.folder.iterdir() if p.name.startswith(("shard-", ".shard-"))}

    def remove_unlisted(self, listed: set[str]) -> list[str]:
        """Delete shard files the catalog does not list (uncommitted chunks, temp files)."""
        gone = sorted(self.files() - set(listed))
        for name in gone:
            (self.folder / name).unlink(missing_ok=True)
        return gone
