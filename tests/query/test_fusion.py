"""Fusing the general model's text score into the ranking of an index that has a model of its own."""
from __future__ import annotations

import numpy as np
import pytest

from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.query import QueryEngine, QuerySpec
from zslretrieval.query.engine import check_general_weight

from .fakes import CLASSES, make_index
from .test_textual import DIM, FakeGeneral


def fused_engine(n: int = 30):
    idx = make_index(n=n, feature_dim=DIM, backbone="efficientnet-lite0")
    return idx, QueryEngine(idx, general=FakeGeneral())


def z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean()) / s.std()


@pytest.mark.parametrize("w", [0.3, 1.0])
def test_fused_ranking_equals_the_hand_computation(w):
    idx, eng = fused_engine()
    name = CLASSES[2]
    res = eng.run([QuerySpec("class", name)], k=None, general_weight=w)[0]
    alone = eng.run([QuerySpec("class", name)], k=None)[0]
    model = np.empty(len(idx.ids))
    for h in alone.hits:                       # the model's own full ranking, by image id
        model[h.id - 100] = h.score
    x = idx.features / np.linalg.norm(idx.features, axis=1, keepdims=True)
    general = x.astype(np.float64) @ FakeGeneral.vec("polar bear").astype(np.float64)   # the name as words
    want = (1 - w) * z(model) + w * z(general)
    order = np.argsort(-want, kind="stable")
    assert [h.id for h in res.hits] == list(idx.ids[order])
    np.testing.assert_allclose([h.score for h in res.hits], want[order], rtol=1e-5, atol=1e-6)
    assert res.resolved["fusion"]["general_weight"] == w
    assert name == "polar+bear" and res.resolved["fusion"]["general"]["texts"] == ["a polar bear"]
    top3 = eng.run([QuerySpec("class", name)], k=3, general_weight=w)[0]
    assert [h.id for h in top3.hits] == [h.id for h in res.hits][:3]


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), float("inf"), "0.5", True])
def test_general_weight_is_validated(bad):
    with pytest.raises(InvalidInputError, match="general weight"):
        check_general_weight(bad)
    _, eng = fused_engine()
    with pytest.raises(InvalidInputError, match=r"\(0, 1\]"):
        eng.run([QuerySpec("class", CLASSES[0])], general_weight=bad)


def test_fusion_refused_without_raw_imagenet_features():
    idx = make_index(n=10, feature_dim=DIM)          # precomputed features: no backbone
    with pytest.raises(IncompatibleError, match="raw features from an ImageNet backbone"):
        QueryEngine(idx, general=FakeGeneral()).run([QuerySpec("class", CLASSES[0])], general_weight=0.5)
    raw = make_index(n=10, feature_dim=DIM, with_model=False, backbone="efficientnet-lite0")
    with pytest.raises(IncompatibleError, match="no model of its own"):
        QueryEngine(raw, general=FakeGeneral()).run([QuerySpec("text", "zebra")], general_weight=0.5)


def test_cli_general_weight_errors(tmp_path):
    from click.testing import CliRunner
    from zslretrieval.cli import cli
    r = CliRunner().invoke(cli, ["query", "--index", str(tmp_path / "none"), "--class", "zebra", "--general-weight", "2"])
    assert r.exit_code == 2 and "general weight 2.0" in r.output
