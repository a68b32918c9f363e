"""Ingestion use cases: images or precomputed features into an index folder.

    images.py    index_images(IndexConfig) -- zslr index DIR... / --file-list F (an executor encodes)
    features.py  index_features(name, features, paths, labels) -- benchmark galleries;
                 index_features_file(FeaturesIndexConfig) -- zslr index --features FILE (features_file.py reads it)
    dataset.py   index_dataset(DatasetIndexConfig) -- zslr index --dataset D --split S
    session.py   the writer every use case opens (the general model handed in, storage errors)

They sit above ``index`` (the writer they drive), ``distributed`` (executors), ``data`` (datasets)
and ``text`` (the general model whose terms a raw-feature index stores). Submodules import lazily
so that importing the package loads neither torch nor FAISS.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS = {
    "index_images": "images", "IndexConfig": "images", "IndexReport": "images",
    "index_features": "features", "index_features_file": "features", "FeaturesIndexConfig": "features",
    "FeaturesIndexReport": "features",
    "index_dataset": "dataset", "DatasetIndexConfig": "dataset", "DATASET_SPLITS": "dataset",
    "dataset_rows": "dataset",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
