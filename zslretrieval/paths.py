"""Where the engine keeps data it reads and caches it builds (below every layer, imports nothing of ours)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_ROOT = Path("~/.local/share/zslretrieval/data").expanduser()


def resolve_data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """``--data-root``, else ``$ZSLR_DATA``, else ``~/.local/share/zslretrieval/data``."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("ZSLR_DATA")
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_ROOT


def resolve_cache_dir(kind: str) -> Path:
    """Folder of one kind of derived cache (``text`` embeddings, ``onnx`` backbone graphs):
    ``$ZSLR_CACHE/<kind>``, else ``<data root>/cache/<kind>``. ``ZSLR_CACHE`` keeps caches out of a
    shared, read-mostly data folder. Everything in it can be rebuilt; nothing in it is trusted
    without its content key."""
    env = os.environ.get("ZSLR_CACHE")
    if env:
        return Path(env).expanduser() / kind
    return resolve_data_root(None) / "cache" / kind
