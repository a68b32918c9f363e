"""Shared tiny synthetic data for the protocol tests: a small benchmark-shaped dataset, a poisoned
copy whose test rows are NaN and whose feature reads are recorded, and small hyper-parameters."""
from __future__ import annotations

import dataclasses

import numpy as np

from zslretrieval.data.synthetic import make_synthetic

DEM_HP = {"hidden": 32, "epochs": 12, "batch_size": 32, "lr": 3e-3}


def small_dataset(seed=0):
    return make_synthetic(n_classes=14, n_unseen=4, n_val=3, n_attributes=12, images_per_class=24, feature_dim=20,
                          hidden_dim=24, feature_noise=0.5, seed=seed)


class RowSpy(np.ndarray):
    """Feature matrix that records which rows were read."""

    def __getitem__(self, idx):
        rows = np.arange(len(self))[idx if not isinstance(idx, tuple) else idx[0]]
        self.touched.update(np.atleast_1d(rows).tolist())
        return np.asarray(self).__getitem__(idx)


def poisoned(ds):
    """Test images and test-class semantics are NaN, and every feature read is recorded."""
    test_rows = np.concatenate([ds.splits["test_unseen"], ds.splits["test_seen"]])
    feats = ds.features.copy()
    feats[test_rows] = np.nan
    spy = feats.view(RowSpy)
    spy.touched = set()
    att = ds.attributes.copy()
    att[ds.split_classes("test_unseen")] = np.nan
    return dataclasses.replace(ds, features=spy, attributes=att), set(test_rows.tolist())


SMALL_NEURAL = {
    "ssl": {"hidden_dim": 32, "embed_dim": 16, "semantic_hidden_dim": 16, "epochs": 3, "batch_size": 64},
    "acmr": {"latent_dim": 8, "visual_hidden_dim": 32, "semantic_hidden_dim": 16, "epochs": 3, "batch_size": 64,
             "cls_samples_per_class": 10, "cls_epochs": 2},
    "dml": {"group_dim": 16, "attention_dim": 8, "embed_dim": 16, "semantic_hidden_dim": 16, "epochs": 3,
            "batch_size": 64},
}
