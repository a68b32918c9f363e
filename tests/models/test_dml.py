"""Zero-shot DML: gradient reversal, group attention, metric + semantic losses, one group without PCA.
Loss, unseen top-1 and the checkpoint round trip (feature groups included): ``test_contract.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model
from zslretrieval.models.dml import GradientReversal, grad_reverse

from .toy import SEEN, TOY_HPARAMS, seen_subset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = TOY_HPARAMS["dml"]


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


def test_one_group_without_pca(data):
    x, y, s = seen_subset(*data)
    model = create_model("dml", 40, 16, {**SMALL, "feature_groups": None, "pca_dim": 0, "epochs": 2})
    assert model.groups == [40]
    losses = model.fit(x, y, s, seed=1)
    assert len(losses) == 2 and all(np.isfinite(losses))
