import numpy as np
import pytest

from zslretrieval.correction import ScoreCorrection, apply_terms, candidates, choose_correction, evaluate_mixed
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
    for bad in (dict(kind="softmax"), dict(kind="stack", k=0), dict(kind="stack", weight=-1.0),
                dict(kind="stack", weight=float("nan"))):
        with pytest.raises(InvalidInputError, match="correction"):
            ScoreCorrection(**bad)
    assert candidates()[0] == ScoreCorrection()


def _toy_val():
    """Two val classes (2, 3) with 2 images each; two held-out seen images (classes 0, 1) that score
    highest for every val query but are claimed by their own seen class."""
    # columns: classes 0, 1 (seen), 2, 3 (val)
    unseen = np.array([[0.1, 0.0, 0.6, 0.1],
                       [0.0, 0.1, 0.5, 0.2],
                       [0.1, 0.1, 0.1, 0.6],
                       [0.0, 0.0, 0.2, 0.5]])
    seen = np.array([[0.95, 0.1, 0.7, 0.7],
                     [0.1, 0.95, 0.7, 0.7]])
    return seen, np.array([0, 1]), unseen, np.array([2, 2, 3, 3])


def test_evaluate_mixed_hand_worked():
    seen, ys, unseen, yu = _toy_val()
    both = np.concatenate([unseen, seen])
    labels = np.r_[yu, ys]
    is_seen = np.r_[np.zeros(4, bool), np.ones(2, bool)]
    raw = evaluate_mixed(both[:, [2, 3]], both[:, [0, 1]], labels, np.array([2, 3]), is_seen, ScoreCorrection(), k=2)
    # query 2 ranks: seen4 .7, seen5 .7, img0 .6, img1 .5 -> hits at 3, 4: (1/3 + 2/4)/2 = 5/12; same for query 3
    assert raw["map"] == pytest.approx(5 / 12)
    assert raw["seen_share@2"] == 1.0
    # top-2 of both queries = {4, 5}: N_2 = [0,0,0,0,2,2] -> skewness of that vector
    n = np.array([0, 0, 0, 0, 2, 2.0])
    d = n - n.mean()
    assert raw["n2_skew"] == pytest.approx((d ** 3).mean() / (d ** 2).mean() ** 1.5)
    fixed = evaluate_mixed(both[:, [2, 3]], both[:, [0, 1]], labels, np.array([2, 3]), is_seen,
                           ScoreCorrection("stack", 1, 1.0), k=2)
    assert fixed["map"] == pytest.approx(1.0) and fixed["seen_share@2"] == 0.0


def test_choose_correction_prefers_what_helps_and_keeps_none_otherwise():
    seen, ys, unseen, yu = _toy_val()
    chosen, table = choose_correction(seen, ys, unseen, yu, [0, 1], [2, 3])
    assert chosen.active and table[0]["kind"] == "none" and len(table) == len(candidates())
    # no distractors in the way: nothing to gain, so the correction stays off
    chosen2, _ = choose_correction(seen[:, :] * 0 - 1, ys, unseen, yu, [0, 1], [2, 3])
    assert chosen2 == ScoreCorrection()
