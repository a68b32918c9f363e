"""Text queries: free text, attribute words and any class name turned into query vectors.

Two routes, chosen by what the index holds:

* an index of raw backbone features (``zslr index DIR``, no model) is searched through the
  *general model* (``zslretrieval.text.general``): each text becomes a visual prototype in the
  backbone's own feature space, the vector the index stores;
* an index whose model reads a ``text`` modality gets the sentence embedding as that modality's
  descriptor (``text_descriptor``).

Attribute lists keep their weights and negation: ``stripes, water=0.5, -domestic`` is the
weighted sum ``p(stripes) + 0.5 p(water) - p(domestic)`` of the unit prototypes of each word,
the same linear rule the attribute vectors follow for the linear models (``query.vocab``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import IncompatibleError, InvalidInputError
from ..text.names import CLASS_TEMPLATE, as_name, attribute_text, class_text, humanise
from .spec import QuerySpec
from .vocab import parse_attribute_terms

# How many ImageNet classes a general-model query reports as "understood as".
NEAREST_CLASSES = 3

__all__ = ["general_query", "humanise", "query_texts", "text_descriptor"]


def _has_word(text: str) -> bool:
    # "---" or "?!" would be encoded as a sentence and answered with confident-looking hits; nothing in
    # it names anything, so it is refused like an empty name (digits count: "747" is a name)
    return any(c.isalnum() for c in text)


def query_texts(spec: QuerySpec) -> tuple[list[str], list[float], dict[str, Any]]:
    """The texts a text/class/attributes query stands for, their signed weights, and the resolved form."""
    if spec.kind == "text":
        text = " ".join(spec.text.split())
        if not _has_word(text):
            raise InvalidInputError(f"text {spec.text!r} has no letters or digits; expected a description such as "
                                    "'a striped animal in the water'")
        return [text], [1.0], {"text": text}
    if spec.kind == "class":
        name = class_text(spec.text)
        if not _has_word(name):
            raise InvalidInputError(f"class name {spec.text!r} has no letters or digits; expected e.g. 'zebra'")
        return [name], [1.0], {"class": name}
    if spec.kind == "attributes":
        merged: dict[str, float] = {}
        for t in parse_attribute_terms(spec.text):
            words = attribute_text(t.name)
            if not _has_word(words):
                raise InvalidInputError(f"attribute {t.name!r} has no letters or digits; expected a word such as "
                                        "'stripes'")
            merged.pop(words, None)           # a name given twice keeps its last weight, in its last place
            merged[words] = t.weight
        if not any(merged.values()):
            raise InvalidInputError("every attribute weight is zero; give at least one non-zero weight")
        return list(merged), list(merged.values()), {
            "attributes": [{"name": n, "weight": w} for n, w in merged.items()]}
    raise InvalidInputError(f"{spec.kind} queries cannot be read as text; use --text, --class or --attributes")


def general_query(spec: QuerySpec, general, index_dim: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(D,) unit query vector in the raw-feature space of ``general.backbone``, plus what it was understood as."""
    texts, weights, resolved = query_texts(spec)
    if general.feature_dim != index_dim:
        raise IncompatibleError(f"general model of {general.backbone} gives {general.feature_dim}-d vectors but the "
                                f"index holds {index_dim}-d ones")
    kind = "attribute" if spec.kind == "attributes" else "name"
    protos = general.embed_texts(texts, kind)                            # (n, D) unit rows
    v = (np.asarray(weights, np.float32)[:, None] * protos).sum(0)
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise InvalidInputError(f"query {str(spec)!r} cancels out to the zero vector; change its weights")
    v = (v / n).astype(np.float32)
    resolved["understood_as"] = {
        "model": f"general {general.backbone}/{general.method}",
        "texts": general.prompts(texts, kind),
        # the WordNet definitions a name was read with (text.general: glosses), per text; [] where none
        "glosses": general.glosses(texts, kind),
        # the ImageNet classes a name names and their share in its query (text.general: known-name anchors)
        "anchors": general.anchors(texts, kind),
        "nearest_imagenet": [{"name": c, "cosine": round(s, 3)}
                             for c, s in general.nearest_classes(v, NEAREST_CLASSES)],
    }
    return v, resolved


def text_descriptor(spec: QuerySpec, card, vocabulary_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The (S,) descriptor of a --text/--class query for a model whose modalities include ``text``.

    The text block is the sentence embedding of the query (with the template the model was
    trained with); other modalities (e.g. attributes) are left at zero, so only the text branch
    speaks. Shapes follow ``card.semantic_dims`` in ``card.semantic_modalities`` order.
    """
    from ..text import apply_template, encode_texts
    mods = list(card.semantic_modalities or [])
    if "text" not in mods:
        raise IncompatibleError(f"model {card.model!r} reads {'+'.join(mods) or 'attributes'}, not text; --text needs "
                                "a model trained with `--modality text` (or an index of raw features)")
    texts, weights, resolved = query_texts(spec)
    texts = [as_name(t) for t in texts]
    template = CLASS_TEMPLATE
    from ..text import encoder_id
    if card.text_encoder and card.text_encoder != encoder_id():
        raise IncompatibleError(f"model {card.model!r} was trained on text embeddings of {card.text_encoder}; "
                                f"{encoder_id()} is installed")
    e = encode_texts(apply_template(texts, template))
    t = (np.asarray(weights, np.float32)[:, None] * e).sum(0)
    n = float(np.linalg.norm(t))
    if n < 1e-6:
        raise InvalidInputError(f"query {str(spec)!r} cancels out to the zero vector; change its weights")
    parts = [np.zeros(d, np.float32) for d in card.semantic_dims]
    parts[mods.index("text")] = (t / n).astype(np.float32)
    resolved["understood_as"] = {"model": f"{card.model} text branch",
                                 "texts": [template.replace("{}", x) for x in texts]}
    return np.concatenate(parts), resolved
