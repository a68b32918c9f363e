"""Ingestion of precomputed features (benchmark galleries): rows of a matrix -> an index folder.

    index_features(name, features, paths, labels, model_checkpoint=...)

The index then holds exactly those rows: rows already indexed with identical features are kept,
others added or replaced, catalog rows not given are marked removed. Crash safety is the
writer's, as for images (``ingest/images.py``).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..features.pipeline import FileMeta
from ..index.autotune import AutoIndexOptions, auto_options, is_auto
from ..index.layout import index_folder
from ..index.reader import OpenIndex, open_index
from ..index.searchers.faiss_files import check_trainable, normalize_index_type
from ..index.writer import ChunkItem
from .session import choose_index_type, open_writer


def index_features(name: str, features: np.ndarray, paths: Sequence[str], labels: Sequence[str | None], *,
                   model_checkpoint: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                   index_type: str = "Flat", backbone: str | None = None, db: str | None = None,
                   search_params: str | None = None, source: str = "features", chunk_size: int = 65536,
                   auto: AutoIndexOptions | None = None) -> OpenIndex:
    """Make index ``name`` hold exactly these precomputed features (benchmark galleries).

    features (N, D) float32; ``paths`` N unique catalog paths (e.g. ``awa1-lampert/test/17``);
    ``labels`` N known class names or None. Rows already indexed with identical features are
    kept, others added or replaced; catalog rows not in ``paths`` are marked removed. With
    ``model_checkpoint`` the index holds ``model.embed_images(features)`` in the model's metric.
    ``index_type="auto"`` chooses the type once the rows are in, under the budgets of ``auto``
    (``autotune.AutoIndexOptions``; None: no budget). Returns the :class:`OpenIndex`.
    """
    if is_auto(index_type):
        auto = auto or auto_options(index_type, search_params)
        index_type = "Flat"
    elif auto is not None:
        raise InvalidInputError(f"auto-index budgets given with index_type {index_type!r}; use index_type='auto'")
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidInputError(f"features shape {x.shape}; expected (N, D)")
    paths, labels = [str(p) for p in paths], list(labels)
    if len(paths) != len(x) or len(labels) != len(x):
        raise InvalidInputError(f"{len(x)} feature rows but {len(paths)} paths and {len(labels)} labels")
    if len(set(paths)) != len(paths):
        dup = next(p for p in paths if paths.count(p) > 1)
        raise InvalidInputError(f"duplicate catalog path {dup!r}; paths must be unique")
    if chunk_size < 1:
        raise InvalidInputError(f"chunk_size {chunk_size}; expected >= 1")
    check_trainable(normalize_index_type(index_type), x.shape[1], "ip", len(x))  # before anything is written
    folder = index_folder(name, root)
    with open_writer(folder, name, db, create=True, resume=f"zslr index --dataset ... --name {name}") as w:
        w.init_manifest(source=source, backbone=backbone or source, backbone_weights=None, feature_dim=x.shape[1],
                        index_type=index_type, search_params=search_params, replace_derived=True, expected_n=len(x))
        if model_checkpoint is not None:
            w.set_model(model_checkpoint)
        else:
            w.clear_model()
        existing = w.existing()
        hashes = [hashlib.sha256(row.tobytes()).hexdigest() for row in x]
        todo = [i for i, (p, h) in enumerate(zip(paths, hashes)) if existing.get(p, ("", None, None, None))[0] != "ok"
                or existing[p][3] != h]
        for part in range(0, len(todo), chunk_size):
            sel = todo[part:part + chunk_size]
            items = [ChunkItem(paths[i], labels[i], FileMeta(hashes[i], int(x[i].nbytes), 0)) for i in sel]
            w.commit_chunk(items, x[sel], [])
        w.set_labels(paths, labels)  # labels may change without the features changing
        keep = set(paths)
        w.mark_removed([p for p, row in existing.items() if row[0] != "removed" and p not in keep])
        if auto is not None:
            choose_index_type(w, auto, name)
        w.sync_index()
    return open_index(folder)
