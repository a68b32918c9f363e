"""Test-split evaluation of a trained model: embed ``test_unseen`` / ``test_seen``, compute metrics.

:func:`evaluate` uses :class:`~zslretrieval.metrics.AccuracyCalculator`; it never chooses
anything on test data (the GZSL calibration comes from the card, chosen on val).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..correction import ScoreCorrection
from ..data.base import ZslDataset, semantic_matrix
from ..errors import IncompatibleError
from ..index.searchers import NumpySearcher
from ..metrics import AccuracyCalculator, EvalInputs
from ..metrics.calculator import SearcherFactory
from ..models import ZslModel
from ..models.checkpoint import ModelCard
from .scoring import embed_batched

DEFAULT_METRICS = ("top1", "map", "gzsl", "gzsl_map", "hubness")


def check_compatible(model: ZslModel, card: ModelCard | None, dataset: ZslDataset, modalities: Sequence[str]) -> None:
    """IncompatibleError unless the model fits the dataset's features, semantics and classes."""
    _, dims = semantic_matrix(dataset, modalities)
    if model.feature_dim != dataset.feature_dim:
        raise IncompatibleError(f"model {model.name!r} expects {model.feature_dim}-d image features; dataset "
                                f"{dataset.name!r} has {dataset.feature_dim}-d features")
    if list(model.semantic_dims) != list(dims):
        raise IncompatibleError(f"model {model.name!r} expects semantic dims {model.semantic_dims}; dataset "
                                f"{dataset.name!r} gives {dims} for modalities {list(modalities)}")
    if card is None:
        return
    if card.vocabulary and list(card.vocabulary) != list(dataset.attribute_names):
        diff = [a for a, b in zip(card.vocabulary, dataset.attribute_names) if a != b][:3]
        raise IncompatibleError(f"model vocabulary differs from dataset {dataset.name!r} attributes "
                                f"(first differences: {diff}); the attribute columns would not line up")
    unseen = {dataset.class_names[c] for c in dataset.split_classes("test_unseen")}
    leaked = sorted(unseen & set(card.seen_classes))
    if leaked:
        raise IncompatibleError(f"model was trained on {len(leaked)} class(es) that are unseen test classes of "
                                f"{dataset.name!r} (e.g. {leaked[:3]}); zero-shot evaluation would be invalid")


def _l2n(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)


def evaluate(model: ZslModel, dataset: ZslDataset, metrics: Sequence[str] = DEFAULT_METRICS, *,
             calibration: float | None = None, searcher_factory: SearcherFactory = NumpySearcher,
             card: ModelCard | None = None, modalities: Sequence[str] | None = None, device: str = "cpu",
             k: int | None = None, correction: ScoreCorrection | None = None,
             raw_scores: bool = False) -> dict[str, float]:
    """Metrics on the test splits: ``test_unseen`` (top1, map, map_at_k) and ``test_seen`` (gzsl,
    gzsl_map: unseen queries over unseen + seen test images, hubness).

    Retrieval metrics rank with the score correction ``correction``, else the one the card
    records (chosen on val), as the engine does; ``raw_scores=True`` ranks by raw model scores.

    Embeddings: ``metric="ip"`` models are L2-normalised (cosine), ``"l2"`` models are used raw.
    GZSL is reported uncalibrated (``gzsl_u/s/h``) and, when a calibration is known -- the
    argument (raw score units), else ``card.selection["gzsl_calibration"]`` (chosen on val, in the
    units of ``gzsl_calibration_space``) -- calibrated (``gzsl_cal_u/s/h`` + ``gzsl_calibration``).
    Never chooses anything on test data.
    """
    metrics = list(dict.fromkeys(metrics))
    AccuracyCalculator(include=metrics)  # validates names
    if modalities is None:
        modalities = card.semantic_modalities if card is not None else ["attributes"]
    check_compatible(model, card, dataset, modalities)
    space = "raw"
    if calibration is None and card is not None:
        calibration = card.selection.get("gzsl_calibration")
        # cards from before the z rule carry a raw offset
        space = card.selection.get("gzsl_calibration_space", "raw") if calibration is not None else "raw"
    if raw_scores:
        correction = None
    elif correction is None and card is not None:
        correction = ScoreCorrection.from_dict((card.selection or {}).get("retrieval_correction"))
    sem, _ = semantic_matrix(dataset, modalities)
    model = model.to(device).eval()
    class_emb = embed_batched(model.embed_classes, sem, device)
    unseen_x, unseen_y = dataset.subset("test_unseen")
    unseen_emb = embed_batched(model.embed_images, unseen_x, device)
    seen_emb = seen_y = None
    if {"gzsl", "gzsl_map", "hubness"} & set(metrics) and len(dataset.splits.get("test_seen", ())):
        seen_x, seen_y = dataset.subset("test_seen")
        seen_emb = embed_batched(model.embed_images, seen_x, device)
    if model.metric == "ip":
        class_emb, unseen_emb = _l2n(class_emb), _l2n(unseen_emb)
        seen_emb = _l2n(seen_emb) if seen_emb is not None else None
    inputs = EvalInputs(class_emb=class_emb, metric=model.metric, unseen_classes=dataset.split_classes("test_unseen"),
                        seen_classes=dataset.split_classes("trainval"), unseen_emb=unseen_emb, unseen_labels=unseen_y,
                        seen_emb=seen_emb, seen_labels=seen_y)
    calc = AccuracyCalculator(include=metrics, k=k, calibration=0.0, searcher_factory=searcher_factory,
                              correction=correction)
    out = calc.get_accuracy(inputs)
    out.pop("gzsl_calibration", None)
    if "gzsl" in metrics and seen_emb is not None and calibration is not None:
        cal = AccuracyCalculator(include=["gzsl"], calibration=float(calibration), searcher_factory=searcher_factory,
                                 calibration_space=space).get_accuracy(inputs)
        out.update({"gzsl_cal_u": cal["gzsl_u"], "gzsl_cal_s": cal["gzsl_s"], "gzsl_cal_h": cal["gzsl_h"],
                    "gzsl_calibration": cal["gzsl_calibration"]})
    return {k_: float(v) for k_, v in out.items()}


def split_info(dataset: ZslDataset) -> dict[str, Any]:
    """Image and class counts of each split, for reports."""
    info = {name: {"images": int(len(idx)), "classes": int(len(np.unique(dataset.labels[idx])))}
            for name, idx in dataset.splits.items()}
    return {"feature_dim": dataset.feature_dim, "semantic_dim": dataset.semantic_dim,
            "feature_transform": dataset.feature_transform, "val_split": dataset.meta.get("val_split", ""),
            "splits": info}
