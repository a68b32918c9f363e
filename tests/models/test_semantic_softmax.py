"""Semantic softmax loss (``models/semantic_softmax.py``, registered as ``ssl``): the L2 constraint
and its ablation, PCA saved in checkpoints, determinism, bad inputs. Loss, unseen top-1 and the
checkpoint round trip: ``test_contract.py``."""
from __future__ import annotations

import pytest
import torch

from zslretrieval.errors import InvalidInputError, UnknownNameError
from zslretrieval.models import MODELS, create_model, list_models
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from zslretrieval.models.semantic_softmax import SemanticSoftmax

from .toy import TOY_HPARAMS, seen_subset

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = TOY_HPARAMS["ssl"]


def test_registered_as_ssl_with_a_spelled_out_alias():
    # `--model ssl` is what users type and what checkpoints record; the alias is not a second model
    assert "ssl" in list_models() and "semantic-softmax" not in list_models()
    assert MODELS.canonical("semantic-softmax") == "ssl"
    model = create_model("Semantic-Softmax", 40, 16, SMALL)
    assert type(model) is SemanticSoftmax and model.name == "ssl"
    with pytest.raises(UnknownNameError, match="semantic_softmax"):
        create_model("semantic_softmax", 40, 16)


def test_l2_constraint_ablation_changes_loss(data):
    x, y, s = seen_subset(*data)
    on = create_model("ssl", 40, 16, {**SMALL, "l2_weight": 0.5})
    off = create_model("ssl", 40, 16, {**SMALL, "l2_weight": 0.5, "use_l2_constraint": False})
    off.load_state_dict(on.state_dict())
    on.eval(), off.eval()
    t_on, t_off = on.loss_terms(x, y, s), off.loss_terms(x, y, s)
    assert torch.equal(t_on["ce"], t_off["ce"])
    assert t_on["l2"] > 0
    torch.testing.assert_close(t_on["loss"] - t_off["loss"], 0.5 * t_on["l2"])
    # The paper's form: the visual feature v(x) (PCA-reduced input over one global scale) against the
    # prototype R g(s_y) reconstructed from the class semantics in that visual space.
    with torch.no_grad():
        v = on.reduce(x) / on.v_scale
        proto = on.visual_prototypes(s)
    torch.testing.assert_close(t_on["l2"], (v - proto[y]).pow(2).mean(1).mean())
    # It is not a function of the softmax logits: scaling the generated weights (which leaves every
    # cosine logit, hence the CE, unchanged) moves it.
    with torch.no_grad():
        on.semantic_net[-1].weight.mul_(3.0)
        on.semantic_net[-1].bias.mul_(3.0)
    t_scaled = on.loss_terms(x, y, s)
    torch.testing.assert_close(t_scaled["ce"], t_on["ce"])
    assert not torch.isclose(t_scaled["l2"], t_on["l2"])


def test_l2_constraint_pulls_prototypes_onto_class_means(data):
    """Trained with the constraint, each seen class's reconstructed prototype is near its images'
    mean visual feature; without it (ablation) the reconstruction is never trained."""
    x, y, s = seen_subset(*data)
    on = create_model("ssl", 40, 16, {**SMALL, "l2_weight": 5.0})
    off = create_model("ssl", 40, 16, {**SMALL, "l2_weight": 5.0, "use_l2_constraint": False})
    on.fit(x, y, s, seed=0)
    off.fit(x, y, s, seed=0)

    def gap(m):
        with torch.no_grad():
            v = m.reduce(x) / m.v_scale
            means = torch.stack([v[y == c].mean(0) for c in range(len(s))])
            return float((m.visual_prototypes(s) - means).pow(2).mean())
    assert gap(on) < 0.5 * gap(off), (gap(on), gap(off))


def test_ablation_trains_differently(data):
    args = seen_subset(*data)
    a = create_model("ssl", 40, 16, {**SMALL, "epochs": 2})
    b = create_model("ssl", 40, 16, {**SMALL, "epochs": 2, "use_l2_constraint": False})
    a.fit(*args, seed=0), b.fit(*args, seed=0)
    assert not torch.equal(a.image_net[0].weight, b.image_net[0].weight)


def test_fit_is_deterministic_and_epochs_are_a_prefix(data):
    args = seen_subset(*data)
    a = create_model("ssl", 40, 16, SMALL)
    torch.manual_seed(123)  # the global RNG must not matter
    la = a.fit(*args, seed=7, epochs=3)
    b = create_model("ssl", 40, 16, SMALL)
    snap = {}

    def grab(e):
        if e == 3:
            snap.update({k: v.clone() for k, v in b.state_dict().items()})
        torch.rand(5)  # a callback drawing random numbers must not change training

    lb = b.fit(*args, seed=7, epochs=5, on_epoch=grab)
    assert la == lb[:3]
    for k, v in a.state_dict().items():
        assert torch.equal(v, snap[k]), k


def test_bad_inputs():
    model = create_model("ssl", 40, 16, SMALL)
    x, y, s = torch.zeros(10, 40), torch.zeros(10, dtype=torch.long), torch.rand(3, 16)
    with pytest.raises(InvalidInputError, match=r"expected \(N, 40\)"):
        model.fit(torch.zeros(10, 39), y, s)
    with pytest.raises(InvalidInputError, match=r"\[0, 2\]"):
        model.fit(x, torch.full((10,), 3), s)
    with pytest.raises(InvalidInputError, match=r"expected \(C, 16\)"):
        model.fit(x, y, torch.rand(3, 15))
    with pytest.raises(InvalidInputError, match="unknown hyper-parameter"):
        create_model("ssl", 40, 16, {"hiden_dim": 3})
    with pytest.raises(InvalidInputError, match="epochs"):
        model.fit(x, y, s, epochs=-1)
    with pytest.raises(InvalidInputError, match=r"expected \(N, 16\)"):
        model.embed_classes(torch.rand(3, 4))


def test_pca_inside_the_model_is_saved(data, tmp_path):
    x, labels, att = data
    model = create_model("ssl", 40, 16, {**SMALL, "pca_dim": 8, "epochs": 2})
    model.fit(*seen_subset(x, labels, att), seed=0)
    assert model.reduce.comp0.abs().sum() > 0
    card = ModelCard(model="ssl", hparams=model.hparams.to_dict(), feature_dim=40, semantic_dims=[16], dataset="toy")
    loaded, _, _ = load_checkpoint(save_checkpoint(model, card, tmp_path / "p.pt"))
    assert torch.equal(loaded.reduce.comp0, model.reduce.comp0)
    xt = torch.from_numpy(x)
    assert torch.equal(loaded.scores(xt, torch.from_numpy(att)), model.scores(xt, torch.from_numpy(att)))
