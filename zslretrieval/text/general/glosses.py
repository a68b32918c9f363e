"""How a text becomes a sentence embedding: prompt templates, and for a name its WordNet definitions.

Glosses: a bare name tells the sentence encoder little -- "bobcat" lands near "bobsled" as readily
as near "lynx" -- while WordNet's definition of it ("small lynx of North America") names what it
looks like. Every name a query or a class is given as is looked up among the lemmas of the
ImageNet-21k synsets (timm ships their WordNet lemmas and definitions); a name that matches is read as
``(1 - g) x prompt + g x unit mean of its definitions' embeddings`` (several synsets: "bat" the animal
and the club, all averaged -- nothing tells them apart), unit-normalised. ``g`` is chosen on val
among ``GLOSS_WEIGHTS`` (0 = names only, so glosses must earn their place); the held-out classes'
names are looked up exactly as a user's words are. Free text and attribute words that are not a
lemma are read as they are.

The candidates a build chooses among on val (``build.py``) are listed here, next to the reading
they parameterise.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .lexicon import glosses_of
from .vectors import _unit

# Prompt candidates: a single template, or an ensemble (text embeddings averaged, then unit-normalised).
TEMPLATES = (("{}",), ("a photo of a {}.",),
             ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a good photo of a {}."),
             ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a good photo of a {}.",
              "a photo of a small {}.", "a photo of a large {}.", "a picture of a {}.", "a blurry photo of a {}."))
# Share of the WordNet definitions in a name's embedding (module docstring); 0 first: names alone win ties.
GLOSS_WEIGHTS = (0.0, 0.3, 0.5, 0.7)
# How attribute words are read, chosen on val (build.py, "attribute words"); listed simplest
# first (ties keep the earlier). ATTRIBUTE_TEMPLATE: the reading of a model saved without the choice.
ATTRIBUTE_TEMPLATES = ("{}", "something {}.", "a photo of a {}.", "a photo of something with {}.")
ATTRIBUTE_TEMPLATE = "a photo of something with {}."


def prompt_embeddings(encode: Callable[[str], np.ndarray], templates: Sequence[str]) -> np.ndarray:
    """Unit mean over ``templates`` of ``encode(template)`` (n, 384): a prompt ensemble (one template: itself)."""
    if len(templates) == 1:
        return np.asarray(encode(templates[0]), np.float32)
    return _unit(np.mean([encode(t) for t in templates], axis=0)).astype(np.float32)


def gloss_embeddings(texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(G (n, E), has (n,) bool)``: row i the unit mean of the embeddings of ``texts[i]``'s WordNet
    definitions (``encode`` embeds a list of them, E wide), where it has any (``has``); zero rows
    elsewhere (E = 0 when no text has any). Independent of the weight: a build computes it once for
    every candidate weight (:func:`mix_glosses`)."""
    found = [glosses_of(t) for t in texts]
    flat = sorted({d for ds in found for d in ds})
    has = np.array([bool(ds) for ds in found], bool)
    g = np.zeros((len(texts), 0), np.float32)
    if flat:
        e = np.asarray(encode(flat), np.float32)
        emb, g = dict(zip(flat, e)), np.zeros((len(texts), e.shape[1]), np.float32)
        for i, ds in enumerate(found):
            if ds:
                g[i] = _unit(np.mean([emb[d] for d in ds], axis=0))
    return g, has


def mix_glosses(base: np.ndarray, g: np.ndarray, has: np.ndarray, weight: float) -> np.ndarray:
    """Rows of ``base`` with glosses (``has``) -> unit ``(1 - weight) x base + weight x g``; others unchanged."""
    if not weight or not has.any():
        return base
    out = np.array(base, np.float32, copy=True)
    for i in np.flatnonzero(has):
        out[i] = _unit((1.0 - weight) * out[i] + weight * g[i])
    return out


def with_glosses(base: np.ndarray, texts: Sequence[str], weight: float,
                 encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """(n, 384) name embeddings ``base`` of ``texts`` mixed with their glosses' (module docstring).

    ``encode`` embeds a list of definitions (cached while building, plain at query time). Rows whose
    text names no synset, and every row when ``weight`` is 0, come back unchanged.
    """
    if not weight:
        return base
    return mix_glosses(base, *gloss_embeddings(texts, encode), weight)
