"""DEM: the loss approaches its floor, fusion, determinism, inference rule, feature normalisations.
Loss falling, unseen top-1 on the toy data and the checkpoint round trip: ``test_contract.py``."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.errors import InvalidInputError
from zslretrieval.metrics import per_class_top1
from zslretrieval.models.dem import Dem


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_classes=16, n_unseen=5, n_val=2, n_attributes=16, images_per_class=30,
                        feature_dim=24, hidden_dim=32, feature_noise=0.3, seed=1)
    seen = ds.split_classes("trainval")
    unseen = ds.split_classes("test_unseen")
    local = {int(c): i for i, c in enumerate(seen)}
    xs, ls = ds.subset("trainval")
    xu, lu = ds.subset("test_unseen")
    return dict(ds=ds, seen=seen, unseen=unseen, x=torch.from_numpy(xs),
                y=torch.tensor([local[int(c)] for c in ls]), s=torch.from_numpy(ds.attributes[seen]),
                xu=torch.from_numpy(xu), lu=lu, su=torch.from_numpy(ds.attributes[unseen]))


HP = {"hidden": 64, "lr": 3e-3, "weight_decay": 1e-4, "batch_size": 32, "epochs": 25}


def test_loss_closes_half_the_gap_to_the_within_class_floor(data):
    m = Dem(data["x"].shape[1], data["s"].shape[1], HP)
    losses = m.fit(data["x"], data["y"], data["s"], seed=0)
    assert len(losses) == HP["epochs"]
    # the data term cannot go below the within-class scatter (the best prototype is the class mean)
    x, y = data["x"], data["y"]
    means = torch.stack([x[y == c].mean(0) for c in range(len(data["s"]))])
    floor = float((x - means[y]).pow(2).sum(1).mean())
    assert floor < losses[-1] and losses[-1] - floor < 0.5 * (losses[0] - floor)


def test_inference_is_nearest_prototype_in_visual_space(data):
    m = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "epochs": 2})
    m.fit(data["x"], data["y"], data["s"], seed=0)
    assert m.metric == "l2"
    torch.testing.assert_close(m.embed_images(data["xu"]), data["xu"])
    protos = m.embed_classes(data["su"])
    assert protos.shape == (len(data["su"]), data["x"].shape[1])
    assert not bool(m.relu_out)  # signed synthetic features: no output ReLU under "auto"
    d2 = ((data["xu"][:, None, :] - protos[None]) ** 2).sum(-1)
    torch.testing.assert_close(m.scores(data["xu"], data["su"]), -d2, rtol=1e-4, atol=1e-3)


def test_output_relu_for_non_negative_features(data):
    x = data["x"].abs()
    m = Dem(x.shape[1], data["s"].shape[1], {**HP, "epochs": 2})
    m.fit(x, data["y"], data["s"], seed=0)
    assert bool(m.relu_out) and (m.embed_classes(data["su"]) >= 0).all()
    off = Dem(x.shape[1], data["s"].shape[1], {**HP, "epochs": 2, "output_relu": "off"})
    off.fit(x, data["y"], data["s"], seed=0)
    assert not bool(off.relu_out)
    with pytest.raises(InvalidInputError, match="output_relu='maybe'"):
        Dem(4, 3, {"output_relu": "maybe"})


def test_penalty_and_loss_definition(data):
    # one epoch with lr ~ 0 leaves the weights at their seeded init: the reported loss is
    # mean over images of the summed squared error + weight_decay * sum ||W||^2.
    hp = {**HP, "lr": 1e-12, "epochs": 1, "weight_decay": 0.5}
    m = Dem(data["x"].shape[1], data["s"].shape[1], hp)
    loss = m.fit(data["x"], data["y"], data["s"], seed=3)[0]
    with torch.no_grad():
        pred = m.prototypes(data["s"])[data["y"]]
        ref = (pred - data["x"]).pow(2).sum(1).mean() + 0.5 * (m.branches[0].weight.pow(2).sum()
                                                               + m.out.weight.pow(2).sum())
    assert loss == pytest.approx(float(ref), rel=1e-4)


def test_deterministic_with_seed(data):
    a = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "epochs": 3})
    b = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "epochs": 3})
    la = a.fit(data["x"], data["y"], data["s"], seed=7)
    lb = b.fit(data["x"], data["y"], data["s"], seed=7)
    assert la == lb
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    c = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "epochs": 3})
    c.fit(data["x"], data["y"], data["s"], seed=8)
    assert not torch.equal(c.out.weight, a.out.weight)


def test_on_epoch_sees_a_usable_model_and_epochs_override(data):
    m = Dem(data["x"].shape[1], data["s"].shape[1], HP)
    seen = []
    m.fit(data["x"], data["y"], data["s"], seed=0, epochs=3,
          on_epoch=lambda e: seen.append((e, m.training, float(m.scores(data["xu"], data["su"]).sum()))))
    assert [e for e, _, _ in seen] == [1, 2, 3]
    assert not any(t for _, t, _ in seen)


def test_fusion_of_two_modalities(data):
    # second modality: a random 10-d class embedding; the model must accept [A, W] and use both branches
    rng = np.random.default_rng(0)
    words = torch.from_numpy(rng.standard_normal((len(data["ds"].class_names), 10)).astype(np.float32))
    s2 = torch.cat([data["s"], words[data["seen"]]], 1)
    m = Dem(data["x"].shape[1], [data["s"].shape[1], 10], {**HP, "fusion_weights": [1.0, 0.5]})
    losses = m.fit(data["x"], data["y"], s2, seed=0)
    assert losses[-1] < losses[0]
    assert len(m.branches) == 2 and m.branches[1].weight.shape == (HP["hidden"], 10)
    assert m.branches[1].weight.grad is not None and m.branches[1].weight.grad.abs().sum() > 0
    su2 = torch.cat([data["su"], words[data["unseen"]]], 1)
    assert m.scores(data["xu"], su2).shape == (len(data["xu"]), len(data["unseen"]))
    # the weight scales the second branch's contribution: zero weight == attributes-only forward
    m.fusion[1] = 0.0
    with torch.no_grad():
        o = m.out(torch.relu(m.branches[0](data["su"])))
        o = torch.relu(o) if bool(m.relu_out) else o
    torch.testing.assert_close(m.embed_classes(su2), o)


def test_standardize_variant(data):
    m = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "feature_norm": "standardize", "epochs": 10})
    m.fit(data["x"], data["y"], data["s"], seed=0)
    torch.testing.assert_close(m.feat_mean, data["x"].mean(0))
    z = m.embed_images(data["x"])
    assert z.mean(0).abs().max() < 1e-4 and torch.allclose(z.std(0), torch.ones(z.shape[1]), atol=1e-4)
    pred = data["unseen"][m.scores(data["xu"], data["su"]).argmax(1).numpy()]
    assert per_class_top1(pred, data["lu"], data["unseen"]) > 1.0 / len(data["unseen"])


def test_whitening_is_the_within_class_mahalanobis_distance(data):
    # k = D and no ridge: ||(x - m) P||^2 must equal (x - m)^T Sw^-1 (x - m) for the exact
    # within-class covariance Sw of the training images (numpy reference).
    x, y = data["x"], data["y"]
    d = x.shape[1]
    m = Dem(d, data["s"].shape[1], {**HP, "feature_norm": "whiten", "whiten_dim": d, "whiten_reg": 0.0,
                                    "epochs": 3})
    m.fit(x, y, data["s"], seed=0)
    X, Y = x.double().numpy(), y.numpy()
    means = np.stack([X[Y == c].mean(0) for c in range(len(data["s"]))])
    R = X - means[Y]
    sw_inv = np.linalg.inv(R.T @ R / len(R))
    a, b = data["xu"][:5].double().numpy(), data["xu"][5:10].double().numpy()
    ref = np.einsum("ij,jk,ik->i", a - b, sw_inv, a - b)
    za, zb = m.embed_images(data["xu"][:5]).double(), m.embed_images(data["xu"][5:10]).double()
    np.testing.assert_allclose(((za - zb) ** 2).sum(1).numpy(), ref, rtol=1e-3)
    assert m.embed_classes(data["su"]).shape == (len(data["su"]), d) and not bool(m.relu_out)


def test_whitened_dem_recognises_unseen_classes_and_is_seeded(data):
    hp = {**HP, "feature_norm": "whiten", "whiten_dim": 12, "epochs": 15}
    a = Dem(data["x"].shape[1], data["s"].shape[1], hp)
    a.fit(data["x"], data["y"], data["s"], seed=4)
    assert a.proj.shape == (data["x"].shape[1], 12) and a.out.weight.shape == (12, HP["hidden"])
    pred = data["unseen"][a.scores(data["xu"], data["su"]).argmax(1).numpy()]
    assert per_class_top1(pred, data["lu"], data["unseen"]) > 2.0 / len(data["unseen"])
    b = Dem(data["x"].shape[1], data["s"].shape[1], hp)
    b.fit(data["x"].clone(), data["y"].clone(), data["s"], seed=4)  # new tensors: no cached transform
    assert torch.equal(a.proj, b.proj) and torch.equal(a.out.weight, b.out.weight)


def test_unit_norm_puts_images_on_the_sphere(data):
    m = Dem(data["x"].shape[1], data["s"].shape[1], {**HP, "feature_norm": "whiten", "whiten_dim": 12,
                                                     "unit_norm": True, "epochs": 10})
    m.fit(data["x"], data["y"], data["s"], seed=0)
    z = m.embed_images(data["xu"])
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(z)))
    # ranking images for one class query by L2 equals ranking by inner product (norms are equal)
    p = m.embed_classes(data["su"][:1])
    assert torch.equal(torch.argsort(-(z @ p.T)[:, 0]), torch.argsort(m.scores(data["xu"], data["su"][:1])[:, 0],
                                                                       descending=True))
    pred = data["unseen"][m.scores(data["xu"], data["su"]).argmax(1).numpy()]
    assert per_class_top1(pred, data["lu"], data["unseen"]) > 2.0 / len(data["unseen"])


def test_bad_hparams():
    with pytest.raises(InvalidInputError, match="fusion_weights"):
        Dem(8, [4, 3], {"fusion_weights": [1.0]})
    with pytest.raises(InvalidInputError, match="hidden=0"):
        Dem(8, 4, {"hidden": 0})
    with pytest.raises(InvalidInputError, match="feature_norm='pca'.*none, standardize, whiten"):
        Dem(8, 4, {"feature_norm": "pca"})
