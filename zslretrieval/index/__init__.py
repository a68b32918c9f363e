"""The index: FAISS vectors + feature store + SQL catalog, and the searcher backends.

    layout.py   folder layout: every file name, the write lock, loading the folder's model copy
    catalog.py  SQL tables (images, entries, shards, manifest);  store.py  feature shards
    writer.py   IndexWriter: catalog + store transactions of one folder
    sync.py     the FAISS file brought in line with the catalog (writer) / checked (reader)
    terms_file.py  per-image correction terms beside the FAISS file (the terms: ``correction``)
    reader.py   open_index -> OpenIndex (search through searchers.FaissSearcher, records, model)
    check.py    zslr check;  space.py  raw features -> index space;  searchers/  search backends
    storage_errors.py  disk full / unwritable -> StorageError;  remove.py  remove_index

The use cases that fill an index (``index_images``, ``index_features``, ``index_dataset``) are the
``zslretrieval.ingest`` package, one layer up (DESIGN.md "Layers").

    ix = open_index("pets")
    D, I = ix.search(xq, k=10)          # I: catalog image ids; k=None: exact full ranking
    ix.records(I[0])                    # [ImageRecord(id, path, label, status), ...]
    check_index("pets").ok              # zslr check --name pets

Submodules import lazily so ``from zslretrieval.index.searchers import ...`` stays light.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

_EXPORTS = {
    "open_index": "reader", "OpenIndex": "reader", "ImageRecord": "reader", "IndexManifest": "reader",
    "remove_index": "remove",
    "IndexWriter": "writer",
    "check_index": "check", "CheckReport": "check",
    "resolve_index_root": "layout", "index_folder": "layout", "load_index_model": "layout",
    "SCHEMA_VERSION": "catalog",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = sorted(_EXPORTS)
