"""The library calls behind ``zslr train`` / ``zslr eval``: typed configs in, one report out.

:func:`train_from_config` loads the data, runs :func:`~zslretrieval.protocol.selection.select_and_train`
and writes the checkpoint; :func:`eval_from_config` trains (or loads) each model, evaluates it
(:func:`~zslretrieval.protocol.evaluation.evaluate`) and checks the mAP through the query engine;
:func:`to_json` prints the report as strict JSON.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..correction import ScoreCorrection
from ..data.base import ZslDataset, semantic_matrix
from ..errors import ConsistencyError, InvalidInputError
from ..features import DEFAULT_BACKBONE
from ..metrics import AccuracyCalculator
from ..models import ZslModel, get_model_class
from ..models.checkpoint import ModelCard, load_checkpoint, save_checkpoint
from .evaluation import DEFAULT_METRICS, evaluate, split_info
from .selection import Log, select_and_train

# --- CLI configs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class DataConfig:
    """Where the data comes from: a registered benchmark, or a user's image folders."""

    dataset: str | None = None
    data_root: str | None = None
    images: str | None = None
    class_attributes: str | None = None
    unseen: str | None = None
    backbone: str | None = None       # None: the benchmark's val-chosen one (data.xlsa17.PHOTO_BACKBONES), else the default
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        custom = [self.class_attributes, self.unseen]
        if self.dataset and any(custom):
            raise InvalidInputError("--dataset and --class-attributes/--unseen are mutually exclusive; give a benchmark "
                                    "name (with --images DIR for its photos) or a folder of your own images")
        if not self.dataset and not all([self.images, *custom]):
            missing = [n for n, v in (("--images", self.images), ("--class-attributes", self.class_attributes),
                                      ("--unseen", self.unseen)) if not v]
            raise InvalidInputError("no data given: use --dataset NAME, or --images DIR --class-attributes CSV "
                                    f"--unseen FILE (missing: {', '.join(missing)})")

    def load(self) -> ZslDataset:
        device = "auto" if self.device == "cpu" else self.device  # the backbone may use a GPU the model does not
        if self.dataset:
            from ..data import load_dataset
            # --images with a benchmark: its photos (features through --backbone, cached; see data.xlsa17)
            return load_dataset(self.dataset, self.data_root, seed=self.seed, images=self.images,
                                backbone=self.backbone, device=device)
        from ..data.custom import load_custom_dataset  # heavy (backbones); only for user folders
        return load_custom_dataset(self.images, self.class_attributes, self.unseen,
                                   backbone=self.backbone or DEFAULT_BACKBONE,
                                   seed=self.seed, device=device)


def features_used(dataset: ZslDataset) -> dict[str, Any]:
    """Which image features a result used (``dataset.meta["features"]``: source, backbone, weights id,
    folder, ...; for datasets that ship fixed features, their source)."""
    meta = dataset.meta or {}
    info = dict(meta.get("features") or {})
    if not info:
        info = {"source": meta.get("source") or dataset.name}
        if meta.get("features_path"):
            info["path"] = meta["features_path"]
    info["description"] = str(meta.get("feature_source") or info.get("path") or info["source"])
    return info


@dataclasses.dataclass
class TrainConfig:
    model: str
    data: DataConfig
    out: str | None = None
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    modalities: tuple[str, ...] = ("attributes",)
    # also fit query.sentences' free-text map on the photos' human descriptions (chosen on val), kept in the checkpoint
    sentence_map: bool = False

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
    features: dict[str, Any] = dataclasses.field(default_factory=dict)   # features_used(dataset)


def train_from_config(cfg: TrainConfig, log: Log | None = None) -> TrainReport:
    """``zslr train``: load data, select + refit, write the checkpoint and its card."""
    t0 = time.perf_counter()
    get_model_class(cfg.model)  # unknown model -> error before loading data
    dataset = cfg.data.load()
    load_seconds = time.perf_counter() - t0
    result = select_and_train(dataset, cfg.model, seed=cfg.data.seed, hparams=cfg.hparams, device=cfg.data.device,
                              log=log, modalities=cfg.modalities)
    path = cfg.out_path(dataset.name)
    smap = None
    if cfg.sentence_map:
        from ..query.sentences import fit_sentence_map
        smap = fit_sentence_map(dataset, result.card, seed=cfg.data.seed, log=log).to_tensors()
    save_checkpoint(result.model, result.card, path, torch.from_numpy(semantic_matrix(dataset, cfg.modalities)[0]),
                    sentence_map=smap)
    return TrainReport(checkpoint=path, card_path=path.with_name(path.name + ".card.json"), card=result.card,
                       selection=result.selection, load_seconds=round(load_seconds, 3),
                       total_seconds=round(time.perf_counter() - t0, 3), features=features_used(dataset))


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
    # Rank by raw model scores instead of the score correction the model card records (chosen on val).
    raw_scores: bool = False

    def __post_init__(self) -> None:
        if self.models and self.checkpoint:
            raise InvalidInputError("give --model NAME (repeatable; trains with the protocol) or --checkpoint PATH, "
                                    "not both")
        AccuracyCalculator(include=self.metrics)


# Engine and direct mAP rank the same embeddings with different code (FAISS vs numpy, float32
# vs float64 scores); ties and rounding may move an AP by ~1e-7, never more than this.
ENGINE_MAP_TOLERANCE = 1e-6


def _engine_map_checked(model: ZslModel, card: ModelCard, dataset: ZslDataset, direct: dict[str, float],
                        root: str | None, raw_scores: bool = False) -> dict[str, Any]:
    """mAP (and mixed-gallery ``gzsl_map`` when ``direct`` has it) through the query engine
    (:func:`zslretrieval.query.engine_maps`), raising when either disagrees with the direct computation."""
    from ..query.benchmark_map import engine_maps  # the index + query stack, only when asked for

    t0 = time.perf_counter()
    mixed = "gzsl_map" in direct and len(dataset.splits.get("test_seen", ()))
    splits = ("test_unseen", "test_seen") if mixed else ("test_unseen",)
    got = engine_maps(model, card, dataset, root=root, splits=splits, raw_scores=raw_scores)
    out: dict[str, Any] = {}
    for key in ("map", "gzsl_map"):
        if key not in direct or key not in got:
            continue
        if not abs(got[key] - direct[key]) <= ENGINE_MAP_TOLERANCE:
            raise ConsistencyError(f"engine-path {key} {got[key]:.8f} differs from the direct computation "
                                   f"{direct[key]:.8f} by more than {ENGINE_MAP_TOLERANCE}; the index or query path "
                                   "ranks differently")
        out[key], out[f"direct_{key}"] = float(got[key]), float(direct[key])
    out["per_class_ap"] = got["per_class_ap"]
    if "per_class_gzsl_ap" in got:
        out["per_class_gzsl_ap"] = got["per_class_gzsl_ap"]
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out


def eval_from_config(cfg: EvalConfig, log: Log | None = None) -> dict[str, Any]:
    """``zslr eval``: evaluate a checkpoint, or train each model with the protocol and evaluate it.

    Returns one JSON-serialisable report: dataset, split info, seed, and per model the chosen
    hyper-parameters, val scores, test metrics and wall times.
    """
    from ..index.searchers import make_searcher

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
                           card=card, device=cfg.data.device, raw_scores=cfg.raw_scores)
        engine_check = None
        if cfg.engine and ("map" in metrics or "gzsl_map" in metrics):
            engine_check = _engine_map_checked(model, card, dataset, metrics, cfg.engine_root, cfg.raw_scores)
            metrics.update({k_: engine_check[k_] for k_ in ("map", "gzsl_map") if k_ in engine_check})
        correction = ScoreCorrection() if cfg.raw_scores else \
            ScoreCorrection.from_dict((card.selection or {}).get("retrieval_correction"))
        eval_seconds = time.perf_counter() - t2
        log(f"[{card.model}] " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        sel = card.selection or {}
        results.append({
            "model": card.model, "checkpoint": cfg.checkpoint, "trained_on": card.dataset, "hparams": card.hparams,
            "epochs": sel.get("epochs"), "val_top1": sel.get("val_top1"), "val_map": sel.get("val_map"),
            "val_gzsl": sel.get("val_gzsl"), "val_gzsl_calibrated": sel.get("val_gzsl_calibrated"),
            "gzsl_calibration": metrics.get("gzsl_calibration", sel.get("gzsl_calibration")),
            "retrieval_correction": correction.to_dict(),
            "retrieval_correction_val": [r for r in sel.get("retrieval_correction_candidates", [])
                                         if ScoreCorrection.from_dict(r).same_choice(correction) or r.get("kind") == "none"],
            "selection": [{"hparams": r["hparams"], "val_top1": r["val_top1"], "val_map": r.get("val_map"),
                           "best_epoch": r.get("best_epoch")}
                          for r in sel.get("candidates", [])],
            "metrics": metrics, "map_engine": engine_check,
            "train_seconds": round(train_wall, 3), "refit_seconds": card.train_seconds,
            "selection_seconds": sel.get("selection_seconds"), "eval_seconds": round(eval_seconds, 3),
        })
    return {
        "dataset": dataset.name, "data": split_info(dataset), "features": features_used(dataset),
        "seed": cfg.data.seed,
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
