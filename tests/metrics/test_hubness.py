import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError
from zslretrieval.metrics.hubness import k_occurrence, n_k_skewness, seen_share_at_k, skewness


def test_seen_share_hand_worked():
    # gallery 0..5, images 3, 4, 5 are of seen classes
    is_seen = np.array([0, 0, 0, 1, 1, 1], bool)
    ranked = np.array([[3, 0, 4, 1, 2, 5],    # top-2 = {3, 0}: 1 seen of 2 -> 0.5
                       [0, 1, 3, 2, 4, 5]])   # top-2 = {0, 1}: 0 seen -> 0.0
    mean, per = seen_share_at_k(ranked, is_seen, k=2)
    assert per.tolist() == [0.5, 0.0]
    assert mean == pytest.approx(0.25)
    # top-3: 2/3 and 1/3 -> mean 0.5
    assert seen_share_at_k(ranked, is_seen, k=3)[0] == pytest.approx(0.5)


def test_seen_share_ignores_padding():
    # two real results then -1 padding: share over what was returned (1 of 2)
    assert seen_share_at_k(np.array([[1, 0, -1, -1]]), np.array([0, 1], bool), k=4)[0] == pytest.approx(0.5)


def test_k_occurrence_and_skewness_hand_worked():
    ranked = np.array([[0, 1, 2], [0, 3, 2], [0, 1, 3]])
    # top-2 sets: {0,1}, {0,3}, {0,1} -> N_2 = [3, 2, 0, 1, 0] over a gallery of 5
    n = k_occurrence(ranked, 5, k=2)
    assert n.tolist() == [3, 2, 0, 1, 0]
    # mean 1.2; deviations 1.8, 0.8, -1.2, -0.2, -1.2; m2 = (3.24+.64+1.44+.04+1.44)/5 = 1.36
    # m3 = (5.832 + 0.512 - 1.728 - 0.008 - 1.728)/5 = 0.576; skew = 0.576 / 1.36**1.5
    assert skewness(n) == pytest.approx(0.576 / 1.36 ** 1.5)
    assert n_k_skewness(ranked, 5, k=2) == pytest.approx(0.576 / 1.36 ** 1.5)


def test_skewness_of_one_hub_is_large_and_of_spread_results_small():
    hub = np.array([[0, i] for i in range(1, 9)])         # image 0 answers all 8 queries
    spread = np.array([[2 * i, 2 * i + 1] for i in range(8)])  # every image once
    assert n_k_skewness(hub, 16, k=2) > 2.0
    assert n_k_skewness(spread, 16, k=2) == 0.0


def test_skewness_edge_cases():
    assert skewness(np.array([2.0, 2.0, 2.0])) == 0.0
    assert np.isnan(skewness(np.array([])))
    assert skewness(np.array([0.0, 0.0, 3.0])) == pytest.approx(1 / np.sqrt(2))  # (2*-1 + 8)/3 / 2**1.5


def test_bad_inputs_rejected():
    with pytest.raises(InvalidInputError):
        k_occurrence(np.array([[0, 7]]), 5, k=2)
    with pytest.raises(InvalidInputError):
        seen_share_at_k(np.array([0, 1]), np.array([0, 1], bool), k=1)
    with pytest.raises(InvalidInputError):
        k_occurrence(np.array([[0, 1]]), 5, k=0)


def test_skewness_floor_hand_worked():
    from zslretrieval.metrics.hubness import n_k_skewness_floor
    # 2 queries x k=1 over 4 images: N = [1, 1, 0, 0] -> symmetric -> 0
    assert n_k_skewness_floor(2, 4, 1) == 0.0
    # 1 slot over 4 images: [1, 0, 0, 0]: mean .25, m2 = 3/16, m3 = (27/64 - 3/64)/4 = 6/64 -> 6/64 / (3/16)**1.5
    assert n_k_skewness_floor(1, 4, 1) == pytest.approx((6 / 64) / (3 / 16) ** 1.5)
    # Bernoulli formula for 100 slots in 10,000 images: (1 - 2p) / sqrt(p (1 - p))
    p = 0.01
    assert n_k_skewness_floor(10, 10_000, 10) == pytest.approx((1 - 2 * p) / np.sqrt(p * (1 - p)))
    # any real ranking is at least the floor
    rng = np.random.default_rng(0)
    ranked = np.stack([rng.permutation(50) for _ in range(5)])
    assert n_k_skewness(ranked, 50, 4) >= n_k_skewness_floor(5, 50, 4) - 1e-12
