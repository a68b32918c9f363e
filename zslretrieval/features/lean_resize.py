"""A backbone's eval preprocessing in numpy, equal to the torchvision pipeline it stands for.

``PreprocessSpec.pil_transform()`` (``features/backbones``) is torchvision's ``PILToTensor ->
limit_aspect -> Resize(shorter side, antialias) -> CenterCrop -> ToDtype(float32, scale) ->
Normalize``. Importing torch and torchvision costs a query-by-example process ~2 s before any
work, so the lean query path (``features/lean_forward.py``) runs the same arithmetic here:

- **resize**: torch resizes a uint8 image natively (bicubic always; bilinear where the CPU has
  AVX2/AVX-512 or is ARM) with PIL's antialiasing filters in fixed point: per axis, weights
  computed in double, normalised, scaled to int16 at the largest precision whose biggest weight
  still fits (``_compute_index_ranges_int16_weights`` in ATen's ``UpSampleKernel.cpp``), the width
  pass first, each output ``clamp((sum(w * px) + 2**(p-1)) >> p, 0, 255)``. Integer arithmetic,
  so the result is bit for bit torch's (``tests/features/test_lean_preprocess.py``);
- **crop**: torchvision's anchor, ``int(round((size - crop) / 2))`` (Python's rounding);
- **scale and normalise**: float32 ``x * float32(1/255)``, then ``(x - mean) / std`` in float32.
"""
from __future__ import annotations

import math

import numpy as np

# Widest long side kept, as a multiple of the short side; the torch path (backbones) imports it from here.
MAX_ASPECT = 4
# Interpolations whose uint8 resize this module reproduces (torch's native uint8 kernels).
FILTERS = ("bicubic", "bilinear")


def _cubic(x: np.ndarray) -> np.ndarray:
    """ATen's ``HelperInterpCubic::aa_filter`` (a = -0.5, PIL's), in its operation order, elementwise."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _linear(x: np.ndarray) -> np.ndarray:
    """ATen's ``HelperInterpLinear::aa_filter`` (the triangle), elementwise."""
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


_FILTER = {"bicubic": (_cubic, 4), "bilinear": (_linear, 2)}


def axis_weights(in_size: int, out_size: int, interpolation: str) -> tuple[np.ndarray, np.ndarray, int]:
    """One axis of torch's uint8 antialiased resize: (first source index (out,), int16 weights
    (out, taps) as int32, precision bits). ``_compute_indices_min_size_weights_aa`` +
    ``_compute_index_ranges_int16_weights``, align_corners False, no scale factor."""
    fn, interp = _FILTER[interpolation]
    scale = in_size / out_size
    support = (interp * 0.5) * scale if scale >= 1.0 else interp * 0.5
    taps = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    # elementwise float64, the same operations in the same order as the C++ loop (so the same bits)
    center = scale * (np.arange(out_size, dtype=np.float64) + 0.5)
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)   # C++ casts truncate toward zero
    last = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size)
    size = np.clip(last - first, 0, taps)
    j = np.arange(taps)[None, :]
    wf = fn((j + first[:, None] - center[:, None] + 0.5) * invscale)
    wf[j >= size[:, None]] = 0.0
    total = np.zeros(out_size, np.float64)
    for k in range(taps):            # summed left to right, as the C++ loop
        total += wf[:, k]
    nz = total != 0.0
    wf[nz] /= total[nz, None]
    wt_max = float(wf[nz].max()) if nz.any() else 0.0
    wt_max = max(wt_max, 0.0)
    precision = 0
    while precision < 22:
        if int(0.5 + wt_max * (1 << (precision + 1))) >= (1 << 15):
            break
        precision += 1
    v = wf * (1 << precision)
    wi = np.where(v < 0, np.trunc(v - 0.5), np.trunc(v + 0.5)).astype(np.int32)
    return first, wi, precision


def _resample(x: np.ndarray, axis: int, out_size: int, interpolation: str) -> np.ndarray:
    """(C, H, W) uint8 resampled along ``axis`` (1: height, 2: width) to ``out_size``, uint8."""
    in_size = x.shape[axis]
    first, w, precision = axis_weights(in_size, out_size, interpolation)
    # source index of every tap, clipped: taps past the row's end carry weight 0
    idx = np.minimum(first[:, None] + np.arange(w.shape[1])[None, :], in_size - 1)
    # int32 holds every sum: |weights| < 2**15, pixels <= 255, a few dozen taps at most
    acc = np.full(x.shape[:axis] + (out_size,) + x.shape[axis + 1:], 1 << (precision - 1) if precision else 0,
                  np.int32)
    src = x.astype(np.int32)
    shape = [1, 1, 1]
    shape[axis] = out_size
    for j in range(w.shape[1]):
        acc += np.take(src, idx[:, j], axis=axis) * w[:, j].reshape(shape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's output size for ``Resize(short)``: the shorter side to ``short``, the longer
    ``int(short * long / shorter)``."""
    lo, hi = (width, height) if width <= height else (height, width)
    new_long = int(short * hi / lo)
    return (new_long, short) if width <= height else (short, new_long)


def limit_aspect(x):
    """(..., H, W) array or tensor -> centre crop whose long side is at most MAX_ASPECT x the short side.

    Plain slicing, so the numpy query path and the torch ingestion path (``backbones``) share it."""
    h, w = x.shape[-2:]
    cap = MAX_ASPECT * max(1, min(h, w))
    if h > cap:
        top = (h - cap) // 2
        x = x[..., top:top + cap, :]
    elif w > cap:
        left = (w - cap) // 2
        x = x[..., :, left:left + cap]
    return x


def resize_uint8(x: np.ndarray, short: int, interpolation: str) -> np.ndarray:
    """(C, H, W) uint8 -> shorter side ``short``, as torchvision's ``Resize(short, antialias=True)``."""
    h, w = x.shape[-2:]
    nh, nw = resized_size(h, w, short)
    if (nh, nw) == (h, w):
        return x
    if nw != w:            # the width pass first, as torch's separable kernels
        x = _resample(x, 2, nw, interpolation)
    if nh != h:
        x = _resample(x, 1, nh, interpolation)
    return x


def center_crop(x: np.ndarray, crop: int) -> np.ndarray:
    """(C, H, W) -> (C, crop, crop) at torchvision's anchor (H, W >= crop)."""
    h, w = x.shape[-2:]
    top = int(round((h - crop) / 2.0))
    left = int(round((w - crop) / 2.0))
    return x[..., top:top + crop, left:left + crop]


def preprocess(rgb: np.ndarray, *, resize: int, crop: int, mean, std, interpolation: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, crop, crop) float32, equal to ``PreprocessSpec.pil_transform()``."""
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation {interpolation!r}; the numpy preprocessing does {', '.join(FILTERS)}")
    x = np.ascontiguousarray(np.asarray(rgb, np.uint8).transpose(2, 0, 1))
    x = center_crop(resize_uint8(limit_aspect(x), resize, interpolation), crop)
    out = x.astype(np.float32) * np.float32(1.0 / 255)
    out -= np.asarray(mean, np.float32)[:, None, None]
    out /= np.asarray(std, np.float32)[:, None, None]
    return out
