"""Zero-shot classification metrics: per-class top-1 and generalized ZSL (U, S, H)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def per_class_top1(pred: np.ndarray, true: np.ndarray, classes: np.ndarray | None = None) -> float:
    """Mean over classes of the fraction of that class's samples predicted correctly.

    pred, true (n,) class ids. ``classes`` restricts the mean (default: classes present in true).
    A class listed but absent from ``true`` is an error in the protocol, not a zero.
    """
    pred, true = np.asarray(pred), np.asarray(true)
    classes = np.unique(true) if classes is None else np.asarray(classes)
    accs = []
    for c in classes:
        mask = true == c
        if not mask.any():
            raise ValueError(f"class {c} has no samples in `true`")
        accs.append(float((pred[mask] == c).mean()))
    return float(np.mean(accs))


def harmonic_mean(u: float, s: float) -> float:
    return 0.0 if u + s == 0 else 2 * u * s / (u + s)


@dataclass
class GzslResult:
    unseen: float   # U: per-class top-1 on unseen test images, searched over all classes
    seen: float     # S: per-class top-1 on seen test images, searched over all classes
    harmonic: float # H = 2US / (U + S)
    calibration: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


CALIBRATION_SPACES = ("raw", "z")


def standardize_rows(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Each row's scores as z-scores over ``columns`` (the candidate classes): (s - mean) / std.

    Other columns become -inf. A per-row increasing affine map, so a row's argmax (and every
    uncalibrated GZSL figure) is unchanged; a calibration offset in these units means the same for a
    model fitted on train classes and for its refit on trainval, whose raw score scales differ.
    """
    s = np.asarray(scores, dtype=np.float64)
    cols = np.asarray(columns)
    sub = s[:, cols]
    mu = sub.mean(1, keepdims=True)
    sd = sub.std(1, keepdims=True)
    out = np.full_like(s, -np.inf)
    out[:, cols] = (sub - mu) / np.where(sd > 0, sd, 1.0)
    return out


def gzsl(scores_seen: np.ndarray, labels_seen: np.ndarray, scores_unseen: np.ndarray, labels_unseen: np.ndarray,
         seen_classes: np.ndarray, unseen_classes: np.ndarray, calibration: float = 0.0,
         space: str = "raw") -> GzslResult:
    """Generalized ZSL: predictions over seen + unseen classes together.

    scores_* (n, C) for all C classes (columns indexed by class id); labels_* (n,).
    ``calibration`` (calibrated stacking, Chao et al. 2016) is subtracted from the scores of
    seen classes before the argmax; choose it on validation data, never on test classes.
    Columns of classes in neither set are excluded from the argmax. ``space="z"`` applies the
    offset to per-image standardised scores (:func:`standardize_rows` over seen + unseen classes).
    """
    seen_classes, unseen_classes = np.asarray(seen_classes), np.asarray(unseen_classes)
    if space not in CALIBRATION_SPACES:
        raise ValueError(f"calibration space {space!r}; valid: {', '.join(CALIBRATION_SPACES)}")
    if space == "z":
        both = np.concatenate([seen_classes, unseen_classes])
        scores_seen, scores_unseen = standardize_rows(scores_seen, both), standardize_rows(scores_unseen, both)
    C = scores_seen.shape[1]
    offset = np.full(C, -np.inf)
    offset[seen_classes] = -calibration
    offset[unseen_classes] = 0.0

    def predict(s):
        return np.argmax(np.asarray(s, dtype=np.float64) + offset, axis=1)

    # Means run over the classes present in each test set (a seen class may lack test images).
    s = per_class_top1(predict(scores_seen), labels_seen)
    u = per_class_top1(predict(scores_unseen), labels_unseen)
    return GzslResult(unseen=u, seen=s, harmonic=harmonic_mean(u, s), calibration=calibration)
