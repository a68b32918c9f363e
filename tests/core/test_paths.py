"""The test session's own data root and caches (tests/conftest.py): a run never writes into ~."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from zslretrieval.paths import DEFAULT_DATA_ROOT, resolve_cache_dir, resolve_data_root


def test_caches_and_data_root_are_the_sessions_own(tmp_path_factory):
    session = tmp_path_factory.getbasetemp().resolve()
    given = [os.environ[v] for v in ("ZSLR_DATA", "ZSLR_CACHE") if os.environ.get(v)]
    if any(not Path(p).resolve().is_relative_to(session) for p in given):
        pytest.skip("ZSLR_DATA / ZSLR_CACHE set by the user: the tests use them as given")
    for path in (resolve_data_root(None), resolve_cache_dir("onnx"), resolve_cache_dir("text")):
        assert path.resolve().is_relative_to(session), path
        assert not path.is_relative_to(DEFAULT_DATA_ROOT) and not path.resolve().is_relative_to(Path.home().resolve()), path
