"""WordNet as timm ships it: the ImageNet-21k lemmas with their definitions, and the ImageNet-1k classes' lemmas.

The tables are read from timm's files (``timm/data/_info/``, located with ``importlib.util.find_spec``)
without importing timm, which imports torch: a query reads three text files, not a deep-learning stack.

How a text is read as a name (``_name_keys``: case, hyphens and spacing aside, then its singular) is
shared by the definition lookup (:func:`glosses_of`, ``glosses.py``) and the class lookup
(``anchors.name_anchors``), so a name finds its definitions and its classes the same way.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib.util
import json
import re
from pathlib import Path

from ...errors import CheckpointError
from ..names import as_name

DESCRIPTION_WORDS = 6   # content words of a definition that make a val class's word-list description
# Function words and WordNet's hedges, left out of a definition's word list (what remains describes).
_STOP_WORDS = frozenset(
    "a an the of and or to in on with by for from as at that which who is are be its it their usually often "
    "having has have any several various especially some most many genus family order e g i kind type called "
    "used like one two three four five".split())


# timm's table files (timm/data/_info/), named as timm.data.ImageNetInfo names them
_SYNSET_FILES = {"imagenet-1k": "imagenet_synsets.txt", "imagenet-21k": "imagenet21k_goog_synsets.txt"}
_LEMMA_FILE = "imagenet_synset_to_lemma.txt"
_DEFINITION_FILE = "imagenet_synset_to_definition.txt"


def _timm_info_dir(why: str) -> Path:
    """timm's folder of ImageNet synset tables, found without importing timm (``import timm`` imports
    torch: seconds and hundreds of MB for three text files); a clear error naming the package when absent."""
    from ...errors import DataNotFoundError
    spec = importlib.util.find_spec("timm")   # a top-level package: located, not executed
    folder = None
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info"
    if folder is None or not (folder / _LEMMA_FILE).is_file():
        raise DataNotFoundError(f"{why} needs `pip install timm` (its ImageNet synset tables ship inside "
                                f"the wheel; looked in {folder or 'no timm package'})")
    return folder


def _read_tsv(path: Path) -> dict[str, str]:
    # parsed as timm parses it (csv, tab-delimited, default quoting), so both read the same strings
    return dict(csv.reader(path.read_bytes().decode("utf-8").splitlines(), delimiter="\t"))


@functools.lru_cache(maxsize=1)
def _wordnet_tables(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(synset -> its lemmas "a, b", synset -> its definition), read once per process."""
    return _read_tsv(folder / _LEMMA_FILE), _read_tsv(folder / _DEFINITION_FILE)


def _synset_entries(subset: str, why: str) -> list[tuple[str, str]]:
    """Per synset of ``subset`` ("imagenet-1k" or "imagenet-21k"), in timm's class order, (its lemmas
    "red fox, Vulpes vulpes", its definition), read from timm's files without importing timm."""
    folder = _timm_info_dir(why)
    try:
        synsets = (folder / _SYNSET_FILES[subset]).read_bytes().decode("utf-8").splitlines()
        lemmas, definitions = _wordnet_tables(folder)
        return [(lemmas[s], definitions[s]) for s in synsets]
    except (OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"timm's ImageNet synset tables in {folder} do not read ({type(e).__name__}: {e})") from e


def label_descriptions(subset: str, why: str, detailed: bool = False) -> list[str]:
    """Per synset of ``subset``, its lemmas or with ``detailed`` "<lemmas>: <definition>": exactly
    ``timm.data.ImageNetInfo(subset).label_descriptions(detailed)`` (a test holds the two equal)."""
    return [f"{lem}: {d}" if detailed else lem for lem, d in _synset_entries(subset, why)]


# Bump when the table wordnet_glosses builds changes shape or reading: part of its cache key.
_GLOSS_TABLE_FORMAT = "glosses/v1"


@functools.lru_cache(maxsize=1)
def wordnet_glosses() -> dict[str, tuple[str, ...]]:
    """Lower-case lemma -> the WordNet definitions of the ImageNet-21k synsets it names (timm's tables).

    Parsing the 21k-synset tables costs 0.3-0.5 s, paid by every query process that reads a name; the
    table is therefore kept as JSON in the text cache (``$ZSLR_CACHE/text``, else
    ``<data root>/cache/text``) under a key of the source files' names, sizes and mtimes and the format,
    so a changed timm never reuses a stale table. JSON, not pickle: a cache file is never trusted
    with code.
    """
    folder = _timm_info_dir("reading names with their WordNet definitions")
    cache = _gloss_cache_path(folder)
    if cache is not None and cache.is_file():
        try:
            table = json.loads(cache.read_text(encoding="utf-8"))
            if isinstance(table, dict):
                return {k: tuple(v) for k, v in table.items()}
        except (OSError, ValueError, TypeError):
            pass  # torn or foreign: rebuilt below
    out: dict[str, list[str]] = {}
    # the synsets' lemmas and definitions, as label_descriptions("imagenet-21k") and its detailed form
    # ("<lemmas>: <definition>") give them, without formatting 21k strings only to split them again
    for lemmas, definition in _synset_entries("imagenet-21k", "reading names with their WordNet definitions"):
        definition = definition.strip()
        if not definition:
            continue
        for lemma in lemmas.split(","):
            key = _lemma_key(lemma)
            if key and definition not in out.setdefault(key, []):
                out[key].append(definition)
    if cache is not None:
        from ...fileio import atomic_write
        data = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            atomic_write(cache, lambda f: f.write(data))
        except OSError:
            pass  # an unwritable cache only costs the parse next time
    return {k: tuple(v) for k, v in out.items()}


def _gloss_cache_path(folder: Path) -> Path | None:
    from ...paths import resolve_cache_dir
    stamp = [_GLOSS_TABLE_FORMAT]
    for name in (_SYNSET_FILES["imagenet-21k"], _LEMMA_FILE, _DEFINITION_FILE):
        try:
            st = (folder / name).stat()
        except OSError:
            return None
        stamp.append(f"{name}|{st.st_size}|{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:24]
    return resolve_cache_dir("text") / f"wordnet-glosses-{key}.json"


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
    out = tuple(tuple(k for k in (_lemma_key(x) for x in s.split(",")) if k)
                for s in label_descriptions("imagenet-1k", "reading names against the ImageNet classes"))
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
