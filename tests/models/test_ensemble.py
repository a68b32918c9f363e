"""The ensemble's score is the weighted cosine sum worked out from its members; fit_grid shares the
members' fits and equals fit; bad member lists are refused naming the valid models. Unseen top-1 and
the checkpoint round trip: ``test_contract.py``."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model, get_model_class
from zslretrieval.models.ensemble import Ensemble

from .toy import TOY_HPARAMS, UNSEEN, seen_subset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEMBER_HP = {m: TOY_HPARAMS[m] for m in ("eszsl", "dem", "sae")}


def _cosines(m, x, s) -> np.ndarray:
    with torch.no_grad():
        img = torch.nn.functional.normalize(m.embed_images(x).double(), dim=1).numpy()
        cls = torch.nn.functional.normalize(m.embed_classes(s).double(), dim=1).numpy()
    return img @ cls.T


def _fitted(data, members=("eszsl", "dem")):
    x, labels, att = data
    xs, ys, ss = seen_subset(x, labels, att)
    model = create_model("ensemble", x.shape[1], [att.shape[1]],
                         {"pool": list(members), "member_hparams": {m: MEMBER_HP[m] for m in members}})
    model.fit(xs, ys, ss, seed=0)
    return model, (xs, ys, ss)


def test_scores_are_the_weighted_cosine_sum_of_the_members(data):
    x, _, att = data
    model, (xs, _, ss) = _fitted(data)
    # each member's weight: 1 / sample standard deviation of its cosines, training images x training classes
    spreads = [np.std(_cosines(m, xs, ss), ddof=1) for m in model.members]
    np.testing.assert_allclose(model.weights.numpy(), 1.0 / np.array(spreads), rtol=1e-9)
    w = model.weights.numpy()
    xq, sq = torch.from_numpy(x[:50]), torch.from_numpy(att[UNSEEN])
    want = sum(wi * _cosines(m, xq, sq) for wi, m in zip(w, model.members)) / (math.sqrt(2) * np.linalg.norm(w))
    np.testing.assert_allclose(model.scores(xq, sq).numpy(), want, atol=1e-5)
    # both sides are unit vectors, so the index (cosine) ranks exactly by this score
    with torch.no_grad():
        np.testing.assert_allclose(model.embed_images(xq).norm(dim=1).numpy(), 1.0, atol=1e-5)
        np.testing.assert_allclose(model.embed_classes(sq).norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_one_member_ranks_like_that_member(data):
    x, _, att = data
    model, _ = _fitted(data, members=("eszsl",))
    xq, sq = torch.from_numpy(x), torch.from_numpy(att[UNSEEN])
    own = model.members[0].scores(xq, sq).numpy()
    ens = model.scores(xq, sq).numpy()
    assert (own.argmax(1) == ens.argmax(1)).all() and (np.argsort(-own[:, 0]) == np.argsort(-ens[:, 0])).all()


def test_fit_grid_fits_each_member_once_and_equals_fit(data, monkeypatch):
    x, labels, att = data
    xs, ys, ss = seen_subset(x, labels, att)
    fixed = {"pool": ["eszsl", "sae"], "member_hparams": {m: MEMBER_HP[m] for m in ("eszsl", "sae")}}
    candidates = [{**c, **fixed} for c in Ensemble.search_space_for(fixed)]
    assert [c["members"] for c in candidates] == [["eszsl"], ["sae"], ["eszsl", "sae"]]
    fits = []
    for name in ("eszsl", "sae"):
        cls = get_model_class(name)
        monkeypatch.setattr(cls, "fit", (lambda orig: lambda self, *a, **k: fits.append(self.name) or orig(self, *a, **k))(cls.fit))
    grid = list(Ensemble.fit_grid(x.shape[1], [att.shape[1]], candidates, xs, ys, ss, seed=0))
    assert sorted(fits) == ["eszsl", "sae"]                 # once each, for three candidates
    xq, sq = torch.from_numpy(x[:40]), torch.from_numpy(att)
    for hp, (model, losses) in zip(candidates, grid):
        alone = create_model("ensemble", x.shape[1], [att.shape[1]], hp)
        alone.fit(xs, ys, ss, seed=0)
        assert len(losses) == len(hp["members"])
        torch.testing.assert_close(model.scores(xq, sq), alone.scores(xq, sq))


def test_bad_member_lists_are_refused():
    with pytest.raises(InvalidInputError, match="valid: .*eszsl"):
        create_model("ensemble", 10, [5], {"pool": ["eszsl", "nope"]})
    with pytest.raises(InvalidInputError, match="'ensemble'"):
        create_model("ensemble", 10, [5], {"pool": ["eszsl", "ensemble"]})
    with pytest.raises(InvalidInputError, match="not all in the pool"):
        create_model("ensemble", 10, [5], {"pool": ["eszsl"], "members": ["dem"]})
    with pytest.raises(InvalidInputError, match="each once"):
        create_model("ensemble", 10, [5], {"pool": ["eszsl", "eszsl"]})
    with pytest.raises(InvalidInputError, match="own val-chosen epochs"):
        create_model("ensemble", 10, [5], {"pool": ["eszsl"]}).fit(torch.zeros(4, 10), torch.zeros(4, dtype=torch.int64),
                                                                  torch.ones(1, 5), epochs=3)
