"""Zero-shot DML: gradient reversal, group attention, metric + semantic losses, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model, list_models
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from zslretrieval.models.dml import GradientReversal, grad_reverse

from .toy import SEEN, seen_subset, unseen_top1

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GROUPS = [24, 16]
SMALL = {"feature_groups": GROUPS, "pca_dim": 12, "group_dim": 32, "attention_dim": 16, "embed_dim": 32,
         "semantic_hidden_dim": 32, "batch_size": 64, "epochs": 15}


@pytest.fixture(scope="module")
def trained(data):
    model = create_model("dml", 40, 16, SMALL)
    losses = model.fit(*seen_subset(*data), seed=0)
    return model, losses


def test_registered():
    assert "dml" in list_models()


def test_gradient_reversal_on_a_tiny_case():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    c = torch.tensor([0.5, 1.0, -4.0])
    y = grad_reverse(x, 0.25)
    assert torch.equal(y, x)                       # identity forward
    (y * c).sum().backward()
    assert torch.equal(x.grad, -0.25 * c)          # d/dx of sum(c*x) = c, reversed and scaled
    x.grad = None
    (GradientReversal(2.0)(x) ** 2).sum().backward()
    assert torch.equal(x.grad, -2.0 * 2 * x.detach())


def test_adversarial_branch_reverses_gradient_into_the_embedding(data):
    """The adversary's CE pulls the classifier's weights downhill but pushes the embedding uphill:
    the embedding's gradient from the reversed branch is exactly -adv_weight x the plain gradient."""
    x, y, s = seen_subset(*data)
    model = create_model("dml", 40, 16, {**SMALL, "adv_weight": 0.5, "dropout": 0.0})
    model.reduce.fit(x, torch.Generator().manual_seed(0))
    head = torch.nn.Linear(SMALL["embed_dim"], len(SEEN))
    emb = torch.nn.functional.normalize(model.embed_images(x), dim=1)
    emb_param = model.head[1].weight

    def grads(reverse: bool):
        e = grad_reverse(emb, 0.5) if reverse else emb
        loss = torch.nn.functional.cross_entropy(head(e), y)
        return torch.autograd.grad(loss, [emb_param, head.weight], retain_graph=True)

    (g_emb_plain, g_head_plain), (g_emb_rev, g_head_rev) = grads(False), grads(True)
    assert g_emb_plain.abs().sum() > 0
    torch.testing.assert_close(g_emb_rev, -0.5 * g_emb_plain)
    torch.testing.assert_close(g_head_rev, g_head_plain)   # the adversary itself is not reversed
    # loss_terms wires it the same way: its adv term's gradient on the embedding is the reversed one.
    terms = model.loss_terms(x, y, s, adv_head=head)
    (g_from_terms,) = torch.autograd.grad(terms["adv"], [emb_param])
    torch.testing.assert_close(g_from_terms, g_emb_rev)


def test_group_attention(data):
    x, _, _ = data
    model = create_model("dml", 40, 16, SMALL)
    xt = torch.from_numpy(x)
    model.reduce.fit(xt, torch.Generator().manual_seed(0))
    assert model.groups == [12, 12]  # both groups wider than pca_dim=12
    fused, att = model.group_attention(model.reduce(xt))
    assert fused.shape == (len(x), SMALL["group_dim"]) and att.shape == (len(x), 2)
    torch.testing.assert_close(att.sum(1), torch.ones(len(x)))
    with pytest.raises(InvalidInputError, match="summing to the feature dim 40"):
        create_model("dml", 40, 16, {"feature_groups": [20, 10]})


def test_loss_falls(trained):
    _, losses = trained
    assert len(losses) == SMALL["epochs"]
    assert losses[-1] < 0.8 * losses[0]


def test_beats_chance_on_unseen_classes(trained, data):
    model, _ = trained
    # 6 unseen classes: chance is 1/6.
    assert unseen_top1(model.scores, *data) > 0.5


def test_checkpoint_roundtrip(trained, data, tmp_path):
    model, _ = trained
    x, _, att = data
    card = ModelCard(model="dml", hparams=model.hparams.to_dict(), feature_dim=40, semantic_dims=[16],
                     dataset="toy", metric=model.metric)
    path = save_checkpoint(model, card, tmp_path / "dml.pt", torch.from_numpy(att))
    loaded, card2, _ = load_checkpoint(path)
    assert card2.hparams["feature_groups"] == GROUPS
    xt, st = torch.from_numpy(x), torch.from_numpy(att)
    assert torch.equal(loaded.scores(xt, st), model.scores(xt, st))
    with torch.no_grad():
        assert torch.equal(loaded.embed_images(xt), model.eval().embed_images(xt))


def test_one_group_without_pca(data):
    x, y, s = seen_subset(*data)
    model = create_model("dml", 40, 16, {**SMALL, "feature_groups": None, "pca_dim": 0, "epochs": 2})
    assert model.groups == [40]
    losses = model.fit(x, y, s, seed=1)
    assert len(losses) == 2 and all(np.isfinite(losses))
