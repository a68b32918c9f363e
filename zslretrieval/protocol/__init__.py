"""The benchmark protocol: choose hyper-parameters on validation classes, refit, evaluate on unseen classes.

    selection.py   select_and_train(dataset, model, seed=) -> TrainResult   (val classes only)
    evaluation.py  evaluate(model, dataset, metrics, card=) -> {metric: value}  (test splits)
    api.py         train_from_config / eval_from_config / to_json: what ``zslr train`` / ``zslr eval`` call

Class descriptors (``semantic_matrix``) belong to the dataset (``data.base``) and are re-exported
here for callers of the former single module.
"""
from ..data.base import semantic_matrix
from .api import (ENGINE_MAP_TOLERANCE, DataConfig, EvalConfig, TrainConfig, TrainReport, eval_from_config, to_json,
                  train_from_config)
from .evaluation import DEFAULT_METRICS, check_compatible, evaluate, split_info
from .selection import (CandidateRecord, Log, TrainResult, _candidates, choose_calibration, hparams_for,
                        select_and_train)

__all__ = ["DEFAULT_METRICS", "ENGINE_MAP_TOLERANCE", "CandidateRecord", "DataConfig", "EvalConfig", "Log",
           "TrainConfig", "TrainReport", "TrainResult", "_candidates", "check_compatible", "choose_calibration",
           "eval_from_config", "evaluate", "hparams_for", "select_and_train", "semantic_matrix", "split_info",
           "to_json", "train_from_config"]
