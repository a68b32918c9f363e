"""The executor contract: paths -> encoded partitions, in input order, for the writer to commit.

An executor only decodes and encodes. The index writer (the driver) stays the single commit
point: it commits partition after partition in input order, each in one catalog transaction,
so whatever runs the encoding (this process, or Ray actors on other machines) a crash loses at
most the partitions not yet committed, and the next run redoes only those.

Two ways a partition's features reach the commit:
* in memory (``features``): the local executor, whose batches never leave this process;
* as a *staged* file (``staged``): a worker wrote them beside the feature store
  (``FeatureStore.stage_path``), so the driver never receives the vectors over the network;
  the commit renames the file into a shard. An uncommitted staged file is crash debris, deleted
  by the next writer like any unlisted shard.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ZslrError
from ..features.pipeline import FileMeta


class WorkerLostError(ZslrError):
    """A remote worker died (and was not restarted) before its partition was committed."""

    exit_code = 1


@dataclass
class EncodeOptions:
    """How to encode: the backbone's weights and device, batch sizes, and partitioning."""

    weights: str | None = None           # backbone weight file (None: the backbone's offline default)
    device: str = "auto"
    batch_size: int = 32
    workers: int | None = None           # decoder processes per encoder (None: pipeline default)
    chunk_size: int = 256                # paths per partition = per catalog commit
    stage_dir: Path | None = None        # where workers stage feature files (the index's feature store)
    progress: bool = False
    desc: str = "encoding"


@dataclass
class EncodedPartition:
    """One encoded partition of the input list. Positions index the full ``paths`` given to ``run``.

    ``positions`` (n_ok,) int64 ascending; features row i <-> positions[i], held either in
    ``features`` (n_ok, dim) float32 or in the ``staged`` file (None when n_ok == 0).
    """

    start: int                                   # first position covered
    stop: int                                    # one past the last position covered
    positions: np.ndarray
    features: np.ndarray | None = None
    staged: Path | None = None
    failures: list[tuple[int, str]] = field(default_factory=list)
    meta: dict[int, FileMeta] = field(default_factory=dict)
    seconds: float = 0.0                         # encoder time spent on it (worker clock)
    worker: str = "local"

    def load_features(self, dim: int) -> np.ndarray:
        """(n_ok, dim) float32: the in-memory rows or the staged file's."""
        if self.features is not None:
            return self.features
        if self.staged is None:
            return np.zeros((0, dim), np.float32)
        return np.load(self.staged, mmap_mode="r", allow_pickle=False)  # the commit renames it; only a subset is read


class Executor(ABC):
    """Runs the decode + encode of a path list, partition by partition."""

    name: str = "?"

    @abstractmethod
    def run(self, paths: Sequence[str], backbone, opts: EncodeOptions) -> Iterator[EncodedPartition]:
        """Yield :class:`EncodedPartition` s covering ``paths`` contiguously, in input order.

        ``backbone``: the driver's loaded ``features.backbones.Backbone`` (workers elsewhere
        rebuild the same one by name and weights and must report the same ``weights_id``).
        Closing the iterator early stops the workers; staged files of partitions not yet
        yielded are removed.
        """

    def describe(self) -> str:
        return self.name
