"""Session fixtures for the dataset tests (real xlsa17 splits with generated features)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from .fakes import XLSA17, make_fake_root


@pytest.fixture(scope="session")
def fake_xlsa17_roots(shared_data: Path, tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """One fake v5 root per benchmark, built once per session."""
    return {name: make_fake_root(shared_data, tmp_path_factory.mktemp(name.lower()), name, image_files=name == "CUB")
            for name in XLSA17}
