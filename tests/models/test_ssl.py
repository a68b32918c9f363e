"""Semantic softmax loss (ssl): training, zero-shot transfer, ablation, checkpoints, determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model, list_models
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

from .toy import seen_subset, unseen_top1

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = {"hidden_dim": 64, "embed_dim": 32, "semantic_hidden_dim": 32, "batch_size": 64, "epochs": 15}


@pytest.fixture(scope="module")
def trained(data):
    model = create_model("ssl", 40, 16, SMALL)
    losses = model.fit(*seen_subset(*data), seed=0)
    return model, losses


def test_registered():
    assert "ssl" in list_models()


def test_loss_falls(trained):
    _, losses = trained
    assert len(losses) == SMALL["epochs"]
    assert losses[-1] < 0.7 * losses[0]


def test_beats_chance_on_unseen_classes(trained, data):
    model, _ = trained
    # 6 unseen classes: chance is 1/6.
    assert unseen_top1(model.scores, *data) > 0.5


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


def test_checkpoint_roundtrip(trained, data, tmp_path):
    model, _ = trained
    x, labels, att = data
    card = ModelCard(model="ssl", hparams=model.hparams.to_dict(), feature_dim=40, semantic_dims=[16],
                     dataset="toy", metric=model.metric)
    path = save_checkpoint(model, card, tmp_path / "ssl.pt", torch.from_numpy(att))
    loaded, card2, sem = load_checkpoint(path)
    assert card2.hparams == model.hparams.to_dict()
    xt, st = torch.from_numpy(x), torch.from_numpy(att)
    with torch.no_grad():
        assert torch.equal(loaded.embed_images(xt), model.eval().embed_images(xt))
        assert torch.equal(loaded.embed_classes(st), model.embed_classes(st))
    assert torch.equal(loaded.scores(xt, st), model.scores(xt, st))
    assert torch.equal(sem, st)


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


def test_pca_reduce_matches_exact_svd():
    """The randomised PCA (torch.pca_lowrank) spans the exact top-k principal subspace (full SVD,
    float64) of each reduced group; narrow groups pass through untouched."""
    from zslretrieval.models.layers import PCAReduce

    g = np.random.default_rng(3)
    # group 0: 30 dims with a clear 4-dim principal subspace; group 1: 3 dims (< k, kept as is)
    basis = np.linalg.qr(g.normal(size=(30, 4)))[0]
    a = g.normal(size=(500, 4)) * np.array([10.0, 8.0, 6.0, 5.0]) @ basis.T + 0.05 * g.normal(size=(500, 30)) + 2.0
    b = g.normal(size=(500, 3))
    x = torch.from_numpy(np.concatenate([a, b], 1).astype(np.float32))
    red = PCAReduce([30, 3], k=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        red.fit(x, torch.Generator().manual_seed(0))
    assert red.out_groups == [4, 3] and red.out_dim == 7
    centred = a - a.mean(0)
    v = np.linalg.svd(centred, full_matrices=False)[2][:4].T            # exact (30, 4)
    comp = red.comp0.double().numpy()
    np.testing.assert_allclose(comp @ comp.T, v @ v.T, atol=1e-3)      # same projector
    np.testing.assert_allclose(red.mean0.numpy(), a.mean(0), atol=1e-4)
    out = red(x)
    np.testing.assert_allclose(out[:, :4].numpy(), (a - a.mean(0)) @ comp, atol=1e-3)
    assert torch.equal(out[:, 4:], x[:, 30:])
    assert torch.equal(red.transform(x, batch=64), out)
    assert torch.equal(PCAReduce([33], k=0)(x), x)  # k=0: off
    with pytest.raises(InvalidInputError, match="pca_dim"):
        PCAReduce([33], k=-1)


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
