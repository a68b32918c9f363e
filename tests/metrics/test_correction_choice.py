import numpy as np
import pytest

from zslretrieval.correction import ScoreCorrection, candidates, reference_columns, score_unit
from zslretrieval.metrics.correction_choice import choose_correction, evaluate_mixed


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
    assert chosen.active and table[0]["kind"] == "none" and len(table) == len(candidates(1.0)) == len(candidates()) + 20
    # no distractors in the way: nothing to gain, so the correction stays off
    chosen2, _ = choose_correction(seen[:, :] * 0 - 1, ys, unseen, yu, [0, 1], [2, 3])
    assert chosen2 == ScoreCorrection()


def test_posterior_puts_images_a_seen_class_explains_below_the_new_class_images():
    seen, ys, unseen, yu = _toy_val()
    both = np.concatenate([unseen, seen])
    labels = np.r_[yu, ys]
    is_seen = np.r_[np.zeros(4, bool), np.ones(2, bool)]
    c = ScoreCorrection("posterior", weight=1.0, temperature=0.1, unit=0.1)   # T = 0.01: ~ max over all classes
    fixed = evaluate_mixed(both[:, [2, 3]], both[:, reference_columns(c, [0, 1], [2, 3])], labels,
                           np.array([2, 3]), is_seen, c, k=2)
    # seen image 4: 0.7 - ~0.95 = -0.25; val image 0 for query 2: 0.6 - 0.6 = 0 -> the val images lead
    assert fixed["map"] == pytest.approx(1.0) and fixed["seen_share@2"] == 0.0
    chosen, table = choose_correction(seen, ys, unseen, yu, [0, 1], [2, 3])
    post = [r for r in table if r["kind"] == "posterior"]
    assert len(post) == 20 and all(r["unit"] == pytest.approx(score_unit(both)) for r in post)
