"""save/load through models.checkpoint gives identical predictions; bad files raise CheckpointError."""
from __future__ import annotations

import pickle

import pytest
import torch

from zslretrieval.errors import CheckpointError, DataNotFoundError
from zslretrieval.models import create_model
from zslretrieval.models.checkpoint import FORMAT, ModelCard, load_checkpoint, save_checkpoint

from .toy import linear_toy


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data():
    return linear_toy(0, n=80, d=12, z=6, a=5, non_negative=True)


# Every model's default-shaped round trip is in test_contract.py; these are the variants that carry
# other fitted state (decoder direction, feature standardisation / whitening, an RBF map).
CASES = [("sae", {"lam": 10.0, "direction": "decoder"}),
         ("dem", {"hidden": 16, "epochs": 3, "feature_norm": "standardize"}),
         ("dem", {"hidden": 16, "epochs": 3, "feature_norm": "whiten", "whiten_dim": 6}),
         ("eszsl", {"gamma": 0.5, "lam": 2.0, "kernel": "rbf", "landmarks": 32}),
         ("ensemble", {"pool": ["eszsl", "dem"], "member_hparams": {"eszsl": {"gamma": 0.5, "lam": 2.0},
                                                                    "dem": {"hidden": 16, "epochs": 3,
                                                                            "feature_norm": "whiten",
                                                                            "whiten_dim": 6}}})]


@pytest.mark.parametrize("name,hp", CASES)
def test_roundtrip_identical_predictions(tmp_path, name, hp):
    x, y, s = _data()
    model = create_model(name, x.shape[1], [s.shape[1]], hp)
    model.fit(x, y, s, seed=0)
    card = ModelCard(model=name, hparams=model.hparams.to_dict(), feature_dim=x.shape[1], semantic_dims=[s.shape[1]],
                     dataset="toy", metric=model.metric, vocabulary=[f"a{i}" for i in range(s.shape[1])])
    path = save_checkpoint(model, card, tmp_path / f"{name}.pt", class_semantics=s)
    loaded, card2, sem = load_checkpoint(path)
    assert type(loaded) is type(model) and card2.hparams == card.hparams and card2.vocabulary == card.vocabulary
    torch.testing.assert_close(sem, s)
    before, after = model.scores(x, s), loaded.scores(x, s)
    assert torch.equal(before, after)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


class NotACheckpoint:
    """An arbitrary class: unpickling it would run code, so weights_only loading must refuse it."""

    def __init__(self):
        self.weights = [1, 2, 3]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "card": NotACheckpoint()}, path)
    with pytest.raises(CheckpointError, match="not a readable zslr checkpoint"):
        load_checkpoint(path)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="plain.pkl"):
        load_checkpoint(plain)


def test_wrong_format_and_garbage(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"format": "someone-else/3", "state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="'someone-else/3'.*zslr-checkpoint/1"):
        load_checkpoint(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(text)
    with pytest.raises(DataNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_card(tmp_path):
    x, y, s = _data()
    model = create_model("eszsl", x.shape[1], [s.shape[1]], {})
    model.fit(x, y, s)
    card = ModelCard(model="eszsl", hparams=model.hparams.to_dict(), feature_dim=x.shape[1] + 1,
                     semantic_dims=[s.shape[1]], dataset="toy")
    path = save_checkpoint(model, card, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit model 'eszsl'"):
        load_checkpoint(path)
