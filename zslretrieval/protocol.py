"""The benchmark protocol: choose hyper-parameters on validation classes, refit, evaluate on unseen classes.

Selection (GBU, Xian et al.), never touching ``test_seen`` / ``test_unseen`` images or the
semantics of test classes:

1. ``train`` (seen classes minus the validation classes) is split per class, with ``seed``, into a
   fit part and a held-out ``holdout`` fraction (default 20%, the "pseudo test-seen" images).
2. Every candidate hyper-parameter set (the model's ``search_space()``, with any user-given values
   overriding the grid) is fitted on the fit part. After each epoch the per-class top-1 of the
   ``val`` images among the val classes is measured; an iterative model keeps the best epoch as
   its training length and stops after ``patience`` epochs without improvement.
3. The best (candidate, epoch) by val top-1 wins (ties: the earlier candidate / epoch).
4. GZSL calibrated stacking is chosen on the same winner: val images act as pseudo-unseen and the
   held-out train images as pseudo-seen, searched over train + val classes; the calibration
   maximising the harmonic mean is kept in ``selection["gzsl_calibration"]``.
5. The winner is refitted on ``trainval`` with the chosen values. Iterative models keep the chosen
   number of *epochs* (passes over the data): trainval is only ~1.2-1.5x train, and GBU keeps
   epochs fixed too, so the refit makes proportionally more optimiser steps on more data.

:func:`evaluate` then embeds ``test_unseen`` / ``test_seen`` and computes the requested metrics with
:class:`~zslretrieval.metrics.AccuracyCalculator`. :func:`train_from_config` / :func:`eval_from_config`
are the single library calls behind ``zslr train`` / ``zslr eval``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConsistencyError, IncompatibleError, InvalidInputError
from .index.searchers import NumpySearcher
from .metrics import AccuracyCalculator, EvalInputs, gzsl, mean_average_precision, per_class_top1
from .metrics.calculator import SearcherFactory
from .models import ZslModel, get_model_class, pairwise_scores
from .models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

Log = Callable[[str], None]
DEFAULT_METRICS = ("top1", "map", "gzsl")


@dataclasses.dataclass
class TrainResult:
    model: ZslModel
    card: ModelCard
    selection: dict[str, Any]


class _StopTraining(Exception):
    """Raised from the epoch callback to end a candidate early (works with any model's ``fit``)."""


# --- data helpers ---------------------------------------------------------------------------------

def semantic_matrix(dataset, modalities: Sequence[str] = ("attributes",)) -> tuple[np.ndarray, list[int]]:
    """Concatenate class-level modalities -> ((C, sum dims) float32, [dim of each modality])."""
    parts = []
    for m in modalities:
        if m == "attributes":
            parts.append(np.asarray(dataset.attributes, np.float32))
        elif m in dataset.extra_semantics:
            parts.append(np.asarray(dataset.extra_semantics[m], np.float32))
        else:
            valid = ["attributes", *sorted(dataset.extra_semantics)]
            raise InvalidInputError(f"{dataset.name}: unknown semantic modality {m!r}; valid: {', '.join(valid)}")
    return np.concatenate(parts, axis=1), [p.shape[1] for p in parts]


def _rows(dataset, idx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(dataset.features[idx], dtype=np.float32)


def _holdout_split(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``labels``) to fit on and to hold out: ``fraction`` of each class, >= 1 image left to fit."""
    fit, held = [], []
    for c in np.unique(labels):
        pos = rng.permutation(np.flatnonzero(labels == c))
        k = min(len(pos) - 1, int(round(fraction * len(pos))))
        held.append(pos[:k])
        fit.append(pos[k:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)


def _check_protocol_splits(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and val classes; refuse splits that would let test data into selection."""
    for name in ("train", "val", "trainval", "test_unseen"):
        if name not in dataset.splits or len(dataset.splits[name]) == 0:
            raise InvalidInputError(f"{dataset.name}: split {name!r} is missing or empty; the protocol needs "
                                    "train, val, trainval and test_unseen")
    train_c, val_c = dataset.split_classes("train"), dataset.split_classes("val")
    test_c = dataset.split_classes("test_unseen")
    overlap = np.intersect1d(train_c, val_c)
    if overlap.size:
        raise InvalidInputError(f"{dataset.name}: classes {[dataset.class_names[c] for c in overlap[:5]]} are in both "
                                "train and val; validation classes must be disjoint from training classes")
    leak = np.intersect1d(np.union1d(train_c, val_c), test_c)
    if leak.size:
        raise InvalidInputError(f"{dataset.name}: unseen test classes {[dataset.class_names[c] for c in leak[:5]]} "
                                "appear in train/val")
    test_rows = np.concatenate([dataset.splits["test_unseen"], dataset.splits.get("test_seen", np.zeros(0, np.int64))])
    for name in ("train", "val", "trainval"):
        shared = np.intersect1d(dataset.splits[name], test_rows)
        if shared.size:
            raise InvalidInputError(f"{dataset.name}: {shared.size} rows of {name} are also test rows")
    return train_c, val_c


@torch.no_grad()
def _scores(model: ZslModel, x: np.ndarray, s: np.ndarray, device: str, batch: int = 8192) -> np.ndarray:
    """(n, C) model scores of images x (n, D) against semantics s (C, A), float64."""
    st = torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(device)
    out = [model.scores(torch.from_numpy(x[i:i + batch]).to(device), st).double().cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(s)))


class _Scorer:
    """Scores of image sets against class semantics for one model during selection.

    A model whose class attribute ``static_image_embedding`` is true promises that
    ``embed_images`` does not change between epochs of one ``fit`` (DEM: a fixed visual space);
    its image embeddings are then computed once per image set instead of every epoch.
    """

    def __init__(self, model: ZslModel, device: str):
        self.model, self.device = model, device
        self.static = bool(getattr(type(model), "static_image_embedding", False))
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, name: str, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        if not self.static:
            return _scores(self.model, x, s, self.device)
        self.model.eval()
        if name not in self._cache:
            self._cache[name] = torch.from_numpy(_embed(self.model.embed_images, x, self.device)).to(self.device)
        cls = self.model.embed_classes(torch.from_numpy(np.ascontiguousarray(s, np.float32)).to(self.device))
        return pairwise_scores(self._cache[name], cls, self.model.metric).double().cpu().numpy()


def choose_calibration(scores_seen: np.ndarray, labels_seen: np.ndarray, scores_unseen: np.ndarray,
                       labels_unseen: np.ndarray, seen_classes: np.ndarray, unseen_classes: np.ndarray,
                       n_grid: int = 200) -> tuple[float, dict[str, float], dict[str, float]]:
    """Calibrated-stacking offset maximising H on (pseudo) GZSL data.

    scores_* (n, C) indexed by class id (unused columns -inf). Candidates are 0 and midpoints
    between quantiles of each image's gap "best seen score - best unseen score" (the offsets at
    which predictions flip). Returns (calibration, uncalibrated U/S/H, calibrated U/S/H); ties
    prefer the smallest |calibration|.
    """
    seen_classes, unseen_classes = np.asarray(seen_classes), np.asarray(unseen_classes)
    both = np.concatenate([scores_seen, scores_unseen])
    gaps = both[:, seen_classes].max(1) - both[:, unseen_classes].max(1)
    gaps = gaps[np.isfinite(gaps)]
    qs = np.unique(np.quantile(gaps, np.linspace(0, 1, n_grid + 1))) if gaps.size else np.zeros(1)
    cands = np.concatenate([[0.0], (qs[:-1] + qs[1:]) / 2, [qs[0] - 1e-6, qs[-1] + 1e-6]])
    cands = cands[np.argsort(np.abs(cands), kind="stable")]
    best, best_h = 0.0, -1.0
    for g in cands:
        h = gzsl(scores_seen, labels_seen, scores_unseen, labels_unseen, seen_classes, unseen_classes,
                 float(g)).harmonic
        if h > best_h + 1e-12:
            best, best_h = float(g), h
    raw = gzsl(scores_seen, labels_seen, scores_unseen, labels_unseen, seen_classes, unseen_classes, 0.0)
    cal = gzsl(scores_seen, labels_seen, scores_unseen, labels_unseen, seen_classes, unseen_classes, best)
    fmt = lambda r: {"u": r.unseen, "s": r.seen, "h": r.harmonic}  # noqa: E731
    return best, fmt(raw), fmt(cal)


def _candidates(cls: type[ZslModel], hparams: dict | None) -> list[dict[str, Any]]:
    """The grid with user-given values overriding it; duplicates removed, order kept."""
    fixed = dict(hparams or {})
    out: list[dict[str, Any]] = []
    for c in cls.search_space() or [{}]:
        merged = {**c, **fixed}
        cls._coerce_hparams(merged)  # unknown names -> InvalidInputError before any training
        if merged not in out:
            out.append(merged)
    return out


def hparams_for(model_name: str, hparams: dict[str, Any] | None) -> dict[str, Any]:
    """User hyper-parameters for one model: ``key`` applies to every model, ``model.key`` to that one only."""
    out: dict[str, Any] = {}
    canonical = get_model_class(model_name).name
    for key, value in (hparams or {}).items():
        scope, dot, name = key.rpartition(".")
        if not dot:
            out[key] = value
        elif get_model_class(scope).name == canonical:  # unknown scope -> UnknownNameError
            out[name] = value
    return out


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)


# --- selection + training -------------------------------------------------------------------------

def select_and_train(dataset, model_name: str, *, seed: int = 0, hparams: dict | None = None, device: str = "cpu",
                     log: Log | None = None, modalities: Sequence[str] = ("attributes",), holdout: float = 0.2,
                     patience: int = 5) -> TrainResult:
    """Choose hyper-parameters and training length on the val classes, then refit on trainval.

    ``hparams`` fixes some values (the rest of the grid is still searched). Returns the refitted
    model, a filled :class:`ModelCard` and the selection record (also in ``card.selection``).
    """
    log = log or (lambda msg: None)
    if not 0.0 <= holdout < 1.0:
        raise InvalidInputError(f"holdout={holdout}; must be in [0, 1)")
    cls = get_model_class(model_name)
    candidates = _candidates(cls, hparams_for(model_name, hparams))
    train_c, val_c = _check_protocol_splits(dataset)
    sem, dims = semantic_matrix(dataset, modalities)
    _seed_everything(seed)
    t_sel = time.perf_counter()

    # Selection data: fit part of train, held-out train images, val images. Nothing else is read.
    tr_idx, va_idx = dataset.split_indices("train"), dataset.split_indices("val")
    tr_lab = dataset.labels[tr_idx]
    fit_pos, held_pos = _holdout_split(tr_lab, holdout, np.random.default_rng(seed))
    local = {int(c): i for i, c in enumerate(train_c)}
    x_fit = torch.from_numpy(_rows(dataset, tr_idx[fit_pos])).to(device)
    y_fit = torch.as_tensor([local[int(c)] for c in tr_lab[fit_pos]], dtype=torch.int64, device=device)
    s_train = torch.from_numpy(sem[train_c]).to(device)
    x_val, y_val = _rows(dataset, va_idx), dataset.labels[va_idx]
    x_held, y_held = _rows(dataset, tr_idx[held_pos]), tr_lab[held_pos]
    tv_c = np.union1d(train_c, val_c)
    log(f"[{model_name}] selection: {len(candidates)} candidate(s); fit {len(fit_pos)} images of {len(train_c)} "
        f"train classes, val {len(va_idx)} images of {len(val_c)} val classes, {len(held_pos)} held out")

    best: dict[str, Any] = {"top1": -1.0}
    table: list[dict[str, Any]] = []

    def evaluate_candidate(i: int, scorer: _Scorer, epoch: int, record: dict) -> None:
        sc = scorer("val", x_val, sem[val_c])
        top1 = per_class_top1(val_c[np.argmax(sc, 1)], y_val, val_c)
        record["curve"].append(top1)
        if top1 > record["val_top1"]:
            # val mAP (each val class ranks the val images) is recorded for reports, not used to select
            record["val_top1"], record["best_epoch"] = top1, epoch
            record["val_map"] = mean_average_precision(sc.T, val_c, y_val)[0]
            if len(x_held):
                # the same queries over val images *and* held-out seen images: a val stand-in for
                # searching a whole collection (recorded, used only by callers that choose models)
                mixed = np.concatenate([sc, scorer("held", x_held, sem[val_c])])
                record["val_map_mixed"] = mean_average_precision(mixed.T, val_c, np.concatenate([y_val, y_held]))[0]
        if top1 > best["top1"]:
            full_seen = np.full((len(x_held), len(dataset.class_names)), -np.inf)
            full_unseen = np.full((len(x_val), len(dataset.class_names)), -np.inf)
            if len(x_held):
                full_seen[:, tv_c] = scorer("held", x_held, sem[tv_c])
            full_unseen[:, tv_c] = scorer("val", x_val, sem[tv_c])
            best.update(top1=top1, candidate=i, epoch=epoch, seen=full_seen, unseen=full_unseen)

    for i, hp in enumerate(candidates):
        t0 = time.perf_counter()
        record: dict[str, Any] = {"hparams": hp, "val_top1": -1.0, "best_epoch": None, "curve": []}
        table.append(record)
        if not cls.iterative and hasattr(cls, "fit_grid"):
            continue  # closed-form grids are fitted together below
        _seed_everything(seed)
        model = cls(dataset.feature_dim, dims, hp).to(device)
        scorer = _Scorer(model, device)

        def on_epoch(e: int, i=i, scorer=scorer, record=record) -> None:
            evaluate_candidate(i, scorer, e, record)
            if cls.iterative and record["best_epoch"] is not None and e - record["best_epoch"] >= patience:
                raise _StopTraining

        try:
            losses = model.fit(x_fit, y_fit, s_train, seed=seed, on_epoch=on_epoch)
        except _StopTraining:
            losses = None
        if not record["curve"]:  # a model that never called on_epoch: score it once at the end
            evaluate_candidate(i, _Scorer(model, device), 1, record)
        record["final_loss"] = float(losses[-1]) if losses else None
        record["seconds"] = round(time.perf_counter() - t0, 3)
        log(f"[{model_name}] {hp}: val top-1 {record['val_top1']:.4f}, "
            f"val mAP {record.get('val_map', float('nan')):.4f} "
            f"(epoch {record['best_epoch']}, {record['seconds']:.1f}s)")

    if not cls.iterative and hasattr(cls, "fit_grid"):
        t0 = time.perf_counter()
        grid = cls.fit_grid(dataset.feature_dim, dims, candidates, x_fit, y_fit, s_train, seed=seed)
        for i, (model, losses) in enumerate(grid):
            model.to(device)
            evaluate_candidate(i, _Scorer(model, device), 1, table[i])
            table[i]["final_loss"] = float(losses[-1]) if losses else None
            log(f"[{model_name}] {candidates[i]}: val top-1 {table[i]['val_top1']:.4f}, "
                f"val mAP {table[i].get('val_map', float('nan')):.4f}")
        per = round((time.perf_counter() - t0) / max(1, len(candidates)), 3)
        for r in table:
            r["seconds"] = per  # shared factorisations: the grid's time split evenly

    chosen = dict(candidates[best["candidate"]])
    epochs = best["epoch"] if cls.iterative else None
    cal, val_gzsl, val_gzsl_cal = choose_calibration(best["seen"], y_held, best["unseen"], y_val, train_c, val_c) \
        if len(x_held) else (0.0, {}, {})
    selection_seconds = time.perf_counter() - t_sel
    log(f"[{model_name}] chosen {chosen}" + (f", {epochs} epoch(s)" if epochs else "")
        + f", val top-1 {best['top1']:.4f}, GZSL calibration {cal:.4g} ({selection_seconds:.1f}s)")
    del x_fit, y_fit

    # Refit on all seen classes.
    t_fit = time.perf_counter()
    tv_idx = dataset.split_indices("trainval")
    seen_c = dataset.split_classes("trainval")
    local = {int(c): i for i, c in enumerate(seen_c)}
    x_tv = torch.from_numpy(_rows(dataset, tv_idx)).to(device)
    y_tv = torch.as_tensor([local[int(c)] for c in dataset.labels[tv_idx]], dtype=torch.int64, device=device)
    final_hp = dict(chosen)
    if epochs is not None and "epochs" in {f.name for f in dataclasses.fields(cls.Hparams)}:
        final_hp["epochs"] = epochs
    _seed_everything(seed)
    model = cls(dataset.feature_dim, dims, final_hp).to(device)
    losses = model.fit(x_tv, y_tv, torch.from_numpy(sem[seen_c]).to(device), seed=seed, epochs=epochs)
    model.eval()
    train_seconds = time.perf_counter() - t_fit
    log(f"[{model_name}] refit on trainval ({len(tv_idx)} images, {len(seen_c)} classes): {train_seconds:.1f}s")

    names = dataset.class_names
    selection = {
        "criterion": "per-class top-1 of val images among val classes",
        "train_classes": [names[c] for c in train_c],
        "val_classes": [names[c] for c in val_c],
        "n_fit_images": int(len(fit_pos)), "n_holdout_images": int(len(held_pos)), "n_val_images": int(len(va_idx)),
        "holdout_fraction": holdout, "patience": patience if cls.iterative else None,
        "candidates": [{k: v for k, v in r.items()} for r in table],
        "chosen": chosen, "epochs": epochs, "val_top1": best["top1"],
        "val_map": table[best["candidate"]].get("val_map"),
        "val_map_mixed": table[best["candidate"]].get("val_map_mixed"),
        "gzsl_calibration": cal, "val_gzsl": val_gzsl, "val_gzsl_calibrated": val_gzsl_cal,
        "refit": "trainval" + (", same number of epochs" if epochs else ""),
        "refit_final_loss": float(losses[-1]) if losses else None,
        "selection_seconds": round(selection_seconds, 3),
        "val_split": dataset.meta.get("val_split", ""),
    }
    unseen_c = dataset.split_classes("test_unseen")
    card = ModelCard(
        model=cls.name, hparams=model.hparams.to_dict(), feature_dim=dataset.feature_dim, semantic_dims=dims,
        dataset=dataset.name, split="trainval", seed=seed, metric=cls.metric, class_names=list(names),
        seen_classes=[names[c] for c in seen_c], unseen_classes=[names[c] for c in unseen_c],
        vocabulary=list(dataset.attribute_names), semantic_norm=dataset.semantic_norm,
        semantic_modalities=list(modalities), feature_source=_feature_source(dataset),
        feature_transform=dataset.feature_transform, selection=selection, train_seconds=round(train_seconds, 3))
    return TrainResult(model=model, card=card, selection=selection)


def _feature_source(dataset) -> str:
    meta = dataset.meta or {}
    for key in ("feature_source", "backbone", "source"):
        if meta.get(key):
            return str(meta[key])
    return dataset.name


# --- evaluation -----------------------------------------------------------------------------------

def check_compatible(model: ZslModel, card: ModelCard | None, dataset, modalities: Sequence[str]) -> None:
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


@torch.no_grad()
def _embed(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, device: str, batch: int = 8192) -> np.ndarray:
    out = [fn(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)).to(device)).float().cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


def _l2n(a: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(n > 0, n, 1.0)


def evaluate(model: ZslModel, dataset, metrics: Sequence[str] = DEFAULT_METRICS, *, calibration: float | None = None,
             searcher_factory: SearcherFactory = NumpySearcher, card: ModelCard | None = None,
             modalities: Sequence[str] | None = None, device: str = "cpu", k: int | None = None) -> dict[str, float]:
    """Metrics on the test splits: ``test_unseen`` (top1, map, map_at_k) and ``test_seen`` (gzsl).

    Embeddings: ``metric="ip"`` models are L2-normalised (cosine), ``"l2"`` models are used raw.
    GZSL is reported uncalibrated (``gzsl_u/s/h``) and, when a calibration is known -- the
    argument, else ``card.selection["gzsl_calibration"]`` (chosen on val) -- calibrated
    (``gzsl_cal_u/s/h`` + ``gzsl_calibration``). Never chooses anything on test data.
    """
    metrics = list(dict.fromkeys(metrics))
    AccuracyCalculator(include=metrics)  # validates names
    if modalities is None:
        modalities = card.semantic_modalities if card is not None else ["attributes"]
    check_compatible(model, card, dataset, modalities)
    if calibration is None and card is not None:
        calibration = card.selection.get("gzsl_calibration")
    sem, _ = semantic_matrix(dataset, modalities)
    model = model.to(device).eval()
    class_emb = _embed(model.embed_classes, sem, device)
    unseen_x, unseen_y = dataset.subset("test_unseen")
    unseen_emb = _embed(model.embed_images, unseen_x, device)
    seen_emb = seen_y = None
    if "gzsl" in metrics and len(dataset.splits.get("test_seen", ())):
        seen_x, seen_y = dataset.subset("test_seen")
        seen_emb = _embed(model.embed_images, seen_x, device)
    if model.metric == "ip":
        class_emb, unseen_emb = _l2n(class_emb), _l2n(unseen_emb)
        seen_emb = _l2n(seen_emb) if seen_emb is not None else None
    inputs = EvalInputs(class_emb=class_emb, metric=model.metric, unseen_classes=dataset.split_classes("test_unseen"),
                        seen_classes=dataset.split_classes("trainval"), unseen_emb=unseen_emb, unseen_labels=unseen_y,
                        seen_emb=seen_emb, seen_labels=seen_y)
    calc = AccuracyCalculator(include=metrics, k=k, calibration=0.0, searcher_factory=searcher_factory)
    out = calc.get_accuracy(inputs)
    out.pop("gzsl_calibration", None)
    if "gzsl" in metrics and seen_emb is not None and calibration is not None:
        cal = AccuracyCalculator(include=["gzsl"], calibration=float(calibration),
                                 searcher_factory=searcher_factory).get_accuracy(inputs)
        out.update({"gzsl_cal_u": cal["gzsl_u"], "gzsl_cal_s": cal["gzsl_s"], "gzsl_cal_h": cal["gzsl_h"],
                    "gzsl_calibration": cal["gzsl_calibration"]})
    return {k_: float(v) for k_, v in out.items()}


def split_info(dataset) -> dict[str, Any]:
    """Image and class counts of each split, for reports."""
    info = {name: {"images": int(len(idx)), "classes": int(len(np.unique(dataset.labels[idx])))}
            for name, idx in dataset.splits.items()}
    return {"feature_dim": dataset.feature_dim, "semantic_dim": dataset.semantic_dim,
            "feature_transform": dataset.feature_transform, "val_split": dataset.meta.get("val_split", ""),
            "splits": info}


# --- CLI configs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class DataConfig:
    """Where the data comes from: a registered benchmark, or a user's image folders."""

    dataset: str | None = None
    data_root: str | None = None
    images: str | None = None
    class_attributes: str | None = None
    unseen: str | None = None
    backbone: str = "efficientnet-lite0"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        custom = [self.images, self.class_attributes, self.unseen]
        if self.dataset and any(custom):
            raise InvalidInputError("--dataset and --images/--class-attributes/--unseen are mutually exclusive; "
                                    "give a benchmark name or a folder of your own images")
        if not self.dataset and not all(custom):
            missing = [n for n, v in (("--images", self.images), ("--class-attributes", self.class_attributes),
                                      ("--unseen", self.unseen)) if not v]
            raise InvalidInputError("no data given: use --dataset NAME, or --images DIR --class-attributes CSV "
                                    f"--unseen FILE (missing: {', '.join(missing)})")

    def load(self):
        if self.dataset:
            from .data import load_dataset
            return load_dataset(self.dataset, self.data_root, seed=self.seed)
        from .data.custom import load_custom_dataset  # heavy (backbones); only for user folders
        return load_custom_dataset(self.images, self.class_attributes, self.unseen, backbone=self.backbone,
                                   seed=self.seed, device="auto" if self.device == "cpu" else self.device)


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: DataConfig
    out: str | None = None
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    modalities: tuple[str, ...] = ("attributes",)

    def out_path(self, dataset_name: str) -> Path:
        if self.out:
            return Path(self.out)
        return Path("runs") / f"{dataset_name}-{self.model}-seed{self.data.seed}.pt"


@dataclasses.dataclass
class TrainReport:
    checkpoint: Path
    card_path: Path
    card: ModelCard
    selection: dict[str, Any]
    load_seconds: float
    total_seconds: float


def train_from_config(cfg: TrainConfig, log: Log | None = None) -> TrainReport:
    """``zslr train``: load data, select + refit, write the checkpoint and its card."""
    t0 = time.perf_counter()
    get_model_class(cfg.model)  # unknown model -> error before loading data
    dataset = cfg.data.load()
    load_seconds = time.perf_counter() - t0
    result = select_and_train(dataset, cfg.model, seed=cfg.data.seed, hparams=cfg.hparams, device=cfg.data.device,
                              log=log, modalities=cfg.modalities)
    path = cfg.out_path(dataset.name)
    save_checkpoint(result.model, result.card, path, torch.from_numpy(semantic_matrix(dataset, cfg.modalities)[0]))
    return TrainReport(checkpoint=path, card_path=path.with_name(path.name + ".card.json"), card=result.card,
                       selection=result.selection, load_seconds=round(load_seconds, 3),
                       total_seconds=round(time.perf_counter() - t0, 3))


@dataclasses.dataclass
class EvalConfig:
    data: DataConfig
    models: tuple[str, ...] = ()
    checkpoint: str | None = None
    metrics: tuple[str, ...] = DEFAULT_METRICS
    calibration: float | None = None
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    modalities: tuple[str, ...] = ("attributes",)
    searcher: str = "numpy"
    # mAP through the engine (real index + catalog + class queries) and checked against the
    # direct computation; False reports the direct value only (no index is written).
    engine: bool = True
    engine_root: str | None = None

    def __post_init__(self) -> None:
        if self.models and self.checkpoint:
            raise InvalidInputError("give --model NAME (repeatable; trains with the protocol) or --checkpoint PATH, "
                                    "not both")
        AccuracyCalculator(include=self.metrics)


# Engine and direct mAP rank the same embeddings with different code (FAISS vs numpy, float32
# vs float64 scores); ties and rounding may move an AP by ~1e-7, never more than this.
ENGINE_MAP_TOLERANCE = 1e-6


def _engine_map_checked(model: ZslModel, card: ModelCard, dataset, direct_map: float,
                        root: str | None) -> dict[str, Any]:
    """mAP through :func:`zslretrieval.query.engine_map`, raising when it disagrees with ``direct_map``."""
    from .query import engine_map

    t0 = time.perf_counter()
    m, per_class = engine_map(model, card, dataset, root=root)
    if not abs(m - direct_map) <= ENGINE_MAP_TOLERANCE:
        raise ConsistencyError(f"engine-path mAP {m:.8f} differs from the direct computation {direct_map:.8f} by "
                               f"more than {ENGINE_MAP_TOLERANCE}; the index or query path ranks differently")
    return {"map": float(m), "direct_map": float(direct_map), "per_class_ap": per_class,
            "seconds": round(time.perf_counter() - t0, 3)}


def eval_from_config(cfg: EvalConfig, log: Log | None = None) -> dict[str, Any]:
    """``zslr eval``: evaluate a checkpoint, or train each model with the protocol and evaluate it.

    Returns one JSON-serialisable report: dataset, split info, seed, and per model the chosen
    hyper-parameters, val scores, test metrics and wall times.
    """
    from .index.searchers import make_searcher

    t0 = time.perf_counter()
    log = log or (lambda msg: None)
    if cfg.checkpoint:
        model, card, _ = load_checkpoint(cfg.checkpoint)
        entries = [(model, card, 0.0)]
    else:
        for name in cfg.models:
            get_model_class(name)
        entries = []
    # Data first: a missing benchmark file is the more useful message even when no model was named.
    dataset = cfg.data.load()
    load_seconds = time.perf_counter() - t0
    if not cfg.models and not cfg.checkpoint:
        raise InvalidInputError("nothing to evaluate: give --model NAME (repeatable; trains with the protocol) "
                                "or --checkpoint PATH")

    def factory(dim: int, metric: str):
        return make_searcher(cfg.searcher, dim, metric)

    results = []
    todo: list[Any] = list(entries) if cfg.checkpoint else list(cfg.models)
    for item in todo:
        if isinstance(item, str):
            t1 = time.perf_counter()
            res = select_and_train(dataset, item, seed=cfg.data.seed, hparams=cfg.hparams, device=cfg.data.device,
                                   log=log, modalities=cfg.modalities)
            model, card, train_wall = res.model, res.card, time.perf_counter() - t1
        else:
            model, card, train_wall = item
        t2 = time.perf_counter()
        metrics = evaluate(model, dataset, cfg.metrics, calibration=cfg.calibration, searcher_factory=factory,
                           card=card, device=cfg.data.device)
        engine_check = None
        if cfg.engine and "map" in metrics:
            engine_check = _engine_map_checked(model, card, dataset, metrics["map"], cfg.engine_root)
            metrics["map"] = engine_check["map"]
        eval_seconds = time.perf_counter() - t2
        log(f"[{card.model}] " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        sel = card.selection or {}
        results.append({
            "model": card.model, "checkpoint": cfg.checkpoint, "trained_on": card.dataset, "hparams": card.hparams,
            "epochs": sel.get("epochs"), "val_top1": sel.get("val_top1"), "val_map": sel.get("val_map"),
            "val_gzsl": sel.get("val_gzsl"), "val_gzsl_calibrated": sel.get("val_gzsl_calibrated"),
            "gzsl_calibration": metrics.get("gzsl_calibration", sel.get("gzsl_calibration")),
            "selection": [{"hparams": r["hparams"], "val_top1": r["val_top1"], "val_map": r.get("val_map"),
                           "best_epoch": r.get("best_epoch")}
                          for r in sel.get("candidates", [])],
            "metrics": metrics, "map_engine": engine_check,
            "train_seconds": round(train_wall, 3), "refit_seconds": card.train_seconds,
            "selection_seconds": sel.get("selection_seconds"), "eval_seconds": round(eval_seconds, 3),
        })
    return {
        "dataset": dataset.name, "data": split_info(dataset), "seed": cfg.data.seed,
        "metrics_requested": list(cfg.metrics), "searcher": cfg.searcher,
        "results": results,
        "load_seconds": round(load_seconds, 3), "wall_seconds": round(time.perf_counter() - t0, 3),
        "host": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "cpus": os.cpu_count()},
    }


def to_json(report: dict[str, Any]) -> str:
    """One JSON object; non-finite floats become null so strict parsers accept it."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, np.integer)):
            return clean(v.item())
        if isinstance(v, Path):
            return str(v)
        return v
    return json.dumps(clean(report), sort_keys=False)
