"""Benchmark mAP measured through the engine: real index + catalog, queries through QueryEngine.

The direct evaluation (``protocol.evaluate`` / ``metrics.AccuracyCalculator``) embeds the
unseen test images and class descriptors in memory and ranks them with an exact numpy
searcher. :func:`engine_map` instead writes those images into an index with a SQL catalog,
asks for every unseen class with a ``class:`` query -- the code a user's ``zslr query
--class`` runs -- and scores the catalog ids it gets back. Both must agree (to float
rounding): that is the evidence that what users get is what the benchmark reports.
:func:`label_query_map` asks an index for each of its own (folder) labels the same way.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..data.base import ZslDataset, semantic_matrix
from ..errors import ConsistencyError, IncompatibleError
from ..metrics.ranking import mean_average_precision_from_rankings
from ..models.base import ZslModel
from ..models.checkpoint import ModelCard, save_checkpoint
from .engine import QueryEngine
from .spec import QuerySpec


def class_semantics_for(dataset: ZslDataset, card: ModelCard) -> np.ndarray:
    """(C, S) class descriptors in the layout the model was trained on (:func:`data.base.semantic_matrix`)."""
    s, _ = semantic_matrix(dataset, card.semantic_modalities or ["attributes"])
    if s.shape[1] != sum(card.semantic_dims):
        raise IncompatibleError(f"dataset {dataset.name!r} gives {s.shape[1]}-d class descriptors; "
                                f"model {card.model!r} expects {sum(card.semantic_dims)}")
    return s


def gallery_paths(dataset: ZslDataset, rows: np.ndarray, split: str) -> list[str]:
    """Catalog paths of benchmark rows, the same ``<dataset>/<split>/<row>`` as ``zslr index --dataset``."""
    return [f"{dataset.name}/{split}/{int(r)}" for r in rows]


def engine_map(model: ZslModel, card: ModelCard, dataset: ZslDataset, *, root: str | os.PathLike | None = None,
               k: int | None = None, split: str = "test_unseen", raw_scores: bool = False) -> tuple[float, dict[str, float]]:
    """mAP (or mAP@k) of ``model`` on the unseen test classes, measured through a real index.

    Indexes the ``split`` images (N, D) of ``dataset`` with the model's checkpoint into a
    temporary index under ``root`` (a temp folder when None; removed afterwards), issues one
    ``class:`` query per unseen class, ranks the whole gallery exactly (no k cap) and scores
    the returned catalog ids, ranked with the card's score correction unless ``raw_scores``.
    Returns ``(mAP, {class name: AP})``.
    """
    out = engine_maps(model, card, dataset, root=root, k=k, splits=(split,), raw_scores=raw_scores,
                      query_split=split)
    return out["map"], out["per_class_ap"]


def engine_maps(model: ZslModel, card: ModelCard, dataset: ZslDataset, *, root: str | os.PathLike | None = None,
                k: int | None = None, splits: tuple[str, ...] = ("test_unseen", "test_seen"),
                raw_scores: bool = False, query_split: str = "test_unseen") -> dict:
    """Retrieval mAP through a real index holding the images of ``splits`` together.

    The classes of ``query_split`` are queried once over the whole index. ``map`` scores the
    ranking restricted to the ``query_split`` images (the score correction is per image, so
    that is the ranking an index of those images alone returns); with more than one split,
    ``gzsl_map`` scores the whole mixed ranking. Returns map, per_class_ap and, when mixed,
    gzsl_map, per_class_gzsl_ap.
    """
    from ..ingest import index_features

    parts = [np.asarray(dataset.split_indices(sp)) for sp in splits]
    rows = np.concatenate(parts)
    feats = np.asarray(dataset.features[rows], np.float32)
    labels = [dataset.class_names[int(c)] for c in dataset.labels[rows]]
    paths = [p for sp, r in zip(splits, parts) for p in gallery_paths(dataset, r, sp)]
    query_classes = [dataset.class_names[int(c)] for c in dataset.split_classes(query_split)]
    if root is not None:
        Path(root).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zslr-engine-eval-", dir=root) as tmp:
        ckpt = save_checkpoint(model, card, Path(tmp) / "model.pt",
                               torch.from_numpy(class_semantics_for(dataset, card)))
        index = index_features("engine-eval", feats, paths, labels, model_checkpoint=ckpt, root=Path(tmp) / "indexes",
                               backbone=f"dataset:{dataset.name}", source=f"dataset:{dataset.name}/{'+'.join(splits)}")
        try:
            engine = QueryEngine(index, correction=not raw_scores)
            results = engine.run([QuerySpec("class", c, "engine_map") for c in query_classes], k=None)
            records = index.all_records()
        finally:
            index.close()
    ranked = [[h.id for h in r.hits] for r in results]
    gallery = {r.id: r.label for r in records}
    in_split = {r.id for r in records if r.path.startswith(f"{dataset.name}/{query_split}/")}
    if len(gallery) != len(rows) or any(len(r) != len(rows) for r in ranked):
        raise ConsistencyError(f"the index returned {min(len(r) for r in ranked)} of {len(rows)} gallery images; "
                               "a full ranking must return every catalog entry")
    names = sorted(set(gallery.values()) | set(query_classes))
    code = {n: c for c, n in enumerate(names)}
    qlab = np.array([code[c] for c in query_classes])

    def score(keep: set[int] | None) -> tuple[float, dict[str, float]]:
        ids = np.array(sorted(gallery if keep is None else keep), np.int64)
        pos = {int(i): p for p, i in enumerate(ids)}
        gallery_labels = np.array([code[gallery[int(i)]] for i in ids])
        ranked_pos = np.array([[pos[i] for i in r if i in pos] for r in ranked], np.int64)
        m, aps = mean_average_precision_from_rankings(ranked_pos, qlab, gallery_labels, k)
        return m, {c: float(a) for c, a in zip(query_classes, aps)}

    out: dict = {}
    out["map"], out["per_class_ap"] = score(in_split if len(splits) > 1 else None)
    if len(splits) > 1:
        out["gzsl_map"], out["per_class_gzsl_ap"] = score(None)
    return out


def label_query_map(engine: QueryEngine, kind: str = "text",
                    text_of: Callable[[str], str] | None = None) -> dict:
    """mAP of querying an index by its own labels (folder names) through ``engine``: one query per label.

    Each distinct catalog label ``L`` is asked as ``QuerySpec(kind, text_of(L))`` (default: the label
    as words, ``killer+whale`` -> ``killer whale``; CUB's ``013.Bobolink`` -> ``Bobolink``); the
    full ranking (k=None) is scored against the catalog labels. Returns ``{"map", "chance", "ap":
    {label: AP}, "top1": {label: label of the first hit}, "first_right": {label: rank (1-based) of the
    label's first image}, "n_images", "n_classes"}``; ``chance`` is the mean share of each label's
    images (the AP of a random ranking, in expectation).
    """
    from ..text.names import class_text
    text_of = text_of or class_text
    recs = [r for r in engine.index.all_records() if r.label is not None]
    if not recs:
        raise IncompatibleError("the index has no labelled images (labels come from the folder names)")
    ids = np.array([r.id for r in recs], np.int64)
    labels = np.array([str(r.label) for r in recs])
    classes = sorted(set(labels))
    results = engine.run([QuerySpec(kind, text_of(c)) for c in classes], k=None)
    pos = {int(i): p for p, i in enumerate(ids)}
    ranked = np.array([[pos.get(h.id, -1) for h in r.hits if h.id in pos] for r in results])
    m, aps = mean_average_precision_from_rankings(ranked, np.array(classes), labels)
    return {"map": m, "chance": float(np.mean([np.mean(labels == c) for c in classes])),
            "ap": dict(zip(classes, map(float, aps))), "top1": {c: labels[row[0]] for c, row in zip(classes, ranked)},
            "first_right": {c: int(np.flatnonzero(labels[row] == c)[0]) + 1 for c, row in zip(classes, ranked)},
            "queries": {c: text_of(c) for c in classes}, "n_images": len(labels), "n_classes": len(classes)}
