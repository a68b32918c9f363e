"""Where a general model comes from and how callers get it: the data folder, the package, or a build.

``load_general_model`` looks, in order, at
1. the data-root cache ``<data root>/general/<backbone>-<key>.npz`` (a model built here, e.g. by
   ``zslr general --rebuild``);
2. the copy shipped in the package, ``shipped/<backbone>.npz`` (written by
   ``scripts/build_general_model.py`` with the same build; efficientnet-lite0), used only when its
   key matches -- the same format, the backbone's weights id and the installed sentence encoder's id;
3. a build (``build.py``: minutes on CPU), saved to the cache of step 1.
The key hashes what the model is derived from (file format, backbone, its weights id, the sentence
encoder's id), so new weights, a new encoder or a new format make a new file rather than reusing a
stale one. Steps 1 and 2 import no torch, torchvision or timm. A model is kept in memory once loaded
(per backbone and data root); ``GeneralModel.source`` says which step gave it.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ...errors import CheckpointError
from .imagenet import HEAD_BACKBONES, head_backbone, head_weights_id
from .model import FORMAT, GeneralModel

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def model_key(backbone: str, weights_id: str, encoder: str | None = None) -> str:
    """16 hex digits of sha256 over (format, backbone, weights id, encoder id): what a model file is valid for."""
    from ..encoder import encoder_id
    return hashlib.sha256(json.dumps([FORMAT, backbone, weights_id, encoder or encoder_id()]).encode()).hexdigest()[:16]


def general_model_path(backbone: str, weights_id: str, data_root: str | os.PathLike | None = None) -> Path:
    """``<data root>/general/<backbone>-<key>.npz``; the key changes with weights, encoder and format."""
    from ...paths import resolve_data_root
    return resolve_data_root(data_root) / "general" / f"{backbone}-{model_key(backbone, weights_id)}.npz"


def shipped_model_path(backbone: str) -> Path:
    """Where the package keeps its built copy of ``backbone``'s model (it may not have one)."""
    return SHIPPED_DIR / f"{backbone}.npz"


def _shipped_model(name: str, weights_id: str) -> GeneralModel | None:
    """The shipped model of ``name`` when there is one and its key is this installation's, else None."""
    from ..encoder import encoder_id
    path = shipped_model_path(name)
    if not path.is_file():
        return None
    meta = GeneralModel.read_meta(path)
    if (meta.get("format"), meta.get("backbone"), meta.get("backbone_weights"), meta.get("encoder")) != (
            FORMAT, name, weights_id, encoder_id()):
        return None      # built for other weights, another encoder or an older format: not this model
    return GeneralModel.load(path, source="shipped")


_LOADED: dict[tuple[str, str], GeneralModel] = {}


def load_general_model(backbone: str = "efficientnet-lite0", *, data_root: str | os.PathLike | None = None,
                       build: bool = True, rebuild: bool = False,
                       log: Callable[[str], None] | None = None) -> GeneralModel:
    """The general model of ``backbone``: cached in the data folder, else shipped, else built (module docstring).

    ``build=False``: CheckpointError instead of building; ``rebuild``: build even when one exists.
    """
    from ...paths import resolve_data_root
    name = head_backbone(backbone)
    key = (name, str(resolve_data_root(data_root)))
    if not rebuild and key in _LOADED:
        return _LOADED[key]
    weights_id = head_weights_id(name)
    path = general_model_path(name, weights_id, data_root)
    model = None
    if not rebuild:
        if path.is_file():
            try:
                model = GeneralModel.load(path, source="cache")
            except CheckpointError:
                model = None  # a torn or outdated cache file is rebuilt, never trusted
        if model is None:
            try:
                model = _shipped_model(name, weights_id)
            except CheckpointError:
                model = None  # an unreadable shipped copy: build as if there were none
    if model is None:
        if not build:
            raise CheckpointError(f"no general model for {name} at {path} nor shipped in the package for these "
                                  f"weights and encoder; build it with `zslr general --backbone {name}`")
        from .build import build_general_model
        say = log or (lambda m: print(f"zslr: {m}", file=sys.stderr, flush=True))
        why = "rebuilding" if rebuild else "no copy in the data folder or the package fits these weights and encoder;"
        say(f"{why} building the general text->image model for {name} (about 1.5 minutes on 2 idle CPU cores, "
            f"more on a busy machine; once); cached in {path}")
        model = build_general_model(name, cache_dir=path.parent.parent / "cache" / "text", log=log)
        model.save(path)
        model.source, model.path = "built", path
    _LOADED[key] = model
    return model


def cached_general_model(backbone: str | None, weights_id: str | None = None) -> GeneralModel | None:
    """The general model of ``backbone`` if it is already built -- in the data folder or shipped in the
    package (never builds) -- else None.

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
