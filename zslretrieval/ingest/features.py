"""Ingestion of precomputed features: rows of a matrix -> an index folder.

    index_features(name, features, paths, labels, model_checkpoint=...)      # benchmark galleries
    index_features_file(FeaturesIndexConfig(features="feats.npz", name=...))  # zslr index --features FILE

A benchmark gallery makes the index hold exactly its rows: rows already indexed with identical
features are kept, others added or replaced, catalog rows not given are marked removed. A features
file (made elsewhere: another machine, tool or GPU box; ``features_file.py`` reads and checks it)
adds or replaces its rows and keeps the others, like a run of ``zslr index DIR``; its backbone and
dimension must be the index's. Crash safety is the writer's, as for images (``ingest/images.py``).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
                   auto: AutoIndexOptions | None = None, keep_others: bool = False) -> OpenIndex:
    """Make index ``name`` hold exactly these precomputed features (benchmark galleries).

    features (N, D) float32; ``paths`` N unique catalog paths (e.g. ``awa1-lampert/test/17``);
    ``labels`` N known class names or None. Rows already indexed with identical features are
    kept, others added or replaced; catalog rows not in ``paths`` are marked removed. With
    ``model_checkpoint`` the index holds ``model.embed_images(features)`` in the model's metric.
    ``index_type="auto"`` chooses the type once the rows are in, under the budgets of ``auto``
    (``autotune.AutoIndexOptions``; None: no budget). ``keep_others``: add or replace these rows and
    keep every other row, and refuse (never reset) an index of another backbone or dimension.
    Returns the :class:`OpenIndex`.
    """
    if is_auto(index_type):
        auto = auto or auto_options(index_type, search_params)
        index_type = "Flat"
    elif auto is not None:
        raise InvalidInputError(f"auto-index budgets given with index_type {index_type!r}; use index_type='auto'")
    # a float32 memory map stays one (rows are read chunk by chunk below); other dtypes are converted
    x = features if isinstance(features, np.ndarray) and features.dtype == np.float32 else \
        np.asarray(features, dtype=np.float32)
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
    resume = f"zslr index --{'features' if keep_others else 'dataset'} ... --name {name}"
    with open_writer(folder, name, db, create=True, resume=resume) as w:
        w.init_manifest(source=source, backbone=backbone or source, backbone_weights=None, feature_dim=x.shape[1],
                        index_type=index_type, search_params=search_params, replace_derived=not keep_others,
                        expected_n=len(x))
        if model_checkpoint is not None:
            w.set_model(model_checkpoint)
        elif not keep_others:   # a features file added to an index keeps the index's model
            w.clear_model()
        existing = w.existing()
        hashes = [hashlib.sha256(row.tobytes()).hexdigest() for row in x]
        todo = [i for i, (p, h) in enumerate(zip(paths, hashes)) if existing.get(p, ("", None, None, None))[0] != "ok"
                or existing[p][3] != h]
        for part in range(0, len(todo), chunk_size):
            sel = todo[part:part + chunk_size]
            items = [ChunkItem(paths[i], labels[i], FileMeta(hashes[i], int(x[i].nbytes), 0)) for i in sel]
            w.commit_chunk(items, np.asarray(x[sel], np.float32), [])
        w.set_labels(paths, labels)  # labels may change without the features changing
        if not keep_others:
            keep = set(paths)
            w.mark_removed([p for p, row in existing.items() if row[0] != "removed" and p not in keep])
        if auto is not None:
            choose_index_type(w, auto, name)
        w.sync_index()
    return open_index(folder)


@dataclass(frozen=True)
class FeaturesIndexConfig:
    """Options of ``zslr index --features FILE``."""

    features: Path                         # .npy / .npz / .parquet (``features_file``)
    name: str = "default"
    file_list: Path | None = None          # the paths (+ TAB labels) of an .npy, one per row
    root: Path | None = None
    db: str | None = None
    backbone: str | None = None            # what made the features; else the file's, else the index's
    model: Path | None = None              # embedding model checkpoint: index its embeddings
    index_type: str | None = None
    search_params: str | None = None
    chunk_size: int = 65536


@dataclass(frozen=True)
class FeaturesIndexReport:
    """What ``index_features_file`` did: rows read, the backbone, the index after the run."""

    rows: int
    backbone: str
    feature_dim: int
    folder: Path
    n_ok: int
    n_entries: int


def index_features_file(cfg: FeaturesIndexConfig) -> FeaturesIndexReport:
    """Add (or replace) the rows of a precomputed-features file in index ``cfg.name``, through the same
    writer, checks and crash safety as images; the other rows of the index are kept.

    The backbone is ``cfg.backbone``, else the one the file names, else the index's, else the default
    one; it and the dimension must equal the index's (IncompatibleError naming both, exit 2).
    """
    from ..errors import IncompatibleError
    from ..features import DEFAULT_BACKBONE
    from ..features.backbones import canonical_backbone
    from .features_file import read_features_file

    ff = read_features_file(cfg.features, cfg.file_list)
    declared = [canonical_backbone(b) for b in (cfg.backbone, ff.backbone) if b]
    if len(set(declared)) > 1:
        raise IncompatibleError(f"--backbone {cfg.backbone!r} but {ff.source} says its features are of "
                                f"{ff.backbone!r}; give the backbone that made them")
    folder = index_folder(cfg.name, cfg.root)
    current = _manifest_of(folder)
    d = int(ff.features.shape[1])
    if current is not None:
        backbone = declared[0] if declared else current.backbone
        if backbone != current.backbone or d != current.feature_dim:
            raise IncompatibleError(
                f"{ff.source} holds {d}-d features of {backbone!r} but index {cfg.name!r} holds "
                f"{current.feature_dim}-d features of {current.backbone!r}; accepted: features of the same backbone "
                "and dimension, or another --name")
    else:
        backbone = declared[0] if declared else DEFAULT_BACKBONE
        want = backbone_dim(backbone)
        if d != want:
            raise IncompatibleError(f"{ff.source} holds {d}-d features but backbone {backbone!r} gives {want}-d ones; "
                                    "accepted: the backbone that made them (--backbone, or 'backbone' in the file)")
    ix = index_features(cfg.name, ff.features, ff.paths, ff.labels, model_checkpoint=cfg.model, root=cfg.root,
                        index_type=cfg.index_type or (current.index_type if current else "Flat"),
                        backbone=backbone, db=cfg.db, search_params=cfg.search_params,
                        source=current.source if current is not None else "features", chunk_size=cfg.chunk_size,
                        keep_others=True)
    with ix:
        m = ix.manifest
        return FeaturesIndexReport(len(ff.paths), backbone, d, Path(m.folder), m.n_ok, int(ix.ntotal))


@lru_cache(maxsize=8)
def backbone_dim(name: str) -> int:
    """The feature dimension of a registered backbone (built once on the CPU to ask it; ~1 s)."""
    from ..features.backbones import load_backbone

    return int(load_backbone(name, device="cpu").dim)


def _manifest_of(folder: Path):
    """The manifest of the index at ``folder``, or None when there is none yet (nothing is created)."""
    from ..index.layout import LOCATION_FILE

    if not (folder / LOCATION_FILE).is_file():
        return None
    with open_index(folder, repair=False) as ix:
        return ix.manifest
