"""The Hugging Face offline switches: a local model folder must never fall back to a model hub.

A leaf of ``text``: both encoders (``encoder`` with sentence-transformers, ``onnx_encoder``'s one-time
export with transformers) set these before importing a Hugging Face library.
"""
from __future__ import annotations

import os

# Hugging Face libraries read these when imported; set them before anything imports transformers.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1"}


def set_offline() -> None:
    """Force the Hugging Face offline switches (process-wide): a local path must never fall back to the hub."""
    os.environ.update(_OFFLINE_ENV)
    # the weight-loading progress bar would land in every CLI query's stderr
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
