"""Names a user types, resolved against a model's vocabulary, and turned into query vectors.

A query describes a class the way the benchmark's class descriptors do. xlsa17 descriptors
are continuous, non-negative and L2-normalised per class, so the natural analogue of
"stripes, water" is a vector with weight 1 on the named attributes and 0 elsewhere,
normalised the same way (``card.semantic_norm``).

Absence (``-name``): the attribute gets a *negative* weight (``-1``, or ``-w`` for
``-name=w``). A zero would be indistinguishable from "not mentioned", and for the models
whose class embedding is linear in the descriptor (ESZSL, SAE, the first layer of DEM) a
negative weight subtracts exactly that attribute's direction from the query, which is what
"not striped" means for a compatibility score. It lies outside the training range
(descriptors are >= 0), so for non-linear models it is a push away rather than a calibrated
value; the resolved weights are always reported back to the user.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError, UnknownNameError
from ..limits import MAX_ATTRIBUTE_TERMS, MAX_DESCRIPTOR_FILE_BYTES, require_at_most, require_file_at_most

# Characters users vary freely when typing a name: case, spaces and the separators used by
# the benchmarks (AwA ``killer+whale``, CUB ``has_bill_shape::curved_(up_or_down)``).
_IGNORED = re.compile(r"[\s_+\-]+")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def normalise_name(name: str) -> str:
    """Case-, space- and ``_``/``-``/``+``-insensitive key of a name."""
    return _IGNORED.sub("", name.strip().lower())


class UnknownQueryNameError(UnknownNameError):
    """An attribute or class name that the index's model does not know.

    Suggestions combine difflib matches on the raw names and on their normalised forms, so
    ``Killer Whle`` still suggests ``killer+whale``.
    """

    def __init__(self, kind: str, name: str, valid: Iterable[str], suggestions: list[str]):
        super().__init__(kind, name, valid, suggest_only=True)
        self.suggestions = suggestions
        hint = (f"did you mean: {', '.join(suggestions)}?" if suggestions
                else f"none of the {len(self.valid)} valid names is close")
        if len(self.valid) <= 40:
            hint += f" (valid: {', '.join(self.valid)})"
        self.args = (f"unknown {kind} {name!r}; {hint}",)


class Vocabulary:
    """An ordered list of names (attribute columns or classes) with forgiving lookup."""

    def __init__(self, names: Sequence[str], kind: str = "attribute"):
        self.names = [str(n) for n in names]
        self.kind = kind
        self._exact = {n: i for i, n in enumerate(self.names)}
        self._norm: dict[str, list[int]] = {}
        for i, n in enumerate(self.names):
            self._norm.setdefault(normalise_name(n), []).append(i)

    def __len__(self) -> int:
        return len(self.names)

    def resolve(self, name: str) -> int:
        """Column index of ``name``; UnknownQueryNameError (with suggestions) when unknown."""
        if name in self._exact:
            return self._exact[name]
        hits = self._norm.get(normalise_name(name), [])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise InvalidInputError(
                f"{self.kind} {name!r} is ambiguous: it matches {', '.join(self.names[i] for i in hits)}; "
                "type one of them exactly")
        raise UnknownQueryNameError(self.kind, name, self.names, self.suggest(name))

    def suggest(self, name: str, n: int = 5) -> list[str]:
        """Closest valid names, best first: difflib on raw names, then on normalised forms."""
        out = difflib.get_close_matches(name.strip(), self.names, n=n, cutoff=0.6)
        norm_keys = list(self._norm)
        for key in difflib.get_close_matches(normalise_name(name), norm_keys, n=n, cutoff=0.6):
            for i in self._norm[key]:
                if self.names[i] not in out:
                    out.append(self.names[i])
        return out[:n]


@dataclass(frozen=True)
class AttributeTerm:
    """One ``name``, ``name=0.7`` or ``-name`` item of an ``--attributes`` list."""

    name: str
    weight: float  # already signed: ``-name`` gives a negative weight


def parse_attribute_terms(text: str) -> list[AttributeTerm]:
    """``"stripes, water=0.7, -domestic"`` -> terms; InvalidInputError on malformed items."""
    return [AttributeTerm(name, weight) for name, weight in attribute_pairs(text)]


def attribute_pairs(text: str) -> list[tuple[str, float]]:
    """:func:`parse_attribute_terms` as ``(name, signed weight)`` pairs: the same parsing and errors.

    The query engine's per-query path uses the pairs directly: a frozen dataclass per item
    costs more than the rest of the parsing.
    """
    n_items = text.count(",") + 1
    if n_items > MAX_ATTRIBUTE_TERMS:
        require_at_most("the number of attributes in the query", n_items, MAX_ATTRIBUTE_TERMS)
    pairs: list[tuple[str, float]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        negate = item[0] == "-"
        if negate:
            item = item[1:].strip()
        name, sep, w = item.partition("=")
        name = name.strip()
        if not name:
            raise InvalidInputError(f"attribute item {raw.strip()!r} has no name; expected name, name=0.7 or -name")
        weight = 1.0
        if sep:
            w = w.strip()
            weight = _plain_number(w)
            if weight is None:
                if not _NUMBER.match(w):
                    raise InvalidInputError(
                        f"weight {w!r} of attribute {name!r} is not a number; expected e.g. {name}=0.7")
                weight = float(w)
        pairs.append((name, -weight if negate else weight))
    if not pairs:
        raise InvalidInputError(f"no attributes in {text!r}; expected e.g. 'stripes,water=0.7,-domestic'")
    return pairs


def _plain_number(w: str) -> float | None:
    """``float(w)`` when ``w`` is an ASCII number that :data:`_NUMBER` accepts, else None (then ask the regex).

    Restricted to the characters ``0-9 . + - e E``, Python's float grammar is exactly
    :data:`_NUMBER` (no inf/nan, underscores or spaces can occur), so a successful parse is a
    match. Two string calls instead of the regex engine, whose code is cold after a gallery scan.
    """
    if w.strip(_NUMBER_CHARS):
        return None  # another character (a non-ASCII digit, a letter, ...): the regex decides
    try:
        return float(w)
    except ValueError:
        return None


_NUMBER_CHARS = "0123456789.+-eE"


def normalise_semantics(v: np.ndarray, norm: str) -> np.ndarray:
    """Normalise descriptor rows (C, A) or one (A,) the way training semantics were.

    ``norm``: "l2" (xlsa17) or "none". A zero vector cannot be L2-normalised and is an error:
    it would match every image equally.
    """
    v = np.asarray(v, dtype=np.float32)
    if norm in ("none", "", None):
        return v
    if norm != "l2":
        raise InvalidInputError(f"unknown semantic normalisation {norm!r}; valid: l2, none")
    # what np.linalg.norm(v, axis=-1) computes (same values, bit for bit), without its Python-level
    # dispatch: this runs once per query, where such wrappers cost more than the arithmetic
    n = np.sqrt(np.add.reduce(v * v, axis=-1, keepdims=True))
    if not n.all():
        raise InvalidInputError("the query descriptor is all zeros; give at least one non-zero weight")
    return v / n


def build_attribute_vector(terms: Sequence[AttributeTerm], vocab: Vocabulary,
                           norm: str = "l2") -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Terms -> descriptor (A,) float32 in vocabulary order, normalised per ``norm``.

    Returns the vector and the resolved ``(vocabulary name, weight)`` pairs in the order given.
    A name given twice keeps its last weight.
    """
    v = np.zeros(len(vocab), np.float32)
    resolved = resolve_attribute_terms(terms, vocab)
    for i, w in resolved.items():
        v[i] = w
    return normalise_semantics(v, norm), [(vocab.names[i], w) for i, w in resolved.items()]


def resolve_attribute_terms(terms: Sequence[AttributeTerm], vocab: Vocabulary) -> dict[int, float]:
    """Terms -> {vocabulary column: weight} in the order given; a name given twice keeps its last weight."""
    return resolve_attribute_pairs([(t.name, t.weight) for t in terms], vocab)


def resolve_attribute_pairs(pairs: Iterable[tuple[str, float]], vocab: Vocabulary) -> dict[int, float]:
    """:func:`resolve_attribute_terms` for ``(name, weight)`` pairs (see :func:`attribute_pairs`)."""
    exact, resolve = vocab._exact, vocab.resolve
    resolved: dict[int, float] = {}
    for name, weight in pairs:
        i = exact.get(name)
        if i is None:  # a name not typed exactly as in the vocabulary: the forgiving lookup (or its error)
            i = resolve(name)
        if i in resolved:  # moved to the end: the order given, by last occurrence
            del resolved[i]
        resolved[i] = weight
    return resolved


def parse_vector_text(text: str, where: str) -> np.ndarray:
    """A vector written as a JSON list, CSV, or one number per line -> (A,) float32."""
    text = text.strip()
    if not text:
        raise InvalidInputError(f"{where}: empty; expected numbers (JSON list, CSV or one per line)")
    if text.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{where}: invalid JSON list ({e})") from e
        if not isinstance(data, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
            raise InvalidInputError(f"{where}: expected a flat JSON list of numbers")
        return np.asarray(data, np.float32)
    items = [t for t in re.split(r"[,\s;]+", text) if t]
    bad = [t for t in items if not _NUMBER.match(t)]
    if bad:
        raise InvalidInputError(f"{where}: {bad[0]!r} is not a number; expected numbers (JSON list, CSV or one per line)")
    return np.asarray([float(t) for t in items], np.float32)


def read_attribute_file(path: str | os.PathLike, size: int) -> np.ndarray:
    """Read a descriptor of exactly ``size`` numbers from a file; returns (size,) float32 (unnormalised)."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"attribute file not found: {p}")
    require_file_at_most(p, MAX_DESCRIPTOR_FILE_BYTES, "attribute file")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"attribute file {p} is not readable text ({e})") from e
    v = parse_vector_text(text, str(p))
    if v.shape != (size,):
        raise InvalidInputError(f"attribute file {p} has {v.size} values but the vocabulary has {size} attributes")
    if not np.all(np.isfinite(v)):
        raise InvalidInputError(f"attribute file {p} contains non-finite values (nan/inf)")
    return v
