import numpy as np
import pytest

from zslretrieval.metrics import gzsl, harmonic_mean, per_class_top1


def test_per_class_top1_is_mean_of_class_accuracies_not_sample_accuracy():
    true = np.array([0, 0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0, 0])
    # class 0: 4/4, class 1: 0/1 -> 0.5 (sample accuracy would be 0.8)
    assert per_class_top1(pred, true) == pytest.approx(0.5)


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.2, 0.6) == pytest.approx(2 * 0.2 * 0.6 / 0.8)
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_gzsl_hand_worked_with_calibration():
    # classes 0,1 seen; 2 unseen; class 3 belongs to neither and must never be predicted
    seen_classes, unseen_classes = np.array([0, 1]), np.array([2])
    scores_seen = np.array([[0.9, 0.1, 0.8, 5.0],   # true 0 -> 0
                            [0.1, 0.6, 0.5, 5.0]])  # true 1 -> 1
    scores_unseen = np.array([[0.7, 0.0, 0.65, 5.0],  # true 2 -> 0 (wrong)
                              [0.0, 0.1, 0.9, 5.0]])  # true 2 -> 2
    r = gzsl(scores_seen, np.array([0, 1]), scores_unseen, np.array([2, 2]), seen_classes, unseen_classes)
    assert (r.seen, r.unseen) == (1.0, 0.5)
    assert r.harmonic == pytest.approx(2 * 0.5 / 1.5)
    # -0.08 on seen columns: unseen row0 0.62 < 0.65 -> 2 ok; seen rows keep 0.82 > 0.8, 0.52 > 0.5
    r = gzsl(scores_seen, np.array([0, 1]), scores_unseen, np.array([2, 2]), seen_classes, unseen_classes, 0.08)
    assert (r.seen, r.unseen) == (1.0, 1.0)
    # -0.15: both seen rows now lose to class 2
    r = gzsl(scores_seen, np.array([0, 1]), scores_unseen, np.array([2, 2]), seen_classes, unseen_classes, 0.15)
    assert (r.seen, r.unseen) == (0.0, 1.0)


def test_standardize_rows_hand_example_and_z_calibration():
    from zslretrieval.metrics.classification import standardize_rows

    # row [1, 2, 3] over all three columns: mean 2, std sqrt(2/3) -> [-1.2247, 0, 1.2247]
    z = standardize_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 9.0]]), np.array([0, 1, 2]))
    np.testing.assert_allclose(z[0], [-1.224744871, 0.0, 1.224744871], rtol=1e-9)
    # a column outside the candidates is -inf; a constant row stays finite (std 0 -> divide by 1)
    z2 = standardize_rows(np.array([[4.0, 4.0, 7.0]]), np.array([0, 1]))
    assert z2[0, 2] == -np.inf and np.all(z2[0, :2] == 0.0)
    # Image [0.9, 0.2, 0.5]: z = [1.279, -1.163, -0.116] (mean 0.5333, std 0.2867). Uncalibrated
    # it is class 0 in both spaces; a z offset of 1.0 keeps class 0 (0.279 > -0.116), 1.5 flips it
    # to the unseen class 2 (-0.221 < -0.116). In raw units 0.5 flips it (0.4 < 0.5).
    seen, unseen = np.array([0, 1]), np.array([2])
    s = np.array([[0.9, 0.2, 0.5]])

    def pred_is_seen(cal, space):
        return gzsl(s, np.array([0]), s, np.array([2]), seen, unseen, cal, space=space).seen == 1.0

    assert pred_is_seen(0.0, "raw") and pred_is_seen(0.0, "z")
    assert pred_is_seen(1.0, "z") and not pred_is_seen(1.5, "z")
    assert pred_is_seen(0.35, "raw") and not pred_is_seen(0.45, "raw")
