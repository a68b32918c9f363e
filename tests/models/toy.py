"""The one source of toy zero-shot data for tests/models.

* :func:`toy_zsl` -- 24 classes whose images are a fixed *nonlinear* map of the class attributes plus
  noise (the ``data`` fixture of ``conftest.py``); classes 0-17 are seen, 18-23 unseen. The contract
  test (``test_contract.py``) and the trainable-model tests use it.
* :func:`linear_toy` -- a few classes whose images are a *linear* map of the class semantics plus
  noise, as tensors, for the closed-form solvers' exact references (eszsl, sae, checkpoints).
"""
from __future__ import annotations

import numpy as np
import torch

SEEN, UNSEEN = np.arange(18), np.arange(18, 24)


def toy_zsl(seed: int = 0, n_classes: int = 24, n_attr: int = 16, dim: int = 40, per_class: int = 25):
    """Images generated from class attributes by a fixed nonlinear map plus noise, so the
    attribute->image relation learnt on classes 0-17 transfers to classes 18-23.
    Returns x (N, dim) float32, labels (N,) int64, attributes (C, A) float32 (L2 rows)."""
    g = np.random.default_rng(seed)
    att = g.random((n_classes, n_attr)) ** 2
    att /= np.linalg.norm(att, axis=1, keepdims=True)
    w = g.normal(size=(n_attr, dim)) * 2.0
    labels = np.repeat(np.arange(n_classes), per_class)
    x = np.tanh(att[labels] @ w) + 0.3 * g.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels.astype(np.int64), att.astype(np.float32)


def linear_toy(seed: int = 0, *, n: int, d: int, z: int, a: int, non_negative: bool = False):
    """n images of z classes: x = s_y P + 0.3 noise with a random P (a, d), labels drawn uniformly.
    Returns x (n, d) float32, y (n,) int64 rows of s, s (z, a) float32 (standard normal rows);
    ``non_negative`` takes |x| (like post-ReLU CNN features)."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((z, a)).astype(np.float32)
    y = rng.integers(0, z, n)
    x = s[y] @ rng.standard_normal((a, d)) + 0.3 * rng.standard_normal((n, d))
    x = (np.abs(x) if non_negative else x).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(s)


def seen_subset(x, labels, att):
    """Training tensors restricted to the seen classes, labels re-indexed into att[SEEN]."""
    m = np.isin(labels, SEEN)
    return torch.from_numpy(x[m]), torch.from_numpy(labels[m]), torch.from_numpy(att[SEEN])


def unseen_top1(score_fn, x, labels, att) -> float:
    """Per-class top-1 on the unseen images among the unseen classes; score_fn(x, s) -> (N, C)."""
    m = np.isin(labels, UNSEEN)
    pred = UNSEEN[score_fn(torch.from_numpy(x[m]), torch.from_numpy(att[UNSEEN])).argmax(1).numpy()]
    return float(np.mean([(pred[labels[m] == c] == c).mean() for c in UNSEEN]))


# Toy-sized hyper-parameters of every registered model for ``toy_zsl`` (40-d images, 16 attributes):
# small nets, few epochs. The contract test trains each model with these; the per-model files start
# from them too.
TOY_HPARAMS: dict[str, dict] = {
    "acmr": {"latent_dim": 16, "visual_hidden_dim": 64, "semantic_hidden_dim": 32, "batch_size": 32, "epochs": 15,
             "warmup_epochs": 3, "cls_samples_per_class": 50, "cls_epochs": 10},
    "dem": {"hidden": 32, "epochs": 5, "batch_size": 32, "lr": 3e-3},
    "dml": {"feature_groups": [24, 16], "pca_dim": 12, "group_dim": 32, "attention_dim": 16, "embed_dim": 32,
            "semantic_hidden_dim": 32, "batch_size": 64, "epochs": 15},
    "eszsl": {"gamma": 1.0, "lam": 1.0},
    "sae": {"lam": 10.0},
    "ssl": {"hidden_dim": 64, "embed_dim": 32, "semantic_hidden_dim": 32, "batch_size": 64, "epochs": 15},
}
TOY_HPARAMS["ensemble"] = {"pool": ["eszsl", "dem"], "member_hparams": {m: TOY_HPARAMS[m] for m in ("eszsl", "dem")}}
