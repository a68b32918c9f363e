import numpy as np
import pytest

from zslretrieval.errors import TruncatedRankingError
from zslretrieval.metrics import average_precision, mean_average_precision, mean_average_precision_from_rankings


def test_ap_hand_worked():
    # relevant at ranks 1, 3, 6 of 6: AP = (1/1 + 2/3 + 3/6) / 3 = 0.722222...
    rel = np.array([1, 0, 1, 0, 0, 1], bool)
    assert average_precision(rel) == pytest.approx((1 + 2 / 3 + 0.5) / 3)


def test_ap_counts_relevant_items_missing_from_ranking():
    # 4 relevant exist, only 2 ranked (at 1 and 2): AP = (1 + 1) / 4
    assert average_precision(np.array([1, 1, 0], bool), n_relevant=4) == pytest.approx(0.5)


def test_ap_at_k_hand_worked():
    rel = np.array([0, 1, 1, 0, 1], bool)
    # @3: hits at 2, 3 -> (1/2 + 2/3) / min(3, 3 relevant) = 0.388888...
    assert average_precision(rel, k=3) == pytest.approx((0.5 + 2 / 3) / 3)
    # @2: hit at 2 -> (1/2) / min(2, 3) = 0.25
    assert average_precision(rel, k=2) == pytest.approx(0.25)


def test_map_from_scores_hand_worked():
    gallery = np.array([0, 1, 0, 1])
    # query class 0 ranks items 2,0,1,3 -> relevant at 1,2 -> AP 1
    # query class 1 ranks items 0,1,2,3 -> relevant at 2,4 -> (1/2 + 2/4)/2 = 0.5
    scores = np.array([[0.9, 0.1, 1.0, 0.0],
                       [0.9, 0.8, 0.7, 0.6]])
    m, aps = mean_average_precision(scores, np.array([0, 1]), gallery)
    assert aps.tolist() == pytest.approx([1.0, 0.5])
    assert m == pytest.approx(0.75)


def test_ties_broken_by_gallery_position():
    # all equal: order is 0,1,2 -> class 1 at rank 2 -> AP 0.5
    m, _ = mean_average_precision(np.zeros((1, 3)), np.array([1]), np.array([0, 1, 0]))
    assert m == pytest.approx(0.5)


def test_full_map_refuses_truncated_ranking():
    ranked = np.array([[0, 1, -1, -1]])
    with pytest.raises(TruncatedRankingError):
        mean_average_precision_from_rankings(ranked, np.array([0]), np.array([0, 1, 0, 1]))
    # mAP@2 only needs two
    m, _ = mean_average_precision_from_rankings(ranked, np.array([0]), np.array([0, 1, 0, 1]), k=2)
    assert m == pytest.approx(0.5)  # hit at rank 1 -> 1/1 / min(2, 2)
