"""WordNet as timm ships it: the ImageNet-21k lemmas with their definitions, and the ImageNet-1k classes' lemmas.

How a text is read as a name (``_name_keys``: case, hyphens and spacing aside, then its singular) is
shared by the definition lookup (:func:`glosses_of`, ``glosses.py``) and the class lookup
(``anchors.name_anchors``), so a name finds its definitions and its classes the same way.
"""
from __future__ import annotations

import functools
import re

from ...errors import CheckpointError
from ..names import as_name

DESCRIPTION_WORDS = 6   # content words of a definition that make a val class's word-list description
# Function words and WordNet's hedges, left out of a definition's word list (what remains describes).
_STOP_WORDS = frozenset(
    "a an the of and or to in on with by for from as at that which who is are be its it their usually often "
    "having has have any several various especially some most many genus family order e g i kind type called "
    "used like one two three four five".split())


def _imagenet_info(subset: str, why: str):
    """timm's ImageNet synset table of ``subset``; a clear error naming the package when timm is missing."""
    try:
        from timm.data import ImageNetInfo
    except ImportError as e:
        from ...errors import DataNotFoundError
        raise DataNotFoundError(f"{why} needs `pip install timm` (its ImageNet synset tables ship inside "
                                "the wheel)") from e
    return ImageNetInfo(subset)


@functools.lru_cache(maxsize=1)
def wordnet_glosses() -> dict[str, tuple[str, ...]]:
    """Lower-case lemma -> the WordNet definitions of the ImageNet-21k synsets it names (timm's tables)."""
    info = _imagenet_info("imagenet-21k", "reading names with their WordNet definitions")
    out: dict[str, list[str]] = {}
    for lemmas, detailed in zip(info.label_descriptions(), info.label_descriptions(detailed=True)):
        definition = detailed[len(lemmas) + 2:].strip()      # detailed = "<lemmas>: <definition>"
        if not definition:
            continue
        for lemma in lemmas.split(","):
            key = _lemma_key(lemma)
            if key and definition not in out.setdefault(key, []):
                out[key].append(definition)
    return {k: tuple(v) for k, v in out.items()}


def _lemma_key(words: str) -> str:
    # hyphens read as spaces on both sides: CUB's "Black_billed_Cuckoo" is WordNet's "black-billed cuckoo"
    return " ".join(words.replace("-", " ").split()).lower()


def _name_keys(text: str) -> list[str]:
    """``text`` read as a name, then its candidate singulars ("zebras" -> "zebra", "foxes" -> "fox")."""
    key = _lemma_key(as_name(text))
    return [k for k in (key, key[:-1] if key.endswith("s") else None, key[:-2] if key.endswith("es") else None) if k]


def glosses_of(text: str) -> tuple[str, ...]:
    """WordNet definitions of ``text`` read as a name: an exact lemma (case, hyphens and spacing aside),
    else its singular ("zebras"); () if none."""
    table = wordnet_glosses()
    for k in _name_keys(text):
        if k in table:
            return table[k]
    return ()


@functools.lru_cache(maxsize=1)
def imagenet_lemmas() -> tuple[tuple[str, ...], ...]:
    """Per ImageNet-1k class, in class-index order, the lemma keys of its WordNet synset (timm's table):
    ``("red fox", "vulpes vulpes")`` for class 277."""
    info = _imagenet_info("imagenet-1k", "reading names against the ImageNet classes")
    out = tuple(tuple(k for k in (_lemma_key(x) for x in s.split(",")) if k) for s in info.label_descriptions())
    if len(out) != 1000:
        raise CheckpointError(f"timm's ImageNet-1k table has {len(out)} classes, expected 1000")
    return out


def description_words(name: str, limit: int = DESCRIPTION_WORDS) -> list[str]:
    """The first ``limit`` content words of the first WordNet definition of ``name``, without the
    name's own words or ``_STOP_WORDS`` (a word-list description with a known answer, ``build.py``
    step "attribute words"; [] if no synset)."""
    defs = glosses_of(name)
    if not defs:
        return []
    own = set(_lemma_key(as_name(name)).split())
    out: list[str] = []
    for w in re.findall(r"[a-z][a-z-]*[a-z]", defs[0].lower()):
        if w not in _STOP_WORDS and w not in own and w not in out:
            out.append(w)
    return out[:limit]
