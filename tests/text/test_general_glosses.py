"""WordNet lookups (text/general/lexicon.py) and how a name is read with its definitions (glosses.py), hand-worked."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.text import general as gen
from zslretrieval.text.general import lexicon


def test_glosses_lookup_and_mixing_hand_worked(monkeypatch):
    """WordNet definitions by exact lemma (or its plural), then (1-g) x name + g x unit mean of the definitions."""
    assert gen.glosses_of("bobcat") == ("small lynx of North America",)
    assert gen.glosses_of("a Bobcat") == gen.glosses_of("bobcats") == gen.glosses_of("bobcat")
    assert gen.glosses_of("a striped animal in the water") == ()
    assert gen.glosses_of("Black billed Cuckoo") == gen.glosses_of("black-billed  cuckoo") != ()
    assert len(gen.glosses_of("bat")) >= 2              # the animal and the club: both kept, nothing tells them apart
    table = {"small lynx of North America": [0.0, 1.0, 0.0], "one": [0.0, 0.0, 2.0], "two": [0.0, 2.0, 0.0]}
    calls = []

    def encode(defs):
        calls.append(list(defs))
        return np.array([table[d] for d in defs], np.float32)
    base = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    assert gen.with_glosses(base, ["bobcat", "no such lemma here"], 0.0, encode) is base and not calls
    out = gen.with_glosses(base, ["bobcat", "no such lemma here"], 0.3, encode)
    np.testing.assert_allclose(out[0], gen._unit(np.array([0.7, 0.3, 0.0])), atol=1e-6)
    np.testing.assert_array_equal(out[1], base[1])     # no synset: unchanged
    assert calls == [["small lynx of North America"]]
    # several definitions: their unit mean, whatever the norms the encoder gives
    # glosses_of reads the table in lexicon, where it is defined
    monkeypatch.setattr(lexicon, "wordnet_glosses", lambda: {"thing": ("one", "two")})
    out = gen.with_glosses(base[:1], ["things"], 0.5, encode)
    g = gen._unit(np.array([0.0, 0.5, 0.5]))
    np.testing.assert_allclose(out[0], gen._unit(0.5 * base[0] + 0.5 * g), atol=1e-6)


def test_missing_timm_names_the_package(monkeypatch):
    """The WordNet tables come from timm's wheel; without it the error says what to install (exit 2)."""
    from zslretrieval.errors import DataNotFoundError
    monkeypatch.setitem(__import__("sys").modules, "timm", None)   # find_spec("timm") now finds no package
    gen.wordnet_glosses.cache_clear()
    try:
        with pytest.raises(DataNotFoundError, match="pip install timm"):
            gen.glosses_of("zebra")
    finally:
        gen.wordnet_glosses.cache_clear()
    # a model whose val choice kept names alone never needs the tables
    base = np.eye(2, dtype=np.float32)
    assert gen.with_glosses(base, ["zebra", "okapi"], 0.0, lambda d: 1 / 0) is base
