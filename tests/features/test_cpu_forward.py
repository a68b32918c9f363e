"""The CPU forwards used for ingestion (ONNX Runtime; a frozen TorchScript graph with BatchNorm folded
into the convolutions) against the eager backbone: same features within float rounding, any batch
size, a graph cache that a weight change cannot fool, fallbacks, and the pipeline uses the fastest."""
from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.features import extract_features, load_backbone
from zslretrieval.features.backbones import Backbone, PreprocessSpec

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    # exported graphs go to a per-test cache, never into the user's data folder
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ZSLR_CPU_FORWARD", raising=False)


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 224, 224, generator=g).contiguous(memory_format=torch.channels_last)


def _close(fast: np.ndarray, eager: np.ndarray) -> None:
    # exporting / folding BN changes rounding only: 1e-5 of the features' scale, direction unchanged
    assert fast.shape == eager.shape and fast.dtype == np.float32
    assert np.abs(fast - eager).max() <= 1e-4 * max(1.0, np.abs(eager).max())
    cos = (fast * eager).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(eager, axis=1)
    assert cos.min() >= 0.999999


@pytest.mark.parametrize("kind", ["onnxruntime", "torchscript"])
def test_cpu_forward_equals_eager_within_rounding(kind):
    bb = load_backbone("efficientnet-lite0")
    bb.net.to(memory_format=torch.channels_last)
    fwd = bb.cpu_forward(_batch(4), kind)
    assert fwd is not bb.forward and bb.cpu_forward(_batch(2), kind) is fwd   # built once
    assert bb.cpu_forward_kind(fwd) == kind
    for n in (1, 3, 4, 6):  # other batch sizes than the example's: the pipeline's last micro-batch
        x = _batch(n, seed=n)
        _close(fwd(x).numpy(), bb.forward(x).numpy())
        _close(fwd(x.contiguous()).numpy(), bb.forward(x).numpy())   # either memory layout


def test_stage_backbone_exports_every_stage():
    # the multi-stage backbone (DML's intermediate maps) pools 5 stages in one vector: all must survive export
    bb = load_backbone("efficientnet-lite0-stages")
    fwd = bb.cpu_forward(_batch(2), "onnxruntime")
    x = _batch(3, seed=7)
    _close(fwd(x).numpy(), bb.forward(x).numpy())


def test_auto_prefers_onnxruntime_and_env_var_picks(monkeypatch):
    bb = load_backbone("efficientnet-lite0")
    assert bb.cpu_forward_kind(bb.cpu_forward(_batch(2))) == "onnxruntime"
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "torchscript")
    assert bb.cpu_forward_kind(bb.cpu_forward(_batch(2))) == "torchscript"
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "eager")
    assert bb.cpu_forward(_batch(2)) == bb.forward
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "tensorrt")
    with pytest.raises(InvalidInputError, match="'tensorrt'.*auto, onnxruntime, torchscript, eager"):
        bb.cpu_forward(_batch(2))


def test_graph_cache_is_reused_and_keyed_by_the_weights(tmp_path):
    bb = load_backbone("efficientnet-lite0")
    x = _batch(2, seed=3)
    first = bb.cpu_forward(_batch(2), "onnxruntime")
    files = sorted((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000_000

    again = load_backbone("efficientnet-lite0")   # a new process would do the same: read, not export
    from zslretrieval.features.backbones import ort_forward as mod
    calls = []
    real = mod.export_onnx
    mod_export = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    import unittest.mock as um
    with um.patch.object(mod, "export_onnx", mod_export):
        _close(again.cpu_forward(_batch(2), "onnxruntime")(x).numpy(), first(x).numpy())
        assert calls == []
        # same file name and layout, different weights: a new key, a new graph, the new weights' features
        changed = load_backbone("efficientnet-lite0")
        with torch.no_grad():
            next(changed.net.parameters()).mul_(0.5)
        fwd = changed.cpu_forward(_batch(2), "onnxruntime")
        assert calls == [1]
        _close(fwd(x).numpy(), changed.forward(x).numpy())
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 2


def test_unwritable_cache_still_gives_the_forward(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("ZSLR_CACHE", str(blocked))
    bb = load_backbone("efficientnet-lite0")
    x = _batch(2)
    _close(bb.cpu_forward(_batch(2), "onnxruntime")(x).numpy(), bb.forward(x).numpy())


def test_without_onnxruntime_auto_falls_back_and_explicit_asks_fail(monkeypatch):
    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_ort)
    bb = load_backbone("efficientnet-lite0")
    assert bb.cpu_forward_kind(bb.cpu_forward(_batch(2))) == "torchscript"
    with pytest.raises(IncompatibleError, match="onnxruntime"):
        load_backbone("efficientnet-lite0").cpu_forward(_batch(2), "onnxruntime")


def test_untraceable_backbone_stays_eager(monkeypatch):
    bb = Backbone("odd", torch.nn.Conv2d(3, 4, 3), 4, PreprocessSpec(resize=36, crop=32), "test",
                  pool=lambda net, x: net(x).mean(dim=(2, 3)))

    def refuse(*a, **k):
        raise RuntimeError("cannot trace this")
    monkeypatch.setattr(torch.jit, "trace", refuse)
    monkeypatch.setattr(torch.onnx, "export", refuse)
    assert bb.cpu_forward(torch.zeros(2, 3, 32, 32)) == bb.forward


def test_pipeline_features_equal_eager_features_on_real_photos(shared_data):
    photos = sorted((shared_data / "photos" / "awa2").rglob("*.jpg"))[:6]
    bb = load_backbone("efficientnet-lite0")
    feats, ok, fail = extract_features(photos, bb, batch_size=4, device="cpu", workers=2)
    assert not fail and ok == [str(p) for p in photos]
    assert list(bb._cpu_forwards) == ["auto"] and bb.cpu_forward_kind(bb._cpu_forwards["auto"]) == "onnxruntime"
    side = bb.preprocess.resize
    from zslretrieval.features.images import load_image
    ref = np.stack([bb.forward(bb.transform(load_image(p, side))[None]).numpy()[0] for p in photos])
    assert np.abs(feats - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
