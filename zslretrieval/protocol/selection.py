"""Hyper-parameter and training-length selection on validation classes, then the refit on trainval.

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
   maximising the harmonic mean is kept in ``selection["gzsl_calibration"]``, in units of
   per-image standardised scores (``gzsl_calibration_space="z"``) so that it transfers to the refit.
5. The winner is refitted on ``trainval`` with the chosen values. Iterative models keep the chosen
   number of *epochs* (passes over the data): trainval is only ~1.2-1.5x train, and GBU keeps
   epochs fixed too, so the refit makes proportionally more optimiser steps on more data.

Each candidate's measurements live in a :class:`CandidateRecord`; the running winner in a
:class:`_Winner`; :class:`_ValidationSet` owns the val data and updates both. :func:`select_and_train`
runs the steps in this order, one function each: ``_candidate_list`` (the grid), ``_selection_data``
(1.), ``_search_candidates`` or ``_search_grid`` (2.-3.), ``_choose_gzsl_and_correction`` (4., and
the retrieval score correction on the same data), ``_refit`` and ``_refit_correction`` (5.).
Which rows may be read is ``splits.py``; how a model's scores are computed, ``scoring.py``.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..correction import ScoreCorrection, score_unit
from ..data.base import ZslDataset, semantic_matrix
from ..errors import InvalidInputError
from ..metrics import gzsl, mean_average_precision, per_class_top1
from ..metrics.classification import standardize_rows
from ..metrics.correction_choice import choose_correction
from ..models import ZslModel, get_model_class
from ..models.checkpoint import ModelCard
from .scoring import CachedScorer, model_scores
from .splits import check_protocol_splits, feature_rows, holdout_split

Log = Callable[[str], None]
# Units of the GZSL calibration offset (metrics.classification.gzsl): per-image z-scores.
CALIBRATION_SPACE = "z"
# Training images the refit model's score spread (the posterior correction's unit) is measured on.
UNIT_SAMPLE = 4096


@dataclasses.dataclass
class TrainResult:
    model: ZslModel
    card: ModelCard
    selection: dict[str, Any]


@dataclasses.dataclass
class CandidateRecord:
    """What selection measured for one hyper-parameter candidate (one row of ``selection["candidates"]``)."""

    hparams: dict[str, Any]
    val_top1: float = -1.0
    best_epoch: int | None = None
    curve: list[float] = dataclasses.field(default_factory=list)  # val top-1 after each epoch
    val_map: float | None = None          # val mAP at the best epoch (reported, never used to select)
    val_map_mixed: float | None = None    # same queries over val + held-out seen images (reported)
    final_loss: float | None = None
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in cards and reports (``val_map*`` only when measured)."""
        out: dict[str, Any] = {"hparams": self.hparams, "val_top1": self.val_top1, "best_epoch": self.best_epoch,
                               "curve": self.curve}
        if self.val_map is not None:
            out["val_map"] = self.val_map
        if self.val_map_mixed is not None:
            out["val_map_mixed"] = self.val_map_mixed
        out["final_loss"], out["seconds"] = self.final_loss, self.seconds
        return out


@dataclasses.dataclass
class _Winner:
    """The best (candidate, epoch) so far and its pseudo-GZSL score matrices (for calibration)."""

    top1: float = -1.0
    candidate: int = -1
    epoch: int | None = None
    seen: np.ndarray | None = None     # (n_held, C) scores of held-out train images, -inf off train+val classes
    unseen: np.ndarray | None = None   # (n_val, C) scores of val images, same columns


class _StopTraining(Exception):
    """Raised from the epoch callback to end a candidate early (works with any model's ``fit``)."""


@dataclasses.dataclass
class _ValidationSet:
    """The selection data that is scored (val images among val classes, held-out train images)."""

    sem: np.ndarray            # (C, S) class descriptors of every class
    n_classes: int
    val_c: np.ndarray          # val class ids
    tv_c: np.ndarray           # train + val class ids (the pseudo-GZSL label space)
    x_val: np.ndarray
    y_val: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray

    def observe(self, index: int, scorer: CachedScorer, epoch: int, record: CandidateRecord, winner: _Winner) -> None:
        """Score candidate ``index`` after ``epoch``; update its record and, if it leads, the winner."""
        sc = scorer("val", self.x_val, self.sem[self.val_c])
        top1 = per_class_top1(self.val_c[np.argmax(sc, 1)], self.y_val, self.val_c)
        record.curve.append(top1)
        if top1 > record.val_top1:
            # val mAP (each val class ranks the val images) is recorded for reports, not used to select
            record.val_top1, record.best_epoch = top1, epoch
            record.val_map = mean_average_precision(sc.T, self.val_c, self.y_val)[0]
            if len(self.x_held):
                # the same queries over val images *and* held-out seen images: a val stand-in for
                # searching a whole collection (recorded, used only by callers that choose models)
                mixed = np.concatenate([sc, scorer("held", self.x_held, self.sem[self.val_c])])
                record.val_map_mixed = mean_average_precision(mixed.T, self.val_c,
                                                              np.concatenate([self.y_val, self.y_held]))[0]
        if top1 > winner.top1:
            full_seen = np.full((len(self.x_held), self.n_classes), -np.inf)
            full_unseen = np.full((len(self.x_val), self.n_classes), -np.inf)
            if len(self.x_held):
                full_seen[:, self.tv_c] = scorer("held", self.x_held, self.sem[self.tv_c])
            full_unseen[:, self.tv_c] = scorer("val", self.x_val, self.sem[self.tv_c])
            winner.top1, winner.candidate, winner.epoch = top1, index, epoch
            winner.seen, winner.unseen = full_seen, full_unseen


def choose_calibration(scores_seen: np.ndarray, labels_seen: np.ndarray, scores_unseen: np.ndarray,
                       labels_unseen: np.ndarray, seen_classes: np.ndarray, unseen_classes: np.ndarray,
                       n_grid: int = 200, space: str = "raw") -> tuple[float, dict[str, float], dict[str, float]]:
    """Calibrated-stacking offset maximising H on (pseudo) GZSL data.

    scores_* (n, C) indexed by class id (unused columns -inf). Candidates are 0 and midpoints
    between quantiles of each image's gap "best seen score - best unseen score" (the offsets at
    which predictions flip). Returns (calibration, uncalibrated U/S/H, calibrated U/S/H); ties
    prefer the smallest |calibration|. ``space="z"``: the offset is in units of per-image
    standardised scores (:func:`~zslretrieval.metrics.classification.standardize_rows`), which is
    how the protocol carries it from the selection model to the refit one.
    """
    seen_classes, unseen_classes = np.asarray(seen_classes), np.asarray(unseen_classes)
    if space == "z":
        both = np.concatenate([seen_classes, unseen_classes])
        scores_seen, scores_unseen = standardize_rows(scores_seen, both), standardize_rows(scores_unseen, both)
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


def dataset_hparams(cls: type[ZslModel], dataset: ZslDataset) -> dict[str, Any]:
    """Dataset facts a model uses that are not hyper-parameters to tune: the feature groups
    (awa1-lampert: lss, sift, surf, rgsift, phog; multi-stage backbones: one group per stage) for
    models with a ``feature_groups`` field (DML's attention). Applied on every path (train, eval,
    benchmarks); a user-given value wins."""
    fields = {f.name for f in dataclasses.fields(cls.Hparams)}
    groups = (dataset.meta or {}).get("feature_groups")
    if "feature_groups" in fields and isinstance(groups, dict) and len(groups) > 1 \
            and sum(groups.values()) == dataset.feature_dim:
        return {"feature_groups": [int(v) for v in groups.values()]}
    return {}


def _candidates(cls: type[ZslModel], hparams: dict | None, facts: dict | None = None) -> list[dict[str, Any]]:
    """The grid with dataset facts, then user-given values, overriding it; duplicates removed, order kept."""
    fixed = {**(facts or {}), **(hparams or {})}
    out: list[dict[str, Any]] = []
    # a composite model's grid depends on what is fixed (the ensemble: subsets of its pool)
    space = cls.search_space_for(fixed) if hasattr(cls, "search_space_for") else cls.search_space()
    for c in space or [{}]:
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


def _feature_source(dataset: ZslDataset) -> str:
    meta = dataset.meta or {}
    for key in ("feature_source", "backbone", "source"):
        if meta.get(key):
            return str(meta[key])
    return dataset.name


# --- selection + training -------------------------------------------------------------------------

@dataclasses.dataclass
class _FitSet:
    """What candidates are fitted on during selection: the fit part of ``train``."""

    x: torch.Tensor            # (n, D) image features
    y: torch.Tensor            # (n,) int64 positions into the train classes
    s: torch.Tensor            # (C_train, S) descriptors of the train classes only


def select_and_train(dataset: ZslDataset, model_name: str, *, seed: int = 0, hparams: dict | None = None,
                     device: str = "cpu", log: Log | None = None, modalities: Sequence[str] = ("attributes",),
                     holdout: float = 0.2, patience: int = 5) -> TrainResult:
    """Choose hyper-parameters and training length on the val classes, then refit on trainval.

    ``hparams`` fixes some values (the rest of the grid is still searched). Returns the refitted
    model, a filled :class:`ModelCard` and the selection record (also in ``card.selection``).
    The steps run in the order of the module docstring; the seeded random streams depend on that order.
    """
    log = log or (lambda msg: None)
    if not 0.0 <= holdout < 1.0:
        raise InvalidInputError(f"holdout={holdout}; must be in [0, 1)")
    cls = get_model_class(model_name)
    candidates = _candidate_list(dataset, cls, hparams, seed=seed, device=device, log=log, modalities=modalities,
                                 holdout=holdout, patience=patience)
    train_c, val_c = check_protocol_splits(dataset)
    sem, dims = semantic_matrix(dataset, modalities)
    _seed_everything(seed)
    t_sel = time.perf_counter()
    fit, val = _selection_data(dataset, sem, train_c, val_c, holdout=holdout, seed=seed, device=device)
    n_fit = len(fit.y)
    log(f"[{model_name}] selection: {len(candidates)} candidate(s); fit {n_fit} images of {len(train_c)} "
        f"train classes, val {len(val.x_val)} images of {len(val_c)} val classes, {len(val.x_held)} held out")

    winner = _Winner()
    table = [CandidateRecord(hparams=hp) for hp in candidates]
    search = _search_grid if not cls.iterative and hasattr(cls, "fit_grid") else _search_candidates
    search(cls, model_name, candidates, table, winner, fit, val, dims, seed=seed, device=device, log=log,
           patience=patience)
    chosen = dict(candidates[winner.candidate])
    epochs = winner.epoch if cls.iterative else None
    cal, val_gzsl, val_gzsl_cal, correction, correction_table = _choose_gzsl_and_correction(winner, val, train_c, val_c)
    selection_seconds = time.perf_counter() - t_sel
    log(f"[{model_name}] chosen {chosen}" + (f", {epochs} epoch(s)" if epochs else "")
        + f", val top-1 {winner.top1:.4f}, GZSL calibration {cal:.4g}, retrieval correction "
        f"{correction.describe()} ({selection_seconds:.1f}s)")
    del fit

    t_fit = time.perf_counter()
    tv_idx, seen_c = dataset.split_indices("trainval"), dataset.split_classes("trainval")
    model, losses = _refit(dataset, cls, dims, sem, chosen, epochs, tv_idx, seen_c, seed=seed, device=device)
    train_seconds = time.perf_counter() - t_fit
    log(f"[{model_name}] refit on trainval ({len(tv_idx)} images, {len(seen_c)} classes): {train_seconds:.1f}s")

    unseen_c = dataset.split_classes("test_unseen")
    correction, val_unit, refit_unit = _refit_correction(model, dataset, sem, tv_idx, np.concatenate([seen_c, unseen_c]),
                                                         correction, correction_table, device)
    names = dataset.class_names
    best = table[winner.candidate]
    selection = {
        "criterion": "per-class top-1 of val images among val classes",
        "train_classes": [names[c] for c in train_c],
        "val_classes": [names[c] for c in val_c],
        "n_fit_images": int(n_fit), "n_holdout_images": int(len(val.x_held)), "n_val_images": int(len(val.x_val)),
        "holdout_fraction": holdout, "patience": patience if cls.iterative else None,
        "candidates": [r.to_dict() for r in table],
        "chosen": chosen, "epochs": epochs, "val_top1": winner.top1,
        "val_map": best.val_map,
        "val_map_mixed": best.val_map_mixed,
        "gzsl_calibration": cal, "gzsl_calibration_space": CALIBRATION_SPACE, "val_gzsl": val_gzsl, "val_gzsl_calibrated": val_gzsl_cal,
        "retrieval_correction": correction.to_dict(), "retrieval_correction_candidates": correction_table,
        "retrieval_correction_unit": {"val": val_unit, "refit": refit_unit},
        "refit": "trainval" + (", same number of epochs" if epochs else ""),
        "refit_final_loss": float(losses[-1]) if losses else None,
        "selection_seconds": round(selection_seconds, 3),
        "val_split": dataset.meta.get("val_split", ""),
    }
    card = ModelCard(
        model=cls.name, hparams=model.hparams.to_dict(), feature_dim=dataset.feature_dim, semantic_dims=dims,
        dataset=dataset.name, split="trainval", seed=seed, metric=cls.metric, class_names=list(names),
        seen_classes=[names[c] for c in seen_c], unseen_classes=[names[c] for c in unseen_c],
        vocabulary=list(dataset.attribute_names), semantic_norm=dataset.semantic_norm,
        semantic_modalities=list(modalities), feature_source=_feature_source(dataset),
        feature_transform=dataset.feature_transform, selection=selection, train_seconds=round(train_seconds, 3),
        text_encoder=_text_encoder(modalities))
    return TrainResult(model=model, card=card, selection=selection)


def _candidate_list(dataset: ZslDataset, cls: type[ZslModel], hparams: dict | None, *, seed: int, device: str,
                    log: Log, modalities: Sequence[str], holdout: float, patience: int) -> list[dict[str, Any]]:
    """The hyper-parameter sets to try on val: the model's grid with dataset facts and user values
    fixed. A composite model's members are chosen first, each by its own selection on val."""
    own = hparams_for(cls.name, hparams)
    facts = dataset_hparams(cls, dataset)
    if getattr(cls, "composite", False) and "member_hparams" not in own:
        facts["member_hparams"] = _select_members(dataset, cls, own, hparams, seed=seed, device=device, log=log,
                                                  modalities=modalities, holdout=holdout, patience=patience)
    return _candidates(cls, own, facts)


def _selection_data(dataset: ZslDataset, sem: np.ndarray, train_c: np.ndarray, val_c: np.ndarray, *, holdout: float,
                    seed: int, device: str) -> tuple[_FitSet, _ValidationSet]:
    """What selection reads, and nothing else: the fit part of ``train`` (chooses nothing), and
    the val images with the ``holdout`` train images (seeded per class) that every choice is scored on."""
    tr_idx, va_idx = dataset.split_indices("train"), dataset.split_indices("val")
    tr_lab = dataset.labels[tr_idx]
    fit_pos, held_pos = holdout_split(tr_lab, holdout, np.random.default_rng(seed))
    local = {int(c): i for i, c in enumerate(train_c)}
    fit = _FitSet(x=torch.from_numpy(feature_rows(dataset, tr_idx[fit_pos])).to(device),
                  y=torch.as_tensor([local[int(c)] for c in tr_lab[fit_pos]], dtype=torch.int64, device=device),
                  s=torch.from_numpy(sem[train_c]).to(device))
    val = _ValidationSet(sem=sem, n_classes=len(dataset.class_names), val_c=val_c, tv_c=np.union1d(train_c, val_c),
                         x_val=feature_rows(dataset, va_idx), y_val=dataset.labels[va_idx],
                         x_held=feature_rows(dataset, tr_idx[held_pos]), y_held=tr_lab[held_pos])
    return fit, val


def _search_candidates(cls: type[ZslModel], model_name: str, candidates: list[dict[str, Any]],
                       table: list[CandidateRecord], winner: _Winner, fit: _FitSet, val: _ValidationSet, dims: list[int],
                       *, seed: int, device: str, log: Log, patience: int) -> None:
    """One fit per candidate on the fit part, measuring val top-1 among the val classes after
    every epoch. Chooses each candidate's training length (its best epoch; training
    stops ``patience`` epochs after it) and the winner (best val top-1; ties: the earlier one)."""
    for i, (hp, record) in enumerate(zip(candidates, table)):
        t0 = time.perf_counter()
        _seed_everything(seed)
        model = cls(fit.x.shape[1], dims, hp).to(device)
        scorer = CachedScorer(model, device)

        def on_epoch(e: int, i=i, scorer=scorer, record=record) -> None:
            val.observe(i, scorer, e, record, winner)
            if cls.iterative and record.best_epoch is not None and e - record.best_epoch >= patience:
                raise _StopTraining

        try:
            losses = model.fit(fit.x, fit.y, fit.s, seed=seed, on_epoch=on_epoch)
        except _StopTraining:
            losses = None
        if not record.curve:  # a model that never called on_epoch: score it once at the end
            val.observe(i, CachedScorer(model, device), 1, record, winner)
        record.final_loss = float(losses[-1]) if losses else None
        record.seconds = round(time.perf_counter() - t0, 3)
        log(f"[{model_name}] {hp}: val top-1 {record.val_top1:.4f}, "
            f"val mAP {record.val_map if record.val_map is not None else float('nan'):.4f} "
            f"(epoch {record.best_epoch}, {record.seconds:.1f}s)")


def _search_grid(cls: type[ZslModel], model_name: str, candidates: list[dict[str, Any]], table: list[CandidateRecord],
                 winner: _Winner, fit: _FitSet, val: _ValidationSet, dims: list[int], *, seed: int, device: str,
                 log: Log, patience: int) -> None:
    """A closed-form grid (``cls.fit_grid``): all candidates fitted together on the fit part
    (shared factorisations), each scored once by val top-1 among the val classes; chooses the winner
    (ties: the earlier candidate). ``patience`` does not apply: there are no epochs."""
    t0 = time.perf_counter()
    grid = cls.fit_grid(fit.x.shape[1], dims, candidates, fit.x, fit.y, fit.s, seed=seed)
    for i, (model, losses) in enumerate(grid):
        model.to(device)
        val.observe(i, CachedScorer(model, device), 1, table[i], winner)
        table[i].final_loss = float(losses[-1]) if losses else None
        # a composite model's member settings are the same in every candidate (logged when chosen)
        shown = {k: v for k, v in candidates[i].items() if k != "member_hparams"}
        log(f"[{model_name}] {shown}: val top-1 {table[i].val_top1:.4f}, "
            f"val mAP {table[i].val_map if table[i].val_map is not None else float('nan'):.4f}")
    per = round((time.perf_counter() - t0) / max(1, len(candidates)), 3)
    for r in table:
        r.seconds = per  # shared factorisations: the grid's time split evenly


def _choose_gzsl_and_correction(winner: _Winner, val: _ValidationSet, train_c: np.ndarray, val_c: np.ndarray):
    """On the winner's pseudo-GZSL scores (val images as pseudo-unseen, held-out train images as
    pseudo-seen), choose the GZSL calibration (max harmonic mean) and the retrieval score correction
    (val classes query val + held-out seen images). Returns (calibration, val GZSL uncalibrated,
    calibrated, correction, the correction candidates' table); neutral values without held-out images."""
    if not len(val.x_held):
        return 0.0, {}, {}, ScoreCorrection(), []
    # Chosen on the selection model, applied to the refit one: in per-image z units, because the
    # refit (more classes, more images) changes the raw score scale -- raw offsets carried over
    # made ESZSL's calibrated H fall below its uncalibrated H on test.
    cal, val_gzsl, val_gzsl_cal = choose_calibration(winner.seen, val.y_held, winner.unseen, val.y_val, train_c,
                                                     val_c, space=CALIBRATION_SPACE)
    # the per-image terms of the correction use the train classes
    correction, table = choose_correction(winner.seen, val.y_held, winner.unseen, val.y_val, train_c, val_c)
    return cal, val_gzsl, val_gzsl_cal, correction, table


def _refit(dataset: ZslDataset, cls: type[ZslModel], dims: list[int], sem: np.ndarray, chosen: dict[str, Any],
           epochs: int | None, tv_idx: np.ndarray, seen_c: np.ndarray, *, seed: int,
           device: str) -> tuple[ZslModel, list[float] | None]:
    """Refit the chosen values on ``trainval`` (all seen classes); chooses nothing. An iterative
    model keeps the chosen number of epochs. Returns (model in eval mode, its per-epoch losses)."""
    local = {int(c): i for i, c in enumerate(seen_c)}
    x_tv = torch.from_numpy(feature_rows(dataset, tv_idx)).to(device)
    y_tv = torch.as_tensor([local[int(c)] for c in dataset.labels[tv_idx]], dtype=torch.int64, device=device)
    final_hp = dict(chosen)
    if epochs is not None and "epochs" in {f.name for f in dataclasses.fields(cls.Hparams)}:
        final_hp["epochs"] = epochs
    _seed_everything(seed)
    model = cls(dataset.feature_dim, dims, final_hp).to(device)
    losses = model.fit(x_tv, y_tv, torch.from_numpy(sem[seen_c]).to(device), seed=seed, epochs=epochs)
    model.eval()
    return model, losses


def _refit_correction(model: ZslModel, dataset: ZslDataset, sem: np.ndarray, tv_idx: np.ndarray, classes: np.ndarray,
                      correction: ScoreCorrection, table: list[dict], device: str):
    """Carry the correction chosen on val to the refit model, choosing nothing new. A posterior
    temperature is relative to the selection model's score spread (its unit); the refit model's spread
    is measured the same way -- its training images against every class (``classes``) it will be asked
    to tell apart -- so the relative temperature keeps its meaning. Returns (correction, val unit, refit unit)."""
    sample = tv_idx[np.linspace(0, len(tv_idx) - 1, min(len(tv_idx), UNIT_SAMPLE)).astype(np.int64)]
    refit_unit = score_unit(model_scores(model, feature_rows(dataset, sample), sem[classes], device))
    val_unit = next((r["unit"] for r in table if r.get("kind") == "posterior"), None)
    if correction.kind == "posterior":
        correction = dataclasses.replace(correction, unit=refit_unit)
    return correction, val_unit, refit_unit


def _select_members(dataset: ZslDataset, cls: type[ZslModel], own: dict[str, Any], hparams: dict | None, *,
                    seed: int, device: str, log: Log, modalities: Sequence[str], holdout: float,
                    patience: int) -> dict[str, dict[str, Any]]:
    """Each pool member's hyper-parameters and epochs, chosen on val by its own protocol run (same
    seed, split and held-out images as the ensemble's); user values scoped ``member.key`` reach it."""
    # the members a user fixed, else the whole pool: no selection run for a model the ensemble cannot use
    pool = cls.member_names(cls._coerce_hparams({k: own[k] for k in ("pool", "members") if k in own}))
    scoped = {k: v for k, v in (hparams or {}).items() if "." in k and k.split(".")[0] != cls.name}
    chosen: dict[str, dict[str, Any]] = {}
    for name in pool:
        log(f"[{cls.name}] member {name}: its own selection on val")
        run = select_and_train(dataset, name, seed=seed, hparams=scoped, device=device, log=log,
                               modalities=modalities, holdout=holdout, patience=patience)
        chosen[name] = run.card.hparams
    return chosen


def _text_encoder(modalities) -> str:
    """The sentence encoder id recorded in a card whose model reads class-name text or descriptions."""
    if not {"text", "descriptions"} & set(modalities):
        return ""
    from ..text import encoder_id
    return encoder_id()
