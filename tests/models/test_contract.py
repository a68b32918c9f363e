"""The contract every registered model keeps (``models.list_models()``), on the shared toy data:
training lowers the loss, unseen classes are recognised well above chance, and a checkpoint round
trip gives identical embeddings and scores. Model-specific behaviour lives in ``test_<model>.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.models import get_model_class, list_models
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

from .toy import TOY_HPARAMS, UNSEEN, unseen_top1

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The package's own models: test fakes (tests/index/fakes.py registers tiny-linear / tiny-l2) may have
# joined the registry earlier in the session and keep no contract.
MODELS = [m for m in list_models() if get_model_class(m).__module__.startswith("zslretrieval.")]
ITERATIVE = [m for m in MODELS if get_model_class(m).iterative]

# Minimum per-class top-1 on the 6 unseen toy classes (chance 1/6), each a margin below what the
# model reaches with TOY_HPARAMS, never below twice chance.
MIN_UNSEEN_TOP1 = {"acmr": 0.4, "dem": 0.6, "dml": 0.5, "ensemble": 0.8, "eszsl": 0.8, "sae": 0.8, "ssl": 0.5}
# The last epoch's loss is below this fraction of the loss at the first epoch trained with the final
# loss weights (a warm-up, as in acmr, raises the total loss while it ramps the weights up).
MAX_LOSS_RATIO = {"acmr": 0.9, "dem": 0.7, "dml": 0.8, "ssl": 0.7}


def test_the_contract_covers_every_registered_model():
    assert set(TOY_HPARAMS) == set(MODELS) == set(MIN_UNSEEN_TOP1)
    assert set(MAX_LOSS_RATIO) == set(ITERATIVE)


@pytest.mark.parametrize("name", ITERATIVE)
def test_training_lowers_the_loss(name, toy_trained):
    model, losses = toy_trained(name)
    epochs = TOY_HPARAMS[name]["epochs"]
    assert len(losses) == epochs and all(np.isfinite(losses))
    final = model.loss_weights(epochs)
    first_full = next(e for e in range(1, epochs + 1) if model.loss_weights(e) == final)
    assert first_full < epochs, "the loss weights never settle before the last epoch"
    assert losses[-1] < MAX_LOSS_RATIO[name] * losses[first_full - 1], losses


@pytest.mark.parametrize("name", MODELS)
def test_beats_chance_on_unseen_classes(name, toy_trained, data):
    model, losses = toy_trained(name)
    assert losses and all(np.isfinite(losses))
    assert unseen_top1(model.scores, *data) > MIN_UNSEEN_TOP1[name]


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip_gives_identical_scores(name, toy_trained, data, tmp_path):
    model, _ = toy_trained(name)
    x, _, att = data
    xt, st = torch.from_numpy(x), torch.from_numpy(att)
    card = ModelCard(model=name, hparams=model.hparams.to_dict(), feature_dim=40, semantic_dims=[16],
                     dataset="toy", metric=model.metric, vocabulary=[f"a{i}" for i in range(16)])
    path = save_checkpoint(model, card, tmp_path / f"{name}.pt", st)
    loaded, card2, sem = load_checkpoint(path)
    assert type(loaded) is type(model) and not loaded.training
    assert card2.hparams == model.hparams.to_dict() and card2.vocabulary == card.vocabulary
    assert card2.metric == model.metric
    assert torch.equal(sem, st)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        assert torch.equal(loaded.embed_images(xt), model.embed_images(xt))
        assert torch.equal(loaded.embed_classes(st), model.embed_classes(st))
    assert torch.equal(loaded.scores(xt, st), model.scores(xt, st))
    assert torch.equal(loaded.scores(xt, st[UNSEEN]), model.scores(xt, st[UNSEEN]))
