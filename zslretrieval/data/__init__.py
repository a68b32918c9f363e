"""Datasets by name: the xlsa17 benchmarks, real AwA1 features, generated data, user folders.

    load_dataset("awa1-lampert", root=resolve_data_root(None), seed=0) -> ZslDataset
"""
from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import InvalidInputError
from ..registry import Registry
from .base import SPLITS, ZslDataset, resolve_data_root, semantic_matrix

# Each entry is a loader ``(root: Path, seed: int) -> ZslDataset``.
DATASETS: Registry[Callable[..., ZslDataset]] = Registry("dataset")


def list_datasets() -> list[str]:
    _import_all()
    return DATASETS.names()


def load_dataset(name: str, root: str | os.PathLike | None = None, *, seed: int = 0,
                 images: str | os.PathLike | None = None, backbone: str | None = None,
                 device: str = "auto") -> ZslDataset:
    """Load a registered dataset; ``root`` follows :func:`resolve_data_root`.

    ``images`` (a photo folder) and ``backbone`` reach loaders that can compute features from photos
    (the xlsa17 benchmarks; see ``xlsa17.load_xlsa17``); other datasets ship fixed features, so
    ``images`` is refused for them and ``backbone`` does not apply.
    """
    _import_all()
    loader = DATASETS.get(name)
    if getattr(loader, "photo_features", False):
        return loader(resolve_data_root(root), seed=seed, images=images, backbone=backbone, device=device)
    if images is not None:
        photo = sorted(n for n in DATASETS.names() if getattr(DATASETS.get(n), "photo_features", False))
        raise InvalidInputError(f"--images and --dataset {name} are mutually exclusive: {name} ships its own "
                                f"features; datasets whose features can come from photos: {', '.join(photo)}")
    return loader(resolve_data_root(root), seed=seed)


def _import_all() -> None:
    # Loaders register themselves on import; importing here keeps ``import zslretrieval`` light.
    from . import awa1_lampert, synthetic, xlsa17  # noqa: F401


__all__ = ["DATASETS", "SPLITS", "ZslDataset", "list_datasets", "load_dataset", "resolve_data_root", "semantic_matrix"]
