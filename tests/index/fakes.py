"""Test stand-ins: a tiny fast backbone and a tiny embedding model, registered by name.

``tiny-test`` is a fixed random conv + global pool over 32x32 crops (16-d), fast enough to
index hundreds of images in seconds; ``tiny-linear`` / ``tiny-l2`` are linear embedding models
(metrics "ip" / "l2") that ``models.checkpoint.load_checkpoint`` can rebuild by name.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from zslretrieval.features.backbones import BACKBONES, Backbone, PreprocessSpec
from zslretrieval.models import MODELS
from zslretrieval.models.base import ZslModel
from zslretrieval.models.checkpoint import ModelCard, save_checkpoint

TINY_SPEC = PreprocessSpec(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _tiny(weights=None, device="cpu") -> Backbone:
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 16, 5, stride=2)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.2)
        conv.bias.copy_(torch.randn(16, generator=g) * 0.1)
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Backbone("tiny-test", net, 16, TINY_SPEC, "test:tiny-seed0")


if "tiny-test" not in BACKBONES:
    BACKBONES.add("tiny-test", _tiny)


class TinyLinear(ZslModel):
    name = "tiny-linear"
    metric = "ip"
    iterative = False

    def __init__(self, feature_dim, semantic_dims, hparams=None):
        super().__init__(feature_dim, semantic_dims, hparams)
        self.img = nn.Linear(self.feature_dim, 6, bias=False)
        self.sem = nn.Linear(self.semantic_dim, 6, bias=False)

    def embed_images(self, x):
        return self.img(x)

    def embed_classes(self, s):
        return self.sem(s)


class TinyL2(TinyLinear):
    name = "tiny-l2"
    metric = "l2"


for _cls in (TinyLinear, TinyL2):
    if _cls.name not in MODELS:
        MODELS.add(_cls.name, _cls)


def make_checkpoint(path, feature_dim: int, model_name: str = "tiny-linear", seed: int = 0):
    """Save a randomly initialised tiny model as a real zslr checkpoint; returns the model."""
    torch.manual_seed(seed)
    cls = TinyLinear if model_name == "tiny-linear" else TinyL2
    model = cls(feature_dim, [4])
    card = ModelCard(model=cls.name, hparams={}, feature_dim=feature_dim, semantic_dims=[4], dataset="test",
                     metric=cls.metric, vocabulary=["a", "b", "c", "d"], feature_source="tiny-test")
    save_checkpoint(model, card, path, torch.eye(4))
    return model


def write_images(folder, n: int, seed: int = 0, size: int = 40, classes: int = 3, fmt: str = "JPEG") -> list:
    """``n`` small random images in ``folder/class<k>/img<i>.jpg``; returns the paths."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        d = folder / f"class{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        arr[: size // 2] = (i * 37) % 256  # some structure, so images differ in features
        p = d / f"img{i:04d}.{'jpg' if fmt == 'JPEG' else fmt.lower()}"
        Image.fromarray(arr).save(p, fmt)
        out.append(p)
    return out
