"""Checkpoints: tensors plus a JSON model card, loadable without unpickling code.

File layout (one ``torch.save`` dict, read back with ``weights_only=True``, so only tensors,
strings and plain containers are accepted -- never arbitrary objects)::

    {"format": "zslr-checkpoint/1",
     "card": "<JSON text>",               # see ModelCard
     "state_dict": {name: Tensor},         # the model's parameters and buffers
     "class_semantics": Tensor (C, A),     # descriptors of the dataset's classes, for --class
     "sentence_map": {name: Tensor}}       # optional: free text -> class descriptor (query.sentences)

An optional ``sentence_map`` (tensors only) is attached to the loaded model as ``model.sentence_map``
(``None`` when the file has none); older files load unchanged.

The card is also written beside the checkpoint as ``<file>.card.json`` for people to read;
the copy inside the checkpoint is the one that counts.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError, DataNotFoundError
from ..fileio import atomic_write
from . import get_model_class
from .base import ZslModel

FORMAT = "zslr-checkpoint/1"


@dataclasses.dataclass
class ModelCard:
    model: str
    hparams: dict[str, Any]
    feature_dim: int
    semantic_dims: list[int]
    dataset: str
    split: str = "trainval"                      # the images it was trained on
    seed: int = 0
    metric: str = "ip"                           # how embeddings are compared (models.base)
    class_names: list[str] = dataclasses.field(default_factory=list)
    seen_classes: list[str] = dataclasses.field(default_factory=list)
    unseen_classes: list[str] = dataclasses.field(default_factory=list)
    vocabulary: list[str] = dataclasses.field(default_factory=list)   # attribute names, in column order
    semantic_norm: str = "l2"                    # how class descriptors were normalised ("l2", "none")
    semantic_modalities: list[str] = dataclasses.field(default_factory=lambda: ["attributes"])
    text_encoder: str = ""                       # sentence encoder of the "text" modality (zslretrieval.text)
    feature_source: str = ""                     # e.g. "xlsa17 res101", "efficientnet-lite0"
    feature_transform: str = "none"              # e.g. "hellinger"
    selection: dict[str, Any] = dataclasses.field(default_factory=dict)  # how hparams were chosen (val)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0
    created: str = dataclasses.field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    zslr_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def save_checkpoint(model: ZslModel, card: ModelCard, path: str | os.PathLike,
                    class_semantics: torch.Tensor | None = None,
                    sentence_map: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` and its card atomically; returns the path written. ``sentence_map``: named
    tensors of a free-text map (``query.sentences.SentenceMap.to_tensors``), stored as they are."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "card": card.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if class_semantics is not None:
        payload["class_semantics"] = torch.as_tensor(class_semantics, dtype=torch.float32).cpu()
    if sentence_map is not None:
        payload["sentence_map"] = {k: torch.as_tensor(v).cpu() for k, v in sentence_map.items()}
    atomic_write(path, lambda f: torch.save(payload, f))
    atomic_write(path.with_name(path.name + ".card.json"), lambda f: f.write(card.to_json().encode()))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> tuple[ZslModel, ModelCard, torch.Tensor | None]:
    """Load ``(model, card, class_semantics)``; raises CheckpointError on anything unexpected."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint not found: {path} (create one with `zslr train ... --out {path}`)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, pickled objects, not a torch file at all
        raise CheckpointError(f"{path}: not a readable zslr checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: checkpoint format {got!r}; expected {FORMAT!r}")
    try:
        card = ModelCard.from_json(payload["card"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: model card missing or invalid ({e})") from e
    model = get_model_class(card.model)(card.feature_dim, card.semantic_dims, card.hparams)
    try:
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: weights do not fit model {card.model!r} ({e})") from e
    model.eval()
    extra = payload.get("sentence_map")
    if extra is not None and not (isinstance(extra, dict) and all(isinstance(v, torch.Tensor) for v in extra.values())):
        raise CheckpointError(f"{path}: sentence_map entry is {type(extra).__name__}; expected named tensors")
    model.sentence_map = extra  # read by query.sentences (free-text queries); None when absent
    return model, card, payload.get("class_semantics")
