"""The index: FAISS vectors + feature store + SQL catalog, and the searcher backends.

    report = index_images(IndexConfig(inputs=[Path("photos")], name="pets"))   # zslr index photos --name pets
    ix = open_index("pets")
    D, I = ix.search(xq, k=10)          # I: catalog image ids; k=None: exact full ranking
    ix.records(I[0])                    # [ImageRecord(id, path, label, status), ...]
    check_index("pets").ok              # zslr check --name pets

Submodules import lazily so ``from zslretrieval.index.searchers import ...`` stays light.
"""
from __future__ import annotations

_EXPORTS = {
    "open_index": "reader", "OpenIndex": "reader", "ImageRecord": "reader", "IndexManifest": "reader",
    "index_images": "writer", "index_features": "writer", "index_dataset": "writer", "IndexConfig": "writer",
    "IndexReport": "writer", "DatasetIndexConfig": "writer", "IndexWriter": "writer", "DATASET_SPLITS": "writer",
    "check_index": "check", "CheckReport": "check",
    "resolve_index_root": "layout", "index_folder": "layout",
    "SCHEMA_VERSION": "catalog",
}


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


__all__ = sorted(_EXPORTS)
