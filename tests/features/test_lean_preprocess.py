"""features.lean_resize: the backbones' torchvision preprocessing in numpy, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zslretrieval.features import backbones
from zslretrieval.features.backbones import PreprocessSpec
from zslretrieval.features.backbones.efficientnet import LITE2_SPEC, SPEC
from zslretrieval.features.lean_resize import MAX_ASPECT, axis_weights, preprocess, resized_size

# shrinking and enlarging, both orientations, odd sizes, exactly the resize, past MAX_ASPECT both ways
SIZES = [(100, 80), (256, 300), (257, 256), (224, 1500), (2000, 300), (333, 777), (1024, 768), (31, 999),
         (256, 256), (600, 256), (293, 292), (3, 5)]


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like RGB array: smooth gradients plus noise and a hard edge (the resize's worst cases)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), ((x // 7 + y // 5) % 2) * 255], -1)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("spec", [SPEC, LITE2_SPEC, PreprocessSpec(resize=256, crop=224, interpolation="bilinear")],
                         ids=["lite0", "lite2", "bilinear"])
def test_numpy_preprocessing_equals_the_torchvision_transform(spec):
    if spec.interpolation == "bilinear":
        from zslretrieval.features.lean_forward import uint8_resize_native
        if not uint8_resize_native("bilinear"):
            pytest.skip("torchvision resizes uint8 bilinear in float on this CPU; the lean path is not used")
    tf = spec.pil_transform()
    for i, (h, w) in enumerate(SIZES):
        rgb = _image(h, w, i)
        want = tf(Image.fromarray(rgb)).numpy()
        got = preprocess(rgb, resize=spec.resize, crop=spec.crop, mean=spec.mean, std=spec.std,
                         interpolation=spec.interpolation)
        assert got.dtype == np.float32 and got.shape == want.shape == (3, spec.crop, spec.crop)
        np.testing.assert_array_equal(got, want, err_msg=f"{h}x{w}")


def test_resize_weights_and_sizes_follow_torch():
    assert MAX_ASPECT == backbones.MAX_ASPECT
    assert resized_size(375, 500, 256) == (256, 341) and resized_size(500, 375, 256) == (341, 256)
    first, w, precision = axis_weights(500, 341, "bicubic")
    assert first[0] == 0 and first.shape == (341,) and w.dtype == np.int32
    # each output's weights sum to 2**precision within rounding: a flat image stays flat
    assert np.abs(w.sum(1) - (1 << precision)).max() <= w.shape[1]
    flat = np.full((40, 60, 3), 77, np.uint8)
    out = preprocess(flat, resize=32, crop=32, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bicubic")
    np.testing.assert_array_equal(out, np.float32(77) * np.float32(1 / 255))


def test_unknown_interpolation_is_refused():
    with pytest.raises(ValueError, match="nearest"):
        preprocess(_image(8, 8, 0), resize=8, crop=8, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest")
