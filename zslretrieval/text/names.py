"""Class, attribute and folder names as the words a sentence encoder should read."""
from __future__ import annotations

import re

# Separators used by the benchmarks and by folder names: AwA ``killer+whale``, CUB
# ``has_bill_shape::curved_(up_or_down)``, SUN ``bus_station_outdoor``.
_SEPARATORS = re.compile(r"(::|[_+()\[\]]|\s)+")
# CUB-style numbered folders/classes: ``013.Bobolink``.
_NUMBERED = re.compile(r"^\d+\.(?=\D)")

# The prompt a class name is read in, for datasets' ``text`` modality and text queries on models
# trained with it (the general model picks its own template on validation ImageNet classes).
CLASS_TEMPLATE = "a photo of a {}."
_ARTICLE = re.compile(r"^(a|an|the)\s+(?=\S)", re.IGNORECASE)


def humanise(name: str) -> str:
    """``killer+whale`` -> ``killer whale``; ``has_bill_shape::curved_(up_or_down)`` -> ``has bill shape curved up or down``."""
    return _SEPARATORS.sub(" ", name).strip()


def class_text(name: str) -> str:
    """A class label as words, without a numeric prefix: ``013.Bobolink`` -> ``Bobolink``."""
    return humanise(_NUMBERED.sub("", name.strip()))


def attribute_text(name: str) -> str:
    """An attribute name as the words a sentence about it needs: ``has_bill_shape::curved_(up_or_down)``
    -> ``bill shape curved up or down`` (CUB's leading "has" would read "something with has ...")."""
    words = humanise(name)
    return words[4:] if words.lower().startswith("has ") and len(words) > 4 else words


def as_name(text: str) -> str:
    """The words a prompt template wraps: whitespace collapsed, a leading article dropped, so free text
    like "a striped animal" reads "a photo of a striped animal." rather than "a photo of a a striped ..."."""
    return _ARTICLE.sub("", " ".join(str(text).split()))
