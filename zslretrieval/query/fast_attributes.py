"""The fast path for attribute lists: specs straight to unit query vectors, bit for bit what
``QueryPreparer.prepare_all`` + ``projection.embed_queries`` give, with their numpy calls only.

The descriptors are written as float32 bytes (``struct`` rounds like numpy's cast), the two
normalisations are the same ufunc calls, and the checks each step makes (a zero descriptor, a
zero or non-finite embedding) are one test of each norm. For one query the general steps' own
overhead was as much again as the arithmetic. Each function returns None where a check fails:
the general path then runs and raises its usual error.
"""
from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .prepare import Prepared
from .projection import Projector
from .spec import QuerySpec
from .vocab import Vocabulary, attribute_pairs, resolve_attribute_pairs


@dataclass(frozen=True, slots=True)
class LeanAttributes:
    """What :func:`attribute_descriptors` and :func:`attribute_embed` read per call, set up once per engine."""

    width: int                # attributes in the vocabulary (= the model's descriptor width)
    vocab: Vocabulary
    projector: Projector      # affine, (width, dim)
    l2: bool                  # descriptors are L2-normalised (card.semantic_norm == "l2")


_F32 = struct.Struct("=f")   # native float32, rounded from a Python float as numpy's cast rounds (to nearest)
# Attribute weights beyond this take the general path: below it the squares of a whole
# vocabulary's weights sum to a finite float32, so the lean path never meets numpy's overflow warnings.
_BIG_WEIGHT = 1e17
_INF = float("inf")


def lean_attributes(model: Any, card: Any, vocabulary: Vocabulary | None, metric: str, dim: int,
                    projector: Callable[[], Projector]) -> LeanAttributes | None:
    """The fast path's setup for an index's model, or None where it does not apply (no model, metric
    "l2", descriptors wider than the vocabulary, a normalisation other than l2/none, a projection
    that is not affine into ``dim``)."""
    if (model is not None and metric == "ip" and vocabulary and len(vocabulary)
            and model.semantic_dim == len(vocabulary) and card.semantic_norm in ("l2", "none", "", None)):
        proj = projector()
        if proj.affine and proj.W.shape == (len(vocabulary), dim):
            return LeanAttributes(len(vocabulary), vocabulary, proj, card.semantic_norm == "l2")
    return None


def _divisor(n: np.ndarray) -> np.ndarray | np.float32 | None:
    """The (Q, 1) row norms ``n`` as the divisor of (Q, D) rows, or None when one is 0, inf or NaN.

    One query: its float32 scalar, so that ``x / n`` divides by the same value without numpy's
    broadcasting iterator; more: ``n`` itself.
    """
    if len(n) == 1:
        s = n[0, 0]
        return s if 0.0 < s < _INF else None  # NaN fails both comparisons
    return n if np.logical_and.reduce(((n > 0) & (n < _INF)).ravel()) else None


def attribute_descriptors(specs: Sequence[QuerySpec], lean: LeanAttributes) -> tuple[list[Prepared], np.ndarray] | None:
    """Parsed, resolved and normalised (Q, A) float32 descriptors of attribute lists (each prepared
    query's descriptor is a row), or None for the general path. Parse and name errors are raised
    here, the same ones in the same order as the general path's."""
    for spec in specs:
        if spec.kind != "attributes":
            return None
    width, vocab, names, pack = lean.width, lean.vocab, lean.vocab.names, _F32.pack_into
    V = np.zeros((len(specs), width), np.float32)  # numpy's own buffer: aligned as before for BLAS
    prepared = []
    at = 0
    for spec in specs:
        resolved = resolve_attribute_pairs(attribute_pairs(spec.text), vocab)
        for i, w in resolved.items():
            if not -_BIG_WEIGHT < w < _BIG_WEIGHT:
                return None  # its square overflows float32 (or it does): numpy's warnings, general path
            pack(V, at + 4 * i, w)  # V's bytes, written in place
        at += 4 * width
        prepared.append(Prepared(spec, {"attributes": [{"name": names[i], "weight": w} for i, w in resolved.items()]}))
    if lean.l2:
        n = _divisor(np.sqrt(np.add.reduce(V * V, axis=-1, keepdims=True)))  # normalise_semantics' arithmetic
        if n is None:
            return None  # all zeros (or squares underflowing to 0): "all zeros" from the general path
        V = V / n
    for r, p in enumerate(prepared):
        p.descriptor = V[r]
    return prepared, V


def attribute_embed(V: np.ndarray, lean: LeanAttributes) -> np.ndarray | None:
    """(Q, A) descriptors -> (Q, E) finite unit float32 vectors, or None for the general path."""
    out = lean.projector(V)                                      # embed_queries' arithmetic from here on
    n = _divisor(np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True)))
    if n is None:
        return None  # a zero embedding, or one too large to normalise: the general path decides
    out /= n
    return out
