"""Ingestion of a benchmark's features: ``zslr index --dataset D --split S`` (no images).

Catalog paths are ``<dataset>/<split>/<row>`` and labels the class names; the rows go in through
:func:`~zslretrieval.ingest.features.index_features`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..index.autotune import auto_options
from ..index.reader import OpenIndex
from .features import index_features


@dataclass
class DatasetIndexConfig:
    """Options of ``zslr index --dataset D``."""

    dataset: str
    split: str = "test"
    name: str | None = None              # default: "<dataset>-<split>"
    root: Path | None = None
    db: str | None = None
    data_root: Path | None = None
    model: Path | None = None
    index_type: str = "Flat"             # FAISS factory string or "auto"
    search_params: str | None = None
    max_memory: str | int | None = None  # index_type "auto" budgets, as in IndexConfig
    max_query_ms: float | None = None
    recall_target: float | None = None
    seed: int = 0


DATASET_SPLITS = ("test", "test_unseen", "test_seen", "trainval", "all")


def dataset_rows(ds, split: str) -> np.ndarray:
    """Row indices of a benchmark split; "test" = test_seen + test_unseen (the GZSL gallery)."""
    if split == "all":
        return np.arange(len(ds.features))
    if split == "test":
        return np.sort(np.concatenate([ds.split_indices("test_seen"), ds.split_indices("test_unseen")]))
    if split not in DATASET_SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; valid: {', '.join(DATASET_SPLITS)}")
    return np.sort(np.asarray(ds.split_indices(split)))


def index_dataset(cfg: DatasetIndexConfig) -> OpenIndex:
    """Index a benchmark's features (no images): catalog paths ``<dataset>/<split>/<row>``, label = class."""
    from ..data import load_dataset

    if cfg.split not in DATASET_SPLITS:
        raise InvalidInputError(f"unknown split {cfg.split!r}; valid: {', '.join(DATASET_SPLITS)}")
    auto = auto_options(cfg.index_type, cfg.search_params, cfg.max_memory, cfg.max_query_ms, cfg.recall_target)
    ds = load_dataset(cfg.dataset, cfg.data_root, seed=cfg.seed)
    rows = dataset_rows(ds, cfg.split)
    paths = [f"{ds.name}/{cfg.split}/{int(r)}" for r in rows]
    labels = [ds.class_names[int(ds.labels[r])] for r in rows]
    return index_features(cfg.name or f"{ds.name}-{cfg.split}", ds.features[rows], paths, labels,
                          model_checkpoint=cfg.model, root=cfg.root, index_type=cfg.index_type, db=cfg.db,
                          search_params=cfg.search_params, backbone=f"dataset:{ds.name}",
                          source=f"dataset:{ds.name}/{cfg.split}", auto=auto)
