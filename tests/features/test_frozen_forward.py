"""The frozen CPU forward used for ingestion (BatchNorm folded into the convolutions) against the
eager backbone: same features within float rounding, any batch size, and the pipeline uses it."""
from __future__ import annotations

import numpy as np
import torch

from zslretrieval.features import extract_features, load_backbone
from zslretrieval.features.backbones import Backbone, PreprocessSpec


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g).contiguous(memory_format=torch.channels_last)


def test_frozen_efficientnet_equals_eager_within_rounding():
    bb = load_backbone("efficientnet-lite0")
    bb.net.to(memory_format=torch.channels_last)
    fwd = bb.frozen_forward(_batch(4))
    assert fwd is not bb.forward and bb.frozen_forward(_batch(2)) is fwd   # built once
    for n in (1, 3, 4, 6):  # other batch sizes than the traced one: the pipeline's last micro-batch
        x = _batch(n, seed=n)
        eager, frozen = bb.forward(x).numpy(), fwd(x).numpy()
        assert frozen.shape == eager.shape == (n, 1280) and frozen.dtype == np.float32
        # folding BN changes rounding only: 1e-5 of the features' scale, direction unchanged
        assert np.abs(frozen - eager).max() <= 1e-4 * max(1.0, np.abs(eager).max())
        cos = (frozen * eager).sum(1) / np.linalg.norm(frozen, axis=1) / np.linalg.norm(eager, axis=1)
        assert cos.min() >= 0.999999


def test_untraceable_backbone_stays_eager(monkeypatch):
    bb = Backbone("odd", torch.nn.Conv2d(3, 4, 3), 4, PreprocessSpec(resize=36, crop=32), "test",
                  pool=lambda net, x: net(x).mean(dim=(2, 3)))
    def refuse(*a, **k):
        raise RuntimeError("cannot trace this")
    monkeypatch.setattr(torch.jit, "trace", refuse)
    assert bb.frozen_forward(torch.zeros(2, 3, 32, 32)) == bb.forward


def test_pipeline_features_equal_eager_features_on_real_photos(shared_data):
    from PIL import Image

    photos = sorted((shared_data / "photos" / "awa2").rglob("*.jpg"))[:6]
    bb = load_backbone("efficientnet-lite0")
    feats, ok, fail = extract_features(photos, bb, batch_size=4, device="cpu", workers=2)
    assert not fail and ok == [str(p) for p in photos]
    assert bb._frozen is not None and bb._frozen != bb.forward   # the pipeline ran the frozen graph
    side = bb.preprocess.resize
    from zslretrieval.features.images import load_image
    ref = np.stack([bb.forward(bb.transform(load_image(p, side))[None]).numpy()[0] for p in photos])
    assert np.abs(feats - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
