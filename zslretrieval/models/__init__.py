"""Zero-shot embedding models by name (``--model``).

    create_model("dem", feature_dim=2048, semantic_dims=[85], hparams={...}) -> ZslModel
"""
from __future__ import annotations

from collections.abc import Sequence

from ..registry import Registry
from .base import Hparams, ZslModel, pairwise_scores

MODELS: Registry[type[ZslModel]] = Registry("model")


def list_models() -> list[str]:
    _import_all()
    return MODELS.names()


def get_model_class(name: str) -> type[ZslModel]:
    _import_all()
    return MODELS.get(name)


def create_model(name: str, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: Hparams | dict | None = None) -> ZslModel:
    return get_model_class(name)(feature_dim, semantic_dims, hparams)


def _import_all() -> None:
    # One file per model; each registers itself with @MODELS.register(...).
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in {"base", "checkpoint", "layers", "training"} and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


__all__ = ["MODELS", "Hparams", "ZslModel", "create_model", "get_model_class", "list_models", "pairwise_scores"]
