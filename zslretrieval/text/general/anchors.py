"""Known-name anchors: a name that names some of the backbone's own 1000 classes is pulled to their prototypes.

The backbone already knows 1000 classes, so a name that names some of them needs no
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
its first (``ANCHOR_LEMMAS``). Attribute words are not anchored. A name with neither kind may be
anchored through WordNet's hierarchy on its nearest ImageNet relatives (``hierarchy.py``, rule
"hierarchy"), with a share, distance decay and reach chosen on val (``TREE_*``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InvalidInputError
from . import lexicon
from .hierarchy import tree_anchors
from .lexicon import _name_keys
from .vectors import _unit

ANCHOR_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)   # hyponym anchors' share, chosen on val (0 first: must earn it)
# Which lemmas of a synset a hyponym may end: all, or only the first (WordNet's head word), chosen on val
# with the share. Exocentric compounds ("river horse" = hippopotamus, "sea wolf" = killer whale, "bee
# house" = apiary) are rarely a synset's first lemma; exact matches always use every lemma.
ANCHOR_LEMMAS = ("all", "first")
EXACT_ANCHOR = 1.0   # an exact ImageNet name is its own classifier row (module docstring)
# WordNet hierarchy anchors (``hierarchy.py``) for names with neither kind: (share, decay, max_up), chosen
# on val names anchored on train classes (``build.choose_hierarchy``); share 0 first: it must earn its place
TREE_SHARES = (0.0, 0.25, 0.5, 0.75)
TREE_DECAYS = (0.5, 1.0)       # weight of a class = decay ** (its tree distance - the nearest class's)
TREE_MAX_UP = (1, 2, 4, None)  # hypernym steps a name may climb to reach classes (None: any)
TreeSetting = tuple[float, float, "int | None"]


def name_anchors(text: str, lemmas: Sequence[Sequence[str]], known: Sequence[int] | None = None,
                 hyponyms: str = "all") -> tuple[list[int], str | None]:
    """The classes among ``known`` (indices into ``lemmas``; default all) that the name ``text`` names
    (module docstring): ``(classes, "exact")`` where it is one of their lemmas, else
    ``(classes, "hyponym")`` where a lemma of more words ends in its words (``hyponyms="first"``: only
    each class's first lemma), else ``([], None)``. The name's singular is tried after it, as
    :func:`lexicon.glosses_of` does."""
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
                  known: Sequence[int] | None = None, hyponyms: str = "all",
                  tree: TreeSetting | None = None) -> tuple[np.ndarray, list[tuple[list[int], str | None]]]:
    """(n, D) predicted queries of the names ``texts`` -> ``(unit (n, D) anchored, found)``: row i becomes
    ``unit((1 - a) x pred[i] + a x unit mean of protos[anchors])`` with a = ``EXACT_ANCHOR`` for an exact
    name and ``weight`` for hyponyms; rows without anchors (or a = 0) are unchanged. ``protos`` (1000, D)
    unit class prototypes; ``found[i]`` = :func:`name_anchors` of ``texts[i]`` (``known``, ``hyponyms``).
    With ``tree`` (share, decay, max_up) a name with neither takes WordNet hierarchy anchors
    (``hierarchy.tree_anchors``: the mean is weighted by tree distance; rule "hierarchy")."""
    # read through the module, not a copied name, so a substituted table (tests' small ones) is the one used
    lemmas = lexicon.imagenet_lemmas()
    out = np.array(pred, np.float32, copy=True)
    found = [name_anchors(t, lemmas, known, hyponyms) for t in texts]
    for i, (classes, rule) in enumerate(found):
        a = EXACT_ANCHOR if rule == "exact" else float(weight) if rule == "hyponym" else 0.0
        w = None
        if rule is None and tree is not None and tree[0]:
            classes, w, _ = tree_anchors(texts[i], known, tree[1], tree[2])
            if classes:
                a, found[i] = float(tree[0]), (classes, "hierarchy")
        if a:
            # rows first: no (1000, D) copy
            anchor = _unit(np.average(np.asarray(protos)[classes].astype(np.float64), axis=0, weights=w))
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
