"""GPU ingestion fast paths: batched nvJPEG decoding with on-device preprocessing, host->device
prefetching on a side stream, and channels_last + bf16 autocast for the backbone.

Everything here imports and runs on a CPU-only machine: ``GpuJpegDecoder(spec, "cpu")`` uses the
same torchvision ops on the CPU (libjpeg-turbo instead of nvJPEG), which is how the tests check that
the GPU path matches the PIL + torchvision transform that the CPU pipeline uses.

Typical loop (the caller decodes ``failed`` items with PIL, one by one)::

    dec = GpuJpegDecoder(PreprocessSpec.from_transform(backbone.transform), "cuda")
    for items in prefetch_to_device(byte_loader, "cuda"):      # items: [(image_id, bytes)]
        batch, ok_ids, failed = dec.decode(items)              # (B, 3, crop, crop) on the GPU
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F

from ..errors import IncompatibleError
from .backbones import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, limit_aspect  # noqa: F401  (re-exported)
from .images import MAX_IMAGE_PIXELS



def _decode_jpeg(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    # torchvision 0.29 deprecates its codecs in favour of TorchCodec; decode_jpeg(device="cuda") is
    # still the batched nvJPEG entry point we rely on, so keep the notice out of every ingestion run.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        # EXIF orientation as on the PIL path (ImageOps.exif_transpose), so both decoders agree.
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)

def jpeg_problem(data: bytes) -> str | None:
    """Why nvJPEG should not get these bytes (the caller then decodes them with PIL), or None.

    Cheap header checks: not a JPEG at all, no end-of-image marker (truncated), or a 4-channel
    CMYK/YCCK JPEG, which the GPU decoder does not convert to RGB correctly.
    """
    if len(data) < 4 or data[:3] != b"\xff\xd8\xff":
        return "not a JPEG (no SOI marker)"
    if b"\xff\xd9" not in data[-64:]:  # allow a few bytes of padding after EOI
        return "truncated JPEG (no EOI marker at the end)"
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return "malformed JPEG header"
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        seg = int.from_bytes(data[i + 2:i + 4], "big")
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC) carry the component count
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > n:
                return "truncated JPEG header"
            h, w, comps = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big"), data[i + 9]
            if w * h > MAX_IMAGE_PIXELS:  # nvJPEG would allocate by the header; PIL's path refuses it with the reason
                return f"JPEG header declares {w}x{h} pixels"
            if comps not in (1, 3):
                return f"JPEG with {comps} colour components (CMYK/YCCK); GPU decoding handles 1 or 3"
            return None
        if marker == 0xDA:  # start of scan before any frame header
            return "malformed JPEG (scan before frame header)"
        i += 2 + seg
    return "truncated JPEG header"


class GpuJpegDecoder:
    """Batched JPEG decoding + resize / center-crop / normalise on a torch device.

    Args:
        spec: the backbone's preprocessing.
        device: ``"cuda"`` (nvJPEG through ``torchvision.io.decode_jpeg``) or ``"cpu"`` (same ops,
            libjpeg-turbo; used for tests and as a reference).
    """

    def __init__(self, spec: PreprocessSpec, device: str | torch.device = "cuda"):
        # any object with PreprocessSpec's fields works
        self.spec = spec if isinstance(spec, PreprocessSpec) else PreprocessSpec(
            int(spec.resize), int(spec.crop), tuple(spec.mean), tuple(spec.std),
            str(getattr(spec, "interpolation", "bilinear")))
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise IncompatibleError(f"device {device!r} but torch sees no CUDA GPU; use device 'cpu'")
        self._mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1) * 255.0

    def decode(self, items: Sequence[tuple[int, bytes]]
               ) -> tuple[torch.Tensor, list[int], list[tuple[int, str]]]:
        """Decode ``[(image_id, jpeg_bytes)]``.

        Returns (batch (B, 3, crop, crop) float32 on the device, ok_ids (B,) in batch order,
        failed [(image_id, reason)] for the caller's PIL fallback).
        """
        failed: list[tuple[int, str]] = []
        good: list[tuple[int, torch.Tensor]] = []
        for image_id, data in items:
            why = jpeg_problem(data)
            if why:
                failed.append((image_id, why))
            else:
                good.append((image_id, torch.frombuffer(bytearray(data), dtype=torch.uint8)))
        images: list[tuple[int, torch.Tensor]] = []
        if good:
            try:
                out = _decode_jpeg([t for _, t in good], self.device)
                images = list(zip([i for i, _ in good], out))
            except RuntimeError:
                # one bad file fails the whole batch: retry one by one to find it
                for image_id, t in good:
                    try:
                        images.append((image_id, _decode_jpeg(t, self.device)))
                    except RuntimeError as e:
                        failed.append((image_id, f"decode failed: {str(e).splitlines()[0][:200]}"))
        if not images:
            c = self.spec.crop
            return torch.empty((0, 3, c, c), device=self.device), [], failed
        return self.preprocess([im for _, im in images]), [i for i, _ in images], failed

    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 (3, H_i, W_i) images on the device -> (B, 3, crop, crop) float32, normalised.

        Images of equal size are resized together (one kernel per size group, e.g. a camera's
        fixed resolution), then restored to input order.
        """
        images = [limit_aspect(im) for im in images]  # as the PIL path: no 20 GB resize of a 19 x 2M image
        groups: dict[tuple[int, int], list[int]] = {}
        for j, im in enumerate(images):
            groups.setdefault(tuple(im.shape[-2:]), []).append(j)
        out = torch.empty((len(images), 3, self.spec.crop, self.spec.crop), dtype=torch.float32, device=self.device)
        for idx in groups.values():
            x = torch.stack([images[j] for j in idx])
            x = F.resize(x, [self.spec.resize], interpolation=self.spec.interpolation_mode, antialias=True)
            x = F.center_crop(x, [self.spec.crop, self.spec.crop])
            out[torch.tensor(idx, device=self.device)] = (x.float() - self._mean) / self._std
        return out


def _to_device(obj: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(obj, torch.Tensor):
        if device.type == "cuda" and obj.device.type == "cpu" and not obj.is_pinned():
            obj = obj.pin_memory()  # async copies need page-locked memory
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, (list, tuple)):
        out = [_to_device(o, device, non_blocking) for o in obj]
        return type(obj)(out) if not hasattr(obj, "_fields") else type(obj)(*out)
    if isinstance(obj, dict):
        return {k: _to_device(v, device, non_blocking) for k, v in obj.items()}
    return obj


def _record_stream(obj: Any, stream: torch.cuda.Stream) -> None:
    """Tell the caching allocator the consumer stream uses these tensors (no early reuse)."""
    if isinstance(obj, torch.Tensor) and obj.device.type == "cuda":
        obj.record_stream(stream)
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            _record_stream(o, stream)
    elif isinstance(obj, dict):
        for o in obj.values():
            _record_stream(o, stream)


def prefetch_to_device(loader: Iterable[Any], device: str | torch.device) -> Iterator[Any]:
    """Yield the loader's batches on ``device``, copying batch i+1 while the caller works on batch i.

    On CUDA the copies run with ``non_blocking=True`` on a side stream from pinned memory (use
    ``DataLoader(pin_memory=True)``; unpinned tensors are pinned here), and the compute stream waits
    only for the copy of the batch it is about to use. Tensors nested in lists, tuples and dicts are
    moved; other objects (ids, paths, bytes) pass through. On CPU it just moves the batches.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for batch in loader:
            yield _to_device(batch, device, False)
        return
    side = torch.cuda.Stream(device)
    it = iter(loader)

    def fetch() -> tuple[bool, Any]:
        try:
            batch = next(it)
        except StopIteration:
            return False, None
        with torch.cuda.stream(side):
            return True, _to_device(batch, device, True)

    has_next, nxt = fetch()
    while has_next:
        main = torch.cuda.current_stream(device)
        main.wait_stream(side)
        cur = nxt
        _record_stream(cur, main)
        has_next, nxt = fetch()  # the next copy overlaps the caller's work on ``cur``
        yield cur


class FastForward:
    """A model prepared for inference throughput: eval mode, on the device, channels_last weights,
    bf16 autocast (CUDA, or CPU when asked), ``torch.inference_mode``. Call it on (B, 3, H, W)
    float batches; returns float32 outputs."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cuda", *, bf16: bool = True):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise IncompatibleError(f"device {device!r} but torch sees no CUDA GPU; use device 'cpu'")
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.bf16 = bool(bf16)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the model's device (a no-op context when bf16 is off)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self.autocast():
            return self.model(x).float()


def apply_cuda_fast_paths(model: nn.Module, device: str | torch.device = "cuda", *, bf16: bool = True) -> FastForward:
    """channels_last + bf16 autocast + inference mode for ``model``; see :class:`FastForward`."""
    return FastForward(model, device, bf16=bf16)


__all__ = ["FastForward", "GpuJpegDecoder", "IMAGENET_MEAN", "IMAGENET_STD", "PreprocessSpec",
           "apply_cuda_fast_paths", "jpeg_problem", "prefetch_to_device"]
