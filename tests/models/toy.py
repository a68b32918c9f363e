"""Shared toy zero-shot data for the trainable-model tests (ssl, acmr, dml)."""
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


def seen_subset(x, labels, att):
    """Training tensors restricted to the seen classes, labels re-indexed into att[SEEN]."""
    m = np.isin(labels, SEEN)
    return torch.from_numpy(x[m]), torch.from_numpy(labels[m]), torch.from_numpy(att[SEEN])


def unseen_top1(score_fn, x, labels, att) -> float:
    """Per-class top-1 on the unseen images among the unseen classes; score_fn(x, s) -> (N, C)."""
    m = np.isin(labels, UNSEEN)
    pred = UNSEEN[score_fn(torch.from_numpy(x[m]), torch.from_numpy(att[UNSEEN])).argmax(1).numpy()]
    return float(np.mean([(pred[labels[m] == c] == c).mean() for c in UNSEEN]))
