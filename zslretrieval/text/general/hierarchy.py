"""Hierarchy anchors: a name outside the 1000 classes reaches its relatives through WordNet's noun hierarchy.

ImageNet-1k's classes are WordNet 3.0 noun synsets (their ids ``n01440764`` are WordNet offsets), so a
name WordNet knows but ImageNet does not ("woodpecker", "kingfisher", "wren") has ImageNet relatives:
the classes under its nearest ancestor that has any ("woodpecker" -> piciform bird -> jacamar,
toucan). :func:`tree_anchors` finds them; the query is then pulled to their prototypes, weighted by
tree distance, like the known-name anchors (``anchors.py``), only where a name has neither an exact
nor a hyponym anchor. The share, the distance decay and how far up the tree a name may climb are
chosen on val ImageNet names anchored on train classes only (``build.choose_hierarchy``).

How a name is read (:func:`senses_of`, :func:`tree_anchors`):
* its words as a WordNet lemma (case, hyphens and spacing aside, then its singular, as
  ``lexicon._name_keys`` reads a name for definitions and classes);
* else its **head noun**: the longest run of its last words that is a lemma ("Red-bellied
  Woodpecker", which WordNet lacks, -> "woodpecker"). English compounds name a kind of their last
  word -- the same reading the hyponym anchors rest on (val chose them) -- so a species WordNet lacks
  is placed by its genus word; a miss costs no more than the genus' relatives;
* of a lemma's senses, *instances* are left out (``@i``: "wren"'s first sense is the architect
  Christopher Wren; no ImageNet class is an instance), and the sense nearest the ImageNet classes (fewest
  steps up to an ancestor with classes under it; then WordNet's order, most frequent first) is the
  one read: "albatross" is first "a source of frustration", "raccoon" the fur. A photo search names
  something photographed, and the 1000 classes are what photographs show; where a name's senses are
  equally near, WordNet's order decides.

* only a **category** is anchored: a sense with kinds under it ("woodpecker", "wren"; a species
  WordNet lacks is read as its head noun, so "Red-bellied Woodpecker" is the category woodpecker). A
  category is answered by its members' looks, and the relatives of one ImageNet lacks stand in for
  them; a *kind* with none under it (a leaf: "belted kingfisher", most ImageNet classes) must be told
  apart from its siblings, which a mean of their relatives cannot do: on val, anchoring the held-out
  class names themselves lowered their top-1 at every share (0.580 -> 0.550 at 0.25, 2026-12-07).

WordNet 3.0 is read from Debian's ``wordnet-base`` (``/usr/share/wordnet``; ``$WNSEARCHDIR``, WordNet's
own variable, overrides): ``index.noun`` (lemma -> senses) and ``data.noun`` (``@``/``@i`` hypernym
pointers), parsed once per process, in plain Python (no torch, no nltk). Without the files there are
no hierarchy anchors and everything else works as before.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .lexicon import _SYNSET_FILES, _lemma_key, _name_keys, _timm_info_dir

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"   # Debian / Ubuntu package wordnet-base (WordNet 3.0)


def wordnet_dir() -> Path:
    """Where WordNet's database files are: ``$WNSEARCHDIR`` if set, else Debian's folder."""
    return Path(os.environ.get("WNSEARCHDIR") or DEFAULT_WORDNET_DIR)


@dataclass(frozen=True)
class NounHierarchy:
    """WordNet's nouns as the anchors need them: lemma key -> its senses (offsets, most frequent first,
    instances left out) and synset -> its hypernyms (``@`` and ``@i``), plus each synset's first lemma."""

    senses: dict[str, tuple[int, ...]]
    hypernyms: dict[int, tuple[int, ...]]
    first_lemma: dict[int, str]
    categories: frozenset[int]      # synsets with kinds under them (targets of some ``@``)

    def ancestors(self, synset: int, max_up: int | None = None) -> dict[int, int]:
        """``synset`` and every ancestor -> the fewest hypernym steps up to it (0 for itself)."""
        out, frontier, d = {synset: 0}, [synset], 0
        while frontier and (max_up is None or d < max_up):
            d += 1
            nxt = []
            for s in frontier:
                for h in self.hypernyms.get(s, ()):
                    if h not in out:
                        out[h] = d
                        nxt.append(h)
            frontier = nxt
        return out


@functools.lru_cache(maxsize=2)
def _load(folder: str) -> NounHierarchy | None:
    index, data = Path(folder) / "index.noun", Path(folder) / "data.noun"
    if not (index.is_file() and data.is_file()):
        return None
    hypernyms: dict[int, tuple[int, ...]] = {}
    first: dict[int, str] = {}
    instances: set[int] = set()
    categories: set[int] = set()
    with open(data, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):          # the licence header
                continue
            n_words = int(line.split(" ", 4)[3], 16)
            p = line.split(" ", 4 + 2 * n_words)    # offset, lexfile, type, count, lemma ids...; then the pointers
            off = int(p[0])
            first[off] = p[4].replace("_", " ")
            rest = p[-1].split()
            ups = []
            for j in range(int(rest[0])):
                sym, target = rest[1 + 4 * j], rest[2 + 4 * j]
                if sym in ("@", "@i"):
                    ups.append(int(target))
                    if sym == "@i":
                        instances.add(off)
                    else:
                        categories.add(int(target))
            hypernyms[off] = tuple(ups)
    senses: dict[str, tuple[int, ...]] = {}
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue
            p = line.split()
            n = int(p[2])
            kinds = tuple(o for o in map(int, p[-n:]) if o not in instances)
            if kinds:
                key = " ".join(p[0].replace("_", " ").replace("-", " ").split())
                senses[key] = senses.get(key, ()) + tuple(o for o in kinds if o not in senses.get(key, ()))
    return NounHierarchy(senses, hypernyms, first, frozenset(categories))


def noun_hierarchy() -> NounHierarchy | None:
    """WordNet 3.0's noun hierarchy, parsed once per process; None where the files are absent."""
    return _load(str(wordnet_dir()))


def senses_of(text: str, nouns: NounHierarchy) -> tuple[tuple[int, ...], str | None]:
    """``(offsets, lemma read)``: the kind-senses of ``text`` read as a name, else of its head noun
    (module docstring), most frequent first; ``((), None)`` if WordNet has neither."""
    keys = _name_keys(text)
    n = max((len(k.split()) for k in keys), default=0)
    for drop in range(n):
        for k in keys:
            words = k.split()
            if drop < len(words):
                key = " ".join(words[drop:])
                if key in nouns.senses:
                    return nouns.senses[key], key
    return (), None


@functools.lru_cache(maxsize=1)
def imagenet_offsets() -> tuple[int, ...]:
    """The WordNet offsets of the 1000 ImageNet classes in class order (timm's ``imagenet_synsets.txt``)."""
    folder = _timm_info_dir("placing names among the ImageNet classes in WordNet")
    ids = (folder / _SYNSET_FILES["imagenet-1k"]).read_text().split()
    return tuple(int(s[1:]) for s in ids)


@functools.lru_cache(maxsize=4)
def _class_ancestors(folder: str) -> tuple[dict[int, int], ...]:
    nouns = _load(folder)
    return tuple(nouns.ancestors(o) for o in imagenet_offsets())


def category_words(known: Sequence[int], rows: Sequence[int]) -> dict[str, set[int]]:
    """Category words with a known answer, for choosing on held-out classes: the first lemma of each
    WordNet category with ImageNet classes among ``rows`` under it (or being it) and none among
    ``known`` -> those ``rows`` classes. Like "woodpecker", which no ImageNet class is or is under,
    the word can reach its members only through relatives; {} without WordNet."""
    nouns = noun_hierarchy()
    if nouns is None:
        return {}
    per_class = _class_ancestors(str(wordnet_dir()))
    known_anc = {a for i in known for a in per_class[int(i)]}
    out: dict[str, set[int]] = {}
    for i in rows:
        for a in per_class[int(i)]:
            if a in nouns.categories and a not in known_anc:
                out.setdefault(_lemma_key(nouns.first_lemma[a]), set()).add(int(i))
    return dict(sorted(out.items()))


def tree_anchors(text: str, known: Sequence[int] | None = None, decay: float = 0.5,
                 max_up: int | None = None) -> tuple[list[int], list[float], str | None]:
    """The ImageNet classes (indices; among ``known``, default all) under the nearest ancestor of
    ``text``'s synset -- a *category*, one with kinds under it (module docstring) -- that has any,
    within ``max_up`` hypernym steps, with weights
    ``decay ** (tree distance - the nearest one's)``; and what joined them ("woodpecker -> piciform
    bird"). ``([], [], None)`` without WordNet, a synset or such an ancestor."""
    nouns = noun_hierarchy()
    if nouns is None:
        return [], [], None
    senses, key = senses_of(text, nouns)
    per_class = _class_ancestors(str(wordnet_dir()))
    allowed = range(len(per_class)) if known is None else [int(i) for i in known]
    best: tuple[int, int, int] | None = None     # (steps up from the name, sense order, ancestor)
    for order, s in enumerate(x for x in senses if x in nouns.categories):   # categories only (docstring)
        for a, up in nouns.ancestors(s, max_up).items():
            if (best is None or (up, order, a) < best) and any(a in per_class[i] for i in allowed):
                best = (up, order, a)
    if best is None:
        return [], [], None
    up, _, a = best
    classes = [i for i in allowed if a in per_class[i]]
    dist = [up + per_class[i][a] for i in classes]
    weights = [float(decay) ** (d - min(dist)) for d in dist]
    return classes, weights, f"{key} -> {nouns.first_lemma[a]}" if up else key
