"""Images -> backbone features: file discovery, robust decoding, offline backbones, batched pipeline.

    bb = load_backbone("efficientnet-lite0")
    x, ok_paths, failures = extract_features(paths, bb, batch_size=32, device="auto", workers=None)
"""
from __future__ import annotations

from .backbones import BACKBONES, Backbone, PreprocessSpec, list_backbones, load_backbone
from .images import IMAGE_EXTENSIONS, ImageDecodeError, ImageSource, decode_image, discover, load_image
from .pipeline import FeatureBatch, extract_features, iter_feature_batches, resolve_device

__all__ = ["BACKBONES", "IMAGE_EXTENSIONS", "Backbone", "FeatureBatch", "ImageDecodeError", "ImageSource",
           "PreprocessSpec", "decode_image", "discover", "extract_features", "iter_feature_batches",
           "list_backbones", "load_backbone", "load_image", "resolve_device"]
