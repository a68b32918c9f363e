from __future__ import annotations

import json

import numpy as np
import pytest

from zslretrieval.errors import DataNotFoundError, InvalidInputError, UnknownNameError
from zslretrieval.query import (AttributeTerm, UnknownQueryNameError, Vocabulary, build_attribute_vector,
                                normalise_name, normalise_semantics, parse_attribute_terms, read_attribute_file)

from .fakes import CLASSES, VOCAB


def test_normalise_name_ignores_case_space_and_separators():
    assert normalise_name("Killer Whale") == normalise_name("killer+whale") == "killerwhale"
    assert normalise_name(" HAS-Bill shape::Curved (up or down) ") == normalise_name("has_bill_shape::curved_(up_or_down)")


def test_vocabulary_resolves_forgivingly():
    v = Vocabulary(VOCAB)
    assert v.resolve("stripes") == 2
    assert v.resolve("STRIPES") == 2
    assert v.resolve("has bill shape::curved (up or down)") == 4
    c = Vocabulary(CLASSES, "class")
    assert c.resolve("killer whale") == 1
    assert c.resolve("Polar-Bear") == 2


def test_unknown_name_suggests_closest_and_is_exit_2():
    v = Vocabulary(VOCAB)
    with pytest.raises(UnknownQueryNameError) as ei:
        v.resolve("stripse")
    err = ei.value
    assert isinstance(err, UnknownNameError) and err.exit_code == 2
    assert err.suggestions[0] == "stripes"
    assert "stripse" in str(err) and "did you mean: stripes" in str(err)


def test_suggestions_also_match_normalised_form():
    c = Vocabulary(CLASSES, "class")
    # raw difflib would compare "Killer Whle" with "killer+whale" case-sensitively
    assert "killer+whale" in c.suggest("KILLER WHLE")


def test_ambiguous_normalised_name_is_refused():
    v = Vocabulary(["black_white", "black-white", "red"])
    assert v.resolve("black_white") == 0            # exact spelling wins
    with pytest.raises(InvalidInputError, match="ambiguous"):
        v.resolve("Black White")


def test_parse_attribute_terms_weights_and_negation():
    terms = parse_attribute_terms(" stripes, water=0.7 ,-big, -black=0.5,,")
    assert terms == [AttributeTerm("stripes", 1.0), AttributeTerm("water", 0.7), AttributeTerm("big", -1.0),
                     AttributeTerm("black", -0.5)]


@pytest.mark.parametrize("text", ["", " , ", "stripes=abc", "=0.5", "-"])
def test_parse_attribute_terms_rejects_malformed(text):
    with pytest.raises(InvalidInputError):
        parse_attribute_terms(text)


def test_build_attribute_vector_hand_worked():
    # stripes=1, big=-1 -> [0,0,1,0,0,-1] / sqrt(2)
    v, resolved = build_attribute_vector(parse_attribute_terms("Stripes, -big"), Vocabulary(VOCAB), "l2")
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(v, [0, 0, r, 0, 0, -r], atol=1e-7)
    assert resolved == [("stripes", 1.0), ("big", -1.0)]
    # weights 3 and 4 -> 0.6, 0.8 (a 3-4-5 triangle); "none" keeps raw values
    v, _ = build_attribute_vector(parse_attribute_terms("white=3,water=4"), Vocabulary(VOCAB), "l2")
    np.testing.assert_allclose(v, [0, 0.6, 0, 0.8, 0, 0], atol=1e-7)
    v, _ = build_attribute_vector(parse_attribute_terms("white=3,water=4"), Vocabulary(VOCAB), "none")
    np.testing.assert_allclose(v, [0, 3, 0, 4, 0, 0])


def test_repeated_name_keeps_last_weight_and_zero_vector_refused():
    v, resolved = build_attribute_vector(parse_attribute_terms("water=2,WATER=0.5"), Vocabulary(VOCAB), "none")
    assert resolved == [("water", 0.5)] and v[3] == 0.5
    with pytest.raises(InvalidInputError, match="all zeros"):
        build_attribute_vector(parse_attribute_terms("water=0"), Vocabulary(VOCAB), "l2")
    with pytest.raises(InvalidInputError, match="normalisation"):
        normalise_semantics(np.ones(3), "l1-ish")


@pytest.mark.parametrize("text", ["1\n0\n0\n2\n0\n0\n", "1,0,0,2,0,0", json.dumps([1, 0, 0, 2, 0, 0]), "1 0 0\n2 0 0"])
def test_read_attribute_file_formats(tmp_path, text):
    p = tmp_path / "v.txt"
    p.write_text(text)
    np.testing.assert_array_equal(read_attribute_file(p, 6), [1, 0, 0, 2, 0, 0])


def test_read_attribute_file_errors_name_sizes(tmp_path):
    p = tmp_path / "v.txt"
    p.write_text("1,2,3")
    with pytest.raises(InvalidInputError, match="has 3 values but the vocabulary has 6"):
        read_attribute_file(p, 6)
    p.write_text("1,two,3")
    with pytest.raises(InvalidInputError, match="'two'"):
        read_attribute_file(p, 3)
    p.write_text('{"a": 1}')
    with pytest.raises(InvalidInputError):
        read_attribute_file(p, 1)
    with pytest.raises(DataNotFoundError):
        read_attribute_file(tmp_path / "missing.txt", 6)


def test_real_awa1_predicates_suggest_stripes(shared_data):
    names = [line.split()[-1] for line in (shared_data / "xlsa17/AWA1/predicates.txt").read_text().splitlines() if line.strip()]
    assert len(names) == 85
    v = Vocabulary(names)
    assert names[v.resolve("Stripes")] == "stripes"
    with pytest.raises(UnknownQueryNameError) as ei:
        v.resolve("stripse")
    assert ei.value.suggestions[0] == "stripes"
    classes = (shared_data / "xlsa17/AWA1/allclasses.txt").read_text().split()
    assert classes[Vocabulary(classes, "class").resolve("Killer Whale")] == "killer+whale"


def test_plain_number_is_the_number_regex():
    """The regex-free weight parse accepts exactly what _NUMBER accepts (over every short string of
    the characters involved) and defers everything else to it."""
    import itertools

    from zslretrieval.query.vocab import _NUMBER, _plain_number

    for n in range(6):
        for t in itertools.product("01.+-eE", repeat=n):
            w = "".join(t)
            got = _plain_number(w)
            if _NUMBER.match(w):
                assert got == float(w), w
            else:
                assert got is None, w
    for w in ["\u0661\u0662", "1_0", "inf", "nan", " 1", "0x1"]:
        assert _plain_number(w) is None
    assert parse_attribute_terms("water=\u0661.5") == [AttributeTerm("water", 1.5)]
