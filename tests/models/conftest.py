"""Fixtures for tests/models: the toy zero-shot data of ``toy.py``."""
import pytest

from .toy import toy_zsl


@pytest.fixture(scope="module")
def data():
    """(x (N, 40), labels (N,), attributes (24, 16)) from ``toy.toy_zsl()``."""
    return toy_zsl()
