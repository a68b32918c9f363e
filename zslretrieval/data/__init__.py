"""Datasets by name: the xlsa17 benchmarks, real AwA1 features, generated data, user folders.

    load_dataset("awa1-lampert", root=resolve_data_root(None), seed=0) -> ZslDataset
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..registry import Registry
from .base import SPLITS, ZslDataset, resolve_data_root, semantic_matrix

# Each entry is a loader ``(root: Path, seed: int) -> ZslDataset``.
DATASETS: Registry[Callable[..., ZslDataset]] = Registry("dataset")


def list_datasets() -> list[str]:
    _import_all()
    return DATASETS.names()


def load_dataset(name: str, root: str | os.PathLike | None = None, *, seed: int = 0) -> ZslDataset:
    """Load a registered dataset; ``root`` follows :func:`resolve_data_root`."""
    _import_all()
    return DATASETS.get(name)(resolve_data_root(root), seed=seed)


def _import_all() -> None:
    # Loaders register themselves on import; importing here keeps ``import zslretrieval`` light.
    from . import awa1_lampert, synthetic, xlsa17  # noqa: F401


__all__ = ["DATASETS", "SPLITS", "ZslDataset", "list_datasets", "load_dataset", "resolve_data_root", "semantic_matrix"]
