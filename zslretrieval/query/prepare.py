"""Query specs resolved into what gets embedded: a normalised class descriptor, an image, or a
general-model vector already in index space (:class:`Prepared`), plus what was understood."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from .protocols import GeneralModelView
from .spec import QuerySpec
from .textual import general_query, text_descriptor
from .vocab import (Vocabulary, attribute_pairs, build_attribute_vector, normalise_semantics, parse_attribute_terms,
                    parse_vector_text, read_attribute_file, resolve_attribute_pairs)

# How many of a class's strongest attributes a --class query reports back.
TOP_CLASS_ATTRIBUTES = 10


@dataclass
class Prepared:
    """One query ready to embed: exactly one of ``descriptor``, ``image``, ``vector`` is set."""

    spec: QuerySpec
    resolved: dict[str, Any]
    descriptor: np.ndarray | None = None   # (S,) class-semantic vector, already normalised
    image: Path | bytes | None = None      # a file, or the encoded bytes of an uploaded image
    vector: np.ndarray | None = None       # (E,) already in index space (general model on a raw index)


class QueryPreparer:
    """Resolves specs against an index's model card, or through the general model on a raw index.

    ``model``, ``card``, ``class_semantics``: what ``index.model()`` gave (all None for raw
    features); ``dim``: the index's vector width; ``index_name`` names the index in errors;
    ``general()`` gives the general model (loaded on first use, by the engine).
    """

    def __init__(self, model: Any, card: Any, class_semantics: Any, *, dim: int, index_name: str,
                 general: Callable[[], GeneralModelView]):
        self.model, self.card, self.class_semantics = model, card, class_semantics
        self.dim = dim
        self.index_name = index_name
        self.general = general
        self.vocabulary = Vocabulary(card.vocabulary, "attribute") if card is not None else None
        self.classes = Vocabulary(card.class_names, "class") if card is not None else None

    def need_model(self, spec: QuerySpec) -> None:
        if self.model is None:
            raise IncompatibleError(
                f"{spec.kind} queries need an index built with a model, but index "
                f"{self.index_name!r} holds raw features; query it by --text, --attributes, "
                "--class or --image, or rebuild it with `zslr index --model CHECKPOINT`")

    def attribute_width(self, spec: QuerySpec) -> int:
        """Descriptor width for attribute queries; refuses models fusing other modalities."""
        self.need_model(spec)
        if not self.vocabulary or len(self.vocabulary) == 0:
            raise IncompatibleError(f"model {self.card.model!r} has no attribute vocabulary; use --class or --image")
        if self.model.semantic_dim != len(self.vocabulary):
            raise IncompatibleError(
                f"model {self.card.model!r} expects {self.model.semantic_dim}-d descriptors "
                f"({'+'.join(self.card.semantic_modalities)}) but only the {len(self.vocabulary)} attributes can "
                "be typed; use --class, or a model trained on attributes alone")
        return len(self.vocabulary)

    def prepare(self, spec: QuerySpec) -> Prepared:
        """Resolve one spec into a normalised descriptor (or an image path) plus what was understood."""
        if spec.kind == "image":
            if spec.data is not None:
                return Prepared(spec, {"image": spec.text}, image=spec.data)
            p = Path(spec.text).expanduser()
            if not p.is_file():
                raise DataNotFoundError(f"query image not found: {p}")
            return Prepared(spec, {"image": str(p)}, image=p)
        if self.model is None and spec.kind in ("text", "class", "attributes"):
            v, resolved = general_query(spec, self.general(), self.dim)
            return Prepared(spec, resolved, vector=v)
        if spec.kind == "text":
            self.need_model(spec)
            if getattr(self.model, "sentence_map", None) is not None:
                # free text through the map learned from the training photos' sentences (query.sentences)
                from .sentences import sentence_descriptor
                d, resolved = sentence_descriptor(spec, self.model.sentence_map, self.card, self.class_semantics,
                                                  self.model)
                return Prepared(spec, resolved, descriptor=d)
            d, resolved = text_descriptor(spec, self.card, len(self.vocabulary or []))
            return Prepared(spec, resolved, descriptor=d)
        if spec.kind == "class":
            self.need_model(spec)
            if self.class_semantics is None:
                raise IncompatibleError(f"checkpoint of model {self.card.model!r} stores no class descriptors; "
                                        "use --attributes or --attribute-file")
            i = self.classes.resolve(spec.text.strip())
            # Stored rows are the descriptors the model was trained/evaluated with, already normalised.
            d = np.asarray(self.class_semantics[i], np.float32)
            resolved: dict[str, Any] = {"class": self.classes.names[i]}
            if self.vocabulary and len(d) >= len(self.vocabulary):
                # What the class "means": its strongest attributes, so users can see why images rank high.
                a = d[:len(self.vocabulary)]
                top = [int(j) for j in np.argsort(-a, kind="stable")[:TOP_CLASS_ATTRIBUTES] if a[j] > 0]
                resolved["attributes"] = [{"name": self.vocabulary.names[j], "weight": float(a[j])} for j in top]
            return Prepared(spec, resolved, descriptor=d)
        width = self.attribute_width(spec)
        norm = self.card.semantic_norm
        if spec.kind == "attributes":
            v, pairs = build_attribute_vector(parse_attribute_terms(spec.text), self.vocabulary, norm)
            return Prepared(spec, {"attributes": [{"name": n, "weight": w} for n, w in pairs]}, descriptor=v)
        if spec.kind == "attribute-file":
            raw = read_attribute_file(spec.text, width)
        else:  # inline vector
            raw = parse_vector_text(spec.text, spec.origin or "vector")
            if raw.shape != (width,):
                raise InvalidInputError(f"vector has {raw.size} values but the vocabulary has {width} attributes")
            if not np.all(np.isfinite(raw)):
                raise InvalidInputError("vector contains non-finite values (nan/inf); expected finite numbers")
        nz = np.flatnonzero(raw)
        v = normalise_semantics(raw, norm)
        return Prepared(spec, {"attributes": [{"name": self.vocabulary.names[i], "weight": float(raw[i])} for i in nz]},
                        descriptor=v)

    def prepare_all(self, specs: Sequence[QuerySpec]) -> tuple[list[Prepared], np.ndarray | None]:
        """:meth:`prepare` for every spec, plus their (Q, A) descriptor matrix when all are attribute lists.

        A batch of attribute queries is built as one matrix, normalised in one call: the same
        values as ``prepare`` one by one (row-wise reduction, bit for bit), without a few numpy
        calls per query; each descriptor is a row of it.
        """
        if len(specs) < 2 or self.model is None or any(s.kind != "attributes" for s in specs):
            return [self.prepare(s) for s in specs], None
        width = self.attribute_width(specs[0])
        names = self.vocabulary.names
        V = np.zeros((len(specs), width), np.float32)
        prepared = []
        for r, spec in enumerate(specs):
            resolved = resolve_attribute_pairs(attribute_pairs(spec.text), self.vocabulary)
            V[r, list(resolved)] = list(resolved.values())
            prepared.append(Prepared(spec, {"attributes": [{"name": names[i], "weight": w} for i, w in resolved.items()]}))
        V = normalise_semantics(V, self.card.semantic_norm)
        for p, row in zip(prepared, V):
            p.descriptor = row
        return prepared, V
