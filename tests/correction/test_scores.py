import numpy as np
import pytest

from zslretrieval.correction import ScoreCorrection, apply_terms, candidates, reference_columns, score_unit
from zslretrieval.errors import InvalidInputError


REF = np.array([[0.9, 0.1, 0.2],    # image 0: claimed strongly by seen class 0
                [0.3, 0.2, 0.1]])   # image 1: weakly claimed


def test_stack_terms_hand_worked():
    scale, offset = ScoreCorrection("stack", k=1, weight=0.5).terms(REF)
    assert scale.tolist() == [1.0, 1.0]
    assert offset.tolist() == pytest.approx([-0.45, -0.15])          # -0.5 * max
    _, offset2 = ScoreCorrection("stack", k=2, weight=1.0).terms(REF)
    assert offset2.tolist() == pytest.approx([-0.55, -0.25])         # -(mean of two highest)


def test_stack_reorders_a_claimed_image_below_an_unclaimed_one():
    raw = np.array([[0.5, 0.4]])  # image 0 ranks first on raw scores
    scale, offset = ScoreCorrection("stack", k=1, weight=0.5).terms(REF)
    corrected = apply_terms(raw, scale, offset)
    assert corrected.tolist() == [pytest.approx([0.05, 0.25])]        # 0.5-0.45, 0.4-0.15: image 1 first


def test_zscore_terms_hand_worked():
    scale, offset = ScoreCorrection("zscore").terms(np.array([[1.0, 3.0], [0.0, 0.5]]))
    # image 0: mean 2, std 1; image 1: mean 0.25, std 0.25
    assert scale.tolist() == pytest.approx([1.0, 4.0])
    assert offset.tolist() == pytest.approx([-2.0, -1.0])
    assert apply_terms(np.array([[2.5, 0.5]]), scale, offset).tolist() == [pytest.approx([0.5, 1.0])]


def test_zscore_constant_row_gets_a_finite_scale():
    scale, _ = ScoreCorrection("zscore").terms(np.array([[0.2, 0.2], [0.0, 1.0]]))
    assert np.all(np.isfinite(scale)) and scale[0] > scale[1]


def test_none_and_zero_weight_are_identity_and_inactive():
    for c in (ScoreCorrection(), ScoreCorrection("stack", 3, 0.0)):
        assert not c.active
        scale, offset = c.terms(REF)
        assert scale.tolist() == [1, 1] and offset.tolist() == [0, 0]
    assert ScoreCorrection("zscore").active and ScoreCorrection("stack", 1, 0.1).active


def test_dict_round_trip_and_bad_values():
    c = ScoreCorrection("stack", 3, 0.75)
    assert ScoreCorrection.from_dict(c.to_dict()) == c
    assert ScoreCorrection.from_dict(None) == ScoreCorrection()
    p = ScoreCorrection("posterior", weight=0.75, temperature=0.5, unit=0.2)
    assert ScoreCorrection.from_dict(p.to_dict()) == p
    assert p.same_choice(ScoreCorrection("posterior", weight=0.75, temperature=0.5, unit=3.0))
    assert not p.same_choice(ScoreCorrection("posterior", weight=0.75, temperature=1.0, unit=0.2))
    assert c.to_dict() == {"kind": "stack", "k": 3, "weight": 0.75}   # older cards read the same
    for bad in (dict(kind="softmax"), dict(kind="stack", k=0), dict(kind="stack", weight=-1.0),
                dict(kind="stack", weight=float("nan")), dict(kind="posterior", weight=1.0, temperature=0.0),
                dict(kind="posterior", weight=1.0, unit=-1.0), dict(kind="posterior", weight=1.0, unit=float("inf"))):
        with pytest.raises(InvalidInputError, match="correction"):
            ScoreCorrection(**bad)
    assert candidates()[0] == ScoreCorrection()


def test_posterior_terms_hand_worked():
    # T = temperature * unit = 0.5 * 2 = 1. Image 0 scores (0, 0): logsumexp = ln 2;
    # image 1 scores (ln 3, 0): logsumexp = ln(3 + 1) = ln 4.
    ref = np.array([[0.0, 0.0], [np.log(3.0), 0.0]])
    scale, offset = ScoreCorrection("posterior", weight=1.0, temperature=0.5, unit=2.0).terms(ref)
    assert scale.tolist() == [1.0, 1.0]
    assert offset.tolist() == pytest.approx([-np.log(2.0), -np.log(4.0)])
    # weight scales the offset; T = 0.5 halves the scores' units: 0.5 * ln(e^0 + e^0) and 0.5 * ln(e^(2 ln 3) + 1) = 0.5 ln 10
    _, off2 = ScoreCorrection("posterior", weight=0.5, temperature=0.25, unit=2.0).terms(ref)
    assert off2.tolist() == pytest.approx([-0.25 * np.log(2.0), -0.25 * np.log(10.0)])
    # a tiny temperature tends to the strongest claim (stack k=1), and huge scores do not overflow
    _, off3 = ScoreCorrection("posterior", weight=1.0, temperature=1e-6).terms(ref * 1e3)
    assert off3.tolist() == pytest.approx([-np.log(2.0) * 1e-6, -np.log(3.0) * 1e3])


def test_posterior_weight_one_ranks_by_the_softmax_probability_of_the_query():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 6))            # 50 images x 6 reference classes; the query is class 4
    c = ScoreCorrection("posterior", weight=1.0, temperature=0.7, unit=0.5)
    adj = apply_terms(ref[:, [4]].T, *c.terms(ref))[0]
    e = np.exp(ref / 0.35)
    p = e[:, 4] / e.sum(axis=1)
    np.testing.assert_allclose(adj, 0.35 * np.log(p))
    assert np.argsort(-adj).tolist() == np.argsort(-p).tolist()


def test_reference_columns_and_score_unit_hand_worked():
    assert reference_columns(ScoreCorrection("stack", 1, 0.5), [0, 1], [2]).tolist() == [0, 1]
    assert reference_columns(ScoreCorrection("posterior", weight=1.0), [0, 1], [2]).tolist() == [0, 1, 2]
    # per-image std: (0, 2) -> 1, (1, 1) -> 0; the mean is 0.5. A row with -inf (unused class) is skipped.
    assert score_unit(np.array([[0.0, 2.0], [1.0, 1.0]])) == pytest.approx(0.5)
    assert score_unit(np.array([[0.0, 2.0], [1.0, -np.inf]])) == pytest.approx(1.0)
    assert score_unit(np.zeros((3, 2))) == 1.0 and score_unit(np.zeros((0, 2))) == 1.0
