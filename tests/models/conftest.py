"""Fixtures for tests/models: the toy zero-shot data of ``toy.py`` and every model trained on it once."""
from __future__ import annotations

import pytest
import torch

from zslretrieval.models import create_model

from .toy import TOY_HPARAMS, seen_subset, toy_zsl


@pytest.fixture(scope="module")
def data():
    """(x (N, 40), labels (N,), attributes (24, 16)) from ``toy.toy_zsl()``."""
    return toy_zsl()


@pytest.fixture(scope="session")
def toy_trained():
    """``toy_trained(name) -> (model, per-epoch losses)``: the model built with ``TOY_HPARAMS[name]``
    and fitted (seed 0) on the seen classes of ``toy_zsl()``; trained once per session, so the
    contract test and a model's own file share it. Callers must not modify the model."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            before = torch.get_num_threads()
            torch.set_num_threads(1)  # tiny models: see one_torch_thread in tests/conftest.py
            try:
                model = create_model(name, 40, 16, TOY_HPARAMS[name])
                cache[name] = (model, model.fit(*seen_subset(*toy_zsl()), seed=0))
            finally:
                torch.set_num_threads(before)
        return cache[name]

    return get
