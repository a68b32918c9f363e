"""features.lean_forward: query images through the cached ONNX graph without torch, equal to the torch path."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from zslretrieval.features.backbones import load_backbone
from zslretrieval.features.images import load_image
from zslretrieval.features.lean_forward import (default_sidecar_path, find_sidecar, load_lean_forward, sidecar_path,
                                                weights_digest)


def _photos(tmp_path, n=5):
    """Photo-sized generated images, landscape and portrait, a PNG among them (no draft decoding)."""
    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(375, 500), (640, 427), (300, 300), (200, 900), (512, 384)][:n]):
        y, x = np.mgrid[0:h, 0:w]
        arr = np.stack([x % 256, y % 256, (x * y) % 256], -1) + rng.normal(0, 20, (h, w, 3))
        p = tmp_path / (f"{i}.png" if i == 2 else f"{i}.jpg")
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


def _torch_path(bb, paths):
    """What the torch query path computes: the backbone's transform and its ONNX Runtime CPU forward
    (building that forward writes the lean sidecar beside the cached graph)."""
    x = torch.stack([bb.transform(load_image(p, bb.preprocess.resize)) for p in paths])
    fwd = bb.cpu_forward(x, "onnxruntime")
    return fwd(x).numpy()


def test_lean_features_equal_the_torch_path_for_lite0(lite0, tmp_path):
    paths = _photos(tmp_path)
    want = _torch_path(lite0, paths)
    rec = find_sidecar("efficientnet-lite0")
    assert rec is not None, "building the ONNX Runtime forward writes the sidecar"
    assert rec["weights_id"] == lite0.weights_id and rec["dim"] == 1280
    lean = load_lean_forward("efficientnet-lite0")
    assert lean is not None and lean.weights_id == lite0.weights_id
    got = lean.features(paths)
    assert got.shape == (len(paths), 1280) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 2e-5
    # encoded bytes (uploads) decode like files
    np.testing.assert_array_equal(lean.features([paths[0].read_bytes()]), got[:1])
    # a weight file given by path (--weights) finds the graph of the same bytes
    copy = tmp_path / "lite0-copy.pth"
    shutil.copyfile(rec["weights_path"], copy)
    assert load_lean_forward("efficientnet-lite0", copy) is not None


def test_changed_weights_or_graph_never_reuse_a_stale_graph(lite0, tmp_path):
    _torch_path(lite0, _photos(tmp_path, 1))
    rec = find_sidecar("efficientnet-lite0")
    assert rec is not None
    other = tmp_path / "other.pth"
    other.write_bytes(b"not the same weights")
    assert find_sidecar("efficientnet-lite0", other) is None
    assert find_sidecar("efficientnet-lite0", tmp_path / "missing.pth") is None
    # a sidecar whose recorded digest is not the weight file's, or whose graph is gone: no lean forward
    cache = tmp_path / "cache"
    cache.mkdir()
    src = default_sidecar_path(__import__("pathlib").Path(rec["graph_path"]).parent, "efficientnet-lite0")
    bad = json.loads(src.read_text())
    bad["weights_sha256"] = "0" * 64
    default_sidecar_path(cache, "efficientnet-lite0").write_text(json.dumps(bad))
    shutil.copyfile(rec["graph_path"], cache / rec["graph"])
    assert find_sidecar("efficientnet-lite0", cache_dir=cache) is None
    good = json.loads(src.read_text())
    default_sidecar_path(cache, "efficientnet-lite0").write_text(json.dumps(good))
    assert find_sidecar("efficientnet-lite0", cache_dir=cache) is not None
    (cache / rec["graph"]).unlink()
    assert find_sidecar("efficientnet-lite0", cache_dir=cache) is None
    assert sidecar_path(cache, "efficientnet-lite0", weights_digest(rec["weights_path"])).name.startswith(
        "efficientnet-lite0-w")
