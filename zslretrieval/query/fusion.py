"""Fusing the general model's text score into the ranking of an index that has a model of its own.

``(1 - w) z(model score) + w z(general score)``, each z-scored over the whole collection so the
two scales meet (``zslr query --general-weight W``); an exact pass over the collection per query.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import IncompatibleError, InvalidInputError
from .prepare import Prepared
from .protocols import GeneralModelView, SearchableIndex
from .textual import general_query

FUSABLE = ("text", "class", "attributes")   # query kinds a general-model score can be fused into


def check_general_weight(weight: float | None) -> float | None:
    """``weight`` as a float in (0, 1], or None (no fusion); anything else is refused naming it."""
    if weight is None:
        return None
    try:
        w = float(weight) if not isinstance(weight, (bool, str)) else float("nan")
    except (TypeError, ValueError):
        w = float("nan")
    if not (np.isfinite(w) and 0.0 < w <= 1.0):
        raise InvalidInputError(f"general weight {weight!r}: expected a number in (0, 1] -- the general model's "
                                "share of the fused score (leave it out for the model alone)")
    return w


def _zscore(s: np.ndarray) -> np.ndarray:
    """Each row standardised over its entries (a constant row becomes zeros)."""
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return (s - mu) / np.where(sd > 0, sd, 1.0)


class GeneralFusion:
    """The fused ranking of one index: its collection as the general model sees it, built once.

    ``general()`` gives the general model (loaded on first use, by the engine); ``search(xq, k,
    corrected)`` is the engine's own ranking (with its score correction where ``corrected``);
    ``correction``: apply the general model's hubness correction to its scores.
    """

    def __init__(self, index: SearchableIndex, general: Callable[[], GeneralModelView], *, has_model: bool,
                 correction: bool, search: Callable[..., tuple[np.ndarray, np.ndarray]]):
        self.index = index
        self.general = general
        self.has_model = has_model
        self.correction = correction
        self.search = search
        self._gallery: tuple | None = None

    def check_source(self) -> None:
        """Refuse fusion, naming why, when the index has no model of its own or no raw ImageNet features."""
        from ..text.general import HEAD_BACKBONES
        manifest = self.index.manifest
        name = manifest.name
        if not self.has_model:
            raise IncompatibleError(f"index {name!r} has no model of its own: its text, class and attribute queries "
                                    "already go through the general model; leave out --general-weight")
        backbone = manifest.backbone
        if backbone not in HEAD_BACKBONES:
            raise IncompatibleError(
                f"--general-weight needs the images' raw features from an ImageNet backbone ({', '.join(HEAD_BACKBONES)}) "
                f"to score them with the general model, but index {name!r} holds features of source "
                f"{backbone or manifest.source!r}; index images with `zslr index DIR --model ...`")

    def gallery(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image ids (n,), unit raw features (n, D) float32, scale, offset (n,) of the general correction), once."""
        if self._gallery is None:
            g = self.general()
            ids, raw = self.index.raw_features()
            x = np.asarray(raw, np.float32)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            corr = g.correction
            if self.correction and corr.active and g.reference is not None:
                scale, offset = corr.terms(x.astype(np.float64) @ np.asarray(g.reference, np.float64).T)
            else:
                scale, offset = np.ones(len(x)), np.zeros(len(x))
            self._gallery = (np.asarray(ids, np.int64), x, scale, offset)
        return self._gallery

    def fuse(self, prepared: list[Prepared], xq: np.ndarray, corrected: np.ndarray, weight: float,
             width: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``width`` of ``(1 - weight) z(model) + weight z(general)`` for each query: D, I (Q, width).

        Model scores: the engine's own full ranking (with its correction where it applies);
        general scores: cosine of the general model's query vector with each image's unit raw
        features (with the general model's hubness correction). Each is z-scored over the
        collection so the two scales meet; an exact pass over the collection per query.
        """
        ids, x, scale, offset = self.gallery()
        g = self.general()
        order = np.argsort(ids, kind="stable")
        n = len(ids)
        model_scores = np.empty((len(prepared), n), np.float64)
        for flag in (True, False):
            mask = corrected if flag else ~corrected
            if mask.any():
                Dm, Im = self.search(xq[mask], None, corrected=flag)
                rows = np.flatnonzero(mask)
                for r, d, i in zip(rows, Dm, Im):
                    keep = i >= 0
                    pos = order[np.searchsorted(ids[order], i[keep])]
                    full = np.full(n, np.nan)
                    full[pos] = d[keep]
                    model_scores[r] = np.where(np.isnan(full), np.nanmin(full), full)
        qg, how = [], []
        for p in prepared:
            v, resolved = general_query(p.spec, g, x.shape[1])
            qg.append(v)
            how.append(resolved["understood_as"])
        general_scores = (np.stack(qg).astype(np.float64) @ x.T.astype(np.float64)) * scale + offset
        fused = (1.0 - weight) * _zscore(model_scores) + weight * _zscore(general_scores)
        top = np.argsort(-fused, axis=1, kind="stable")[:, :width]
        for p, h in zip(prepared, how):
            p.resolved["fusion"] = {"general_weight": weight, "general": h,
                                    "score": f"{1 - weight:g} x z(model) + {weight:g} x z(general), z over the collection"}
        return np.take_along_axis(fused, top, axis=1).astype(np.float32), ids[top]
