"""ACMR: two aligned VAEs (cross-reconstruction, W2 alignment, VSA, IEM), what its checkpoint leaves
out, GZSL classifier. Loss, unseen top-1 and the checkpoint round trip: ``test_contract.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model
from zslretrieval.models.acmr import _w2_diag
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

from .toy import SEEN, TOY_HPARAMS, seen_subset, unseen_top1

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = TOY_HPARAMS["acmr"]


@pytest.fixture(scope="module")
def trained(toy_trained):
    """(model, losses): the contract's acmr (TOY_HPARAMS, seed 0), trained once per session."""
    return toy_trained("acmr")


def _align(model, data) -> float:
    with torch.no_grad():
        return float(model.loss_terms(*seen_subset(*data))["align"])


def test_w2_closed_form():
    # Hand-worked: mu differ by (3, 4) -> 25; sigmas 1 vs 2 in both dims -> 1 + 1; sqrt(27).
    mu1, mu2 = torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]])
    lv1, lv2 = torch.zeros(1, 2), torch.full((1, 2), float(np.log(4.0)))
    torch.testing.assert_close(_w2_diag(mu1, lv1, mu2, lv2), torch.tensor([27.0]).sqrt(), atol=1e-6, rtol=1e-6)


def test_alignment_term_decreases(data):
    """With the alignment weight dominating, the W2 distance between the two posteriors falls
    epoch after epoch once warm-up is over (with the default weight it competes with the latents
    spreading out to carry information, so it is compared against no alignment below)."""
    x, y, s = seen_subset(*data)
    model = create_model("acmr", 40, 16, {**SMALL, "align_weight": 30.0})
    align = []

    def probe(_e):
        with torch.no_grad():
            align.append(float(model.loss_terms(x, y, s)["align"]))

    model.fit(x, y, s, seed=0, on_epoch=probe)
    w = SMALL["warmup_epochs"]
    assert align[-1] < 0.6 * align[w - 1]
    assert all(b < a * 1.05 for a, b in zip(align[w - 1:], align[w:]))


def test_alignment_loss_brings_posteriors_together(trained, data):
    model, _ = trained
    x, y, s = seen_subset(*data)
    free = create_model("acmr", 40, 16, {**SMALL, "align_weight": 0.0, "cross_weight": 0.0})
    free.fit(x, y, s, seed=0)
    assert _align(model, data) < 0.5 * _align(free, data)


def test_gzsl_latent_classifier(trained, data):
    model, _ = trained
    x, labels, att = data
    st, xt = torch.from_numpy(att), torch.from_numpy(x)
    sc = model.gzsl_scores(xt, st)
    assert sc.shape == (len(x), len(att))
    assert torch.equal(sc, model.gzsl_scores(xt, st))  # cached / deterministic
    # A fresh classifier (cache dropped) gives the same scores: it is seeded by cls_seed.
    model._cls_cache = None
    assert torch.equal(sc, model.gzsl_scores(xt, st))
    assert unseen_top1(model.gzsl_scores, *data) > 0.3
    # With real seen-image latents (CADA-VAE recipe) seen images are recognised among all 24
    # classes well above chance (1/24); short toy training leaves wide posteriors, hence the margin.
    m = np.isin(labels, SEEN)
    sc_seen = model.gzsl_scores(xt[m], st, seen_x=xt[m], seen_y=torch.from_numpy(labels[m]))
    assert (sc_seen.argmax(1).numpy() == labels[m]).mean() > 3 / 24
    with pytest.raises(InvalidInputError, match="seen_y"):
        model.latent_classifier(st, seen_x=xt[:3])


def test_iem_critic_learns(trained, data):
    """The IEM term is what trains the critics: with it, the JSD bound falls far below the one of
    the same model trained without it (iem_weight=0 leaves the critics at their initialisation)."""
    model, _ = trained
    x, y, s = seen_subset(*data)
    without = create_model("acmr", 40, 16, {**SMALL, "iem_weight": 0.0})
    without.fit(x, y, s, seed=0)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained_iem = float(model.loss_terms(x, y, s, perm=perm)["iem"])
        without_iem = float(without.loss_terms(x, y, s, perm=perm)["iem"])
    # Untrained critics sit near 2 * 2 log 2 = 2.77; training with the term lowers it.
    assert trained_iem < without_iem - 0.3


def test_vsa_aligns_images_with_their_class_descriptors(data):
    """VSA trains one classifier on the latents of both modalities, so an image's latent mean
    must fall on its class descriptor's side. With the other cross-modal terms off (cross
    reconstruction and W2 alignment), VSA is the only link between the two VAEs: seen images are
    recognised by cosine to the class latent means far better with it than without it."""
    x, y, s = seen_subset(*data)

    def seen_top1(hp):
        m = create_model("acmr", 40, 16, {**SMALL, "align_weight": 0.0, "cross_weight": 0.0, **hp})
        m.fit(x, y, s, seed=0)
        return float((m.scores(x, s).argmax(1) == y).float().mean())

    with_vsa, without = seen_top1({"vsa_weight": 3.0}), seen_top1({"vsa_weight": 0.0})
    assert with_vsa > without + 0.3, (with_vsa, without)


def test_checkpoint_leaves_out_the_training_head_and_keeps_the_gzsl_classifier(trained, data, tmp_path):
    model, _ = trained
    x, _, att = data
    card = ModelCard(model="acmr", hparams=model.hparams.to_dict(), feature_dim=40, semantic_dims=[16],
                     dataset="toy", metric=model.metric)
    path = save_checkpoint(model, card, tmp_path / "acmr.pt", torch.from_numpy(att))
    loaded, _, _ = load_checkpoint(path)
    assert not any("vsa" in k for k in loaded.state_dict())  # the training-only head is not saved
    xt, st = torch.from_numpy(x), torch.from_numpy(att)
    assert torch.equal(loaded.gzsl_scores(xt, st), model.gzsl_scores(xt, st))


def test_bad_inputs():
    model = create_model("acmr", 40, 16, SMALL)
    with pytest.raises(InvalidInputError, match="latent_dim"):
        create_model("acmr", 40, 16, {"latent_dim": 0})
    with pytest.raises(InvalidInputError, match=r"expected \(N, 40\)"):
        model.fit(torch.zeros(4, 41), torch.zeros(4, dtype=torch.long), torch.rand(2, 16))
    with pytest.raises(InvalidInputError, match=r"expected \(N, 16\)"):
        model.gzsl_scores(torch.zeros(4, 40), torch.rand(2, 15))
