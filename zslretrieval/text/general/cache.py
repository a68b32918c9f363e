"""Where a built general model lives and how callers get it: ``<data root>/general/<backbone>-<key>.pt``.

The key hashes what the model is derived from (file format, backbone, its weights id, the sentence
encoder's id), so new weights, a new encoder or a new format make a new file rather than reusing
a stale one. A model is kept in memory once loaded (per backbone and data root).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ...errors import CheckpointError
from .build import build_general_model
from .imagenet import HEAD_BACKBONES, imagenet_head
from .model import FORMAT, GeneralModel


def general_model_path(backbone: str, weights_id: str, data_root: str | os.PathLike | None = None) -> Path:
    """``<data root>/general/<backbone>-<key>.pt``; the key changes with weights, encoder and format."""
    from ...paths import resolve_data_root
    from ..encoder import encoder_id
    key = hashlib.sha256(json.dumps([FORMAT, backbone, weights_id, encoder_id()]).encode()).hexdigest()[:16]
    return resolve_data_root(data_root) / "general" / f"{backbone}-{key}.pt"


_LOADED: dict[tuple[str, str], GeneralModel] = {}


def load_general_model(backbone: str = "efficientnet-lite0", *, data_root: str | os.PathLike | None = None,
                       build: bool = True, rebuild: bool = False,
                       log: Callable[[str], None] | None = None) -> GeneralModel:
    """The cached general model of ``backbone`` (built on first use, then read from the data folder)."""
    from ...features.backbones import canonical_backbone
    from ...paths import resolve_data_root
    name = canonical_backbone(backbone)
    key = (name, str(resolve_data_root(data_root)))
    if not rebuild and key in _LOADED:
        return _LOADED[key]
    _, _, weights_id = imagenet_head(name)
    path = general_model_path(name, weights_id, data_root)
    model = None
    if path.is_file() and not rebuild:
        try:
            model = GeneralModel.load(path)
        except CheckpointError:
            model = None  # a torn or outdated cache file is rebuilt, never trusted
    if model is None:
        if not build:
            raise CheckpointError(f"no general model for {name} at {path}; build it with `zslr general --backbone {name}`")
        say = log or (lambda m: print(f"zslr: {m}", file=sys.stderr, flush=True))
        say(f"building the general text->image model for {name} once (a few minutes on CPU); cached in {path}")
        model = build_general_model(name, cache_dir=path.parent.parent / "cache" / "text", log=log)
        model.save(path)
    _LOADED[key] = model
    return model


def cached_general_model(backbone: str | None, weights_id: str | None = None) -> GeneralModel | None:
    """The general model of ``backbone`` if it is already built (never builds), else None.

    For ``zslr index``: an index of raw features stores its images' hubness-correction terms when
    the general model exists; when it does not, the first text query computes them in memory.
    """
    from ...errors import ZslrError
    if backbone not in HEAD_BACKBONES:
        return None
    try:
        model = load_general_model(backbone, build=False)
    except ZslrError:
        return None
    if weights_id and model.backbone_weights != weights_id:
        return None
    return model
