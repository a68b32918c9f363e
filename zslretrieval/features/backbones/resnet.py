"""ResNet-101 with the classifier removed: 2048-d global-average-pooled features.

This is the network family of the xlsa17 ``res101.mat`` features (ImageNet-trained ResNet-101,
pool5). Weights come from torchvision's cache or ``--weights FILE``; never downloaded here.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet101_Weights, resnet101

from ...errors import WeightsNotFoundError
from ...fileio import file_digest
from . import BACKBONES, Backbone, PreprocessSpec
from ._weights import load_into, load_state_dict_file

NAME = "resnet101"


def _spec(weights: ResNet101_Weights) -> PreprocessSpec:
    tf = weights.transforms()
    return PreprocessSpec(resize=int(tf.resize_size[0]), crop=int(tf.crop_size[0]), mean=tuple(tf.mean),
                          std=tuple(tf.std), interpolation=tf.interpolation.value)


def cached_weight_files() -> dict[ResNet101_Weights, Path]:
    """Where torchvision keeps each ImageNet weight file (``$TORCH_HOME/hub/checkpoints/<file>``)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return {w: folder / Path(urlparse(w.url).path).name for w in ResNet101_Weights}


def _not_found() -> WeightsNotFoundError:
    files = cached_weight_files()
    v1 = ResNet101_Weights.IMAGENET1K_V1
    return WeightsNotFoundError(
        f"ResNet-101 ImageNet weights not found offline (nothing is downloaded). Put {files[v1].name} "
        f"(IMAGENET1K_V1, the xlsa17 family) or {files[ResNet101_Weights.IMAGENET1K_V2].name} (V2) in "
        f"{files[v1].parent}/, or pass --weights FILE. On a connected machine: "
        f"`python -c \"import torchvision; torchvision.models.resnet101(weights='IMAGENET1K_V1')\"` then copy "
        f"~/.cache/torch/hub/checkpoints/{files[v1].name}, or download {v1.url}")


@BACKBONES.register(NAME, aliases=("res101", "resnet-101"))
def load_resnet101(weights: str | os.PathLike | None = None, device: str = "cpu") -> Backbone:
    net = resnet101(weights=None)
    if weights is None:
        found = [(w, p) for w, p in cached_weight_files().items() if p.is_file()]
        if not found:
            raise _not_found()
        which, path = found[0]  # V1 first: it is what the xlsa17 features were computed with
        spec, weights_id = _spec(which), f"torchvision:{which.name}"
    else:
        path = Path(weights).expanduser()
        spec = _spec(ResNet101_Weights.IMAGENET1K_V1)
        weights_id = f"file:{path.name}:{file_digest(path)[:16]}" if path.is_file() else str(path)
    load_into(net, load_state_dict_file(path, "ResNet-101"), path, "ResNet-101", optional_prefixes=("fc.",))
    net.fc = nn.Identity()
    return Backbone(NAME, net, 2048, spec, weights_id, weights_path=path)
