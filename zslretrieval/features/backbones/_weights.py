"""Reading a weight file into a state dict, with errors that say what to do."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ...errors import CheckpointError, WeightsNotFoundError


def load_state_dict_file(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A ``torch.save``d state dict (or ``{"state_dict": ...}``/``{"model": ...}``) read with weights_only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"{what} weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, pickled code, truncated download
        raise CheckpointError(f"{path}: not a readable {what} state dict ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a {what} state dict (name -> tensor), got {type(obj).__name__}")
    return obj


def load_into(net: torch.nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike, what: str,
              optional_prefixes: tuple[str, ...] = ()) -> None:
    """Strict load, except that keys under ``optional_prefixes`` (a classifier head) may be absent."""
    # checkpoints saved from DataParallel prefix every key with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise CheckpointError(f"{path}: weights do not fit {what} ({e})") from e
    missing = [k for k in missing if not k.startswith(optional_prefixes)]
    unexpected = [k for k in unexpected if not k.startswith(optional_prefixes)]
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
