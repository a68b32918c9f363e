"""The maps (text/general/maps.py) and held-out scoring (heldout.py), hand-worked."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.text import general as gen


def test_heldout_retrieval_hand_worked():
    from zslretrieval.correction import ScoreCorrection
    gal = np.eye(3)
    pred = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])   # query 1 lands on item 0 (a hub)
    r = gen.heldout_retrieval(pred, gal)
    assert r["top1"] == pytest.approx(2 / 3) and r["mrr"] == pytest.approx((1 + 0.5 + 1) / 3)
    # reference queries that all favour item 0 make it a hub; z-scores over them demote it
    ref = np.array([[1.0, 0.2, 0.0], [1.0, 0.0, 0.2], [1.0, 0.1, 0.1]])
    z = gen.heldout_retrieval(pred, gal, ref, ScoreCorrection("zscore"))
    scale, offset = ScoreCorrection("zscore").terms(gal @ gen._unit(ref).T)
    s = gen._unit(pred) @ gal.T * scale + offset
    assert z["top1"] == pytest.approx(np.mean(np.argmax(s, 1) == np.arange(3)))


def test_neighbour_map_hand_worked():
    known_text = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    protos = np.eye(3)
    out = gen.neighbour_map(np.array([[1.0, 0.0]]), known_text, protos, top=2, tau=10.0)
    w = np.exp(10 * np.array([1.0, 0.6]))
    np.testing.assert_allclose(out[0], gen._unit(np.array([w[0], w[1], 0.0])), atol=1e-6)
    np.testing.assert_allclose(gen.neighbour_map(np.array([[1.0, 0.0]]), known_text, protos, 1, 10.0)[0], [1, 0, 0])
    # a known name's own (reference) query may not use itself
    own = gen.neighbour_map(known_text, known_text, protos, top=1, tau=10.0, exclude_self=True)
    np.testing.assert_allclose(own, np.eye(3)[[1, 2, 1]], atol=1e-6)
