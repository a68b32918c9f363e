"""Small stand-ins for an index and a model, so the query path is tested on its own.

FakeIndex follows the documented ``OpenIndex`` contract (``query.protocols.SearchableIndex``:
manifest, search with k=None for the exact full ranking, records, model, ...) on top of the
float64 NumpySearcher reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from zslretrieval.index.searchers import NumpySearcher
from zslretrieval.models.base import Hparams, ZslModel
from zslretrieval.models.checkpoint import ModelCard

VOCAB = ["black", "white", "stripes", "water", "has_bill_shape::curved_(up_or_down)", "big"]
CLASSES = ["zebra", "killer+whale", "polar+bear", "grizzly+bear"]
# Rows are L2-normalised like xlsa17's.
_RAW = np.array([
    [1.0, 1.0, 1.0, 0.0, 0.0, 0.6],
    [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
    [0.0, 1.0, 0.0, 0.7, 0.0, 0.9],
    [0.6, 0.0, 0.0, 0.3, 0.1, 1.0],
], np.float32)
CLASS_SEMANTICS = _RAW / np.linalg.norm(_RAW, axis=1, keepdims=True)


class LinearModel(ZslModel):
    """Images and descriptors mapped linearly into one space (ESZSL-like), compared by cosine."""

    name = "fake-linear"
    metric = "ip"

    def __init__(self, feature_dim, semantic_dims, hparams=None, *, seed: int = 0, emb_dim: int = 5):
        super().__init__(feature_dim, semantic_dims, hparams or Hparams())
        g = torch.Generator().manual_seed(seed)
        self.img = nn.Linear(self.feature_dim, emb_dim, bias=False)
        self.sem = nn.Linear(self.semantic_dim, emb_dim, bias=False)
        with torch.no_grad():
            self.img.weight.copy_(torch.randn(emb_dim, self.feature_dim, generator=g))
            self.sem.weight.copy_(torch.randn(emb_dim, self.semantic_dim, generator=g))

    def embed_images(self, x):
        return self.img(x)

    def embed_classes(self, s):
        return self.sem(s)


@dataclass
class Record:
    id: int
    path: str
    label: str | None
    status: str = "ok"


@dataclass
class FakeIndex:
    """An index of ``features`` embedded by ``model`` under ids 100, 101, ... (never row order)."""

    features: np.ndarray
    labels: list[str]
    paths: list[str]
    model_: ZslModel | None = None
    card: ModelCard | None = None
    class_semantics: torch.Tensor | None = None
    name: str = "fake"
    backbone: str | None = None
    search_calls: list[int] = field(default_factory=list)

    def __post_init__(self):
        with torch.no_grad():
            emb = (self.model_.embed_images(torch.from_numpy(self.features)).numpy() if self.model_ is not None
                   else self.features)
        metric = self.model_.metric if self.model_ is not None else "ip"
        if metric == "ip":
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        self.embeddings = emb.astype(np.float32)
        self.ids = np.arange(100, 100 + len(emb), dtype=np.int64)
        self.searcher = NumpySearcher(emb.shape[1], metric)
        self.searcher.add(self.embeddings, self.ids)
        self.manifest = SimpleNamespace(name=self.name, metric=metric, dim=emb.shape[1], backbone=self.backbone,
                                        backbone_weights=None, source="images" if self.backbone else "dataset:fake")
        self._records = {int(i): Record(int(i), p, l) for i, p, l in zip(self.ids, self.paths, self.labels)}

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    def search(self, xq, k):
        self.search_calls.append(len(xq))
        return self.searcher.rank_all(xq) if k is None else self.searcher.search(xq, k)

    def search_unchecked(self, xq, k):
        return self.search(xq, k)

    def records(self, ids):
        return [self._records[int(i)] for i in ids]

    def all_records(self, status="ok"):
        return [r for r in self._records.values() if status is None or r.status == status]

    def record_tuples(self, status="ok"):
        return [(r.id, r.path, r.label, r.status) for r in self.all_records(status)]

    def raw_features(self):
        return self.ids.copy(), self.features.copy()

    def entry_ids(self):
        return self.ids.copy(), self.ids.copy()   # entry id = image id here

    def entry_vectors(self, positions):
        return self.embeddings[np.asarray(positions, np.int64)]

    def correction_terms(self):
        return None   # no score correction: rankings are the model's raw scores

    def general_terms(self, general):
        return None

    def close(self):
        pass

    def model(self):
        if self.model_ is None:
            return None
        return self.model_, self.card, self.class_semantics


def make_card(model: ZslModel) -> ModelCard:
    return ModelCard(model=model.name, hparams={}, feature_dim=model.feature_dim, semantic_dims=model.semantic_dims,
                     dataset="fake", metric=model.metric, class_names=list(CLASSES), seen_classes=CLASSES[:2],
                     unseen_classes=CLASSES[2:], vocabulary=list(VOCAB), semantic_norm="l2")


def make_index(n: int = 40, feature_dim: int = 8, seed: int = 0, with_model: bool = True, **kw) -> FakeIndex:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, feature_dim)).astype(np.float32)
    labels = [CLASSES[i % len(CLASSES)] for i in range(n)]
    paths = [f"bench/{i}" for i in range(n)]
    if not with_model:
        return FakeIndex(feats, labels, paths, **kw)
    model = LinearModel(feature_dim, [len(VOCAB)], seed=seed).eval()
    return FakeIndex(feats, labels, paths, model, make_card(model), torch.from_numpy(CLASS_SEMANTICS), **kw)
