"""protocol/selection.py: the selection protocol never reads test data, picks by val top-1, refits
on trainval; calibration is chosen by a hand-checkable rule."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from zslretrieval.errors import InvalidInputError
from zslretrieval.metrics import gzsl
from zslretrieval.models.dem import Dem
from zslretrieval.protocol import _candidates, choose_calibration, select_and_train

from .toy import DEM_HP, SMALL_NEURAL, poisoned, small_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("model,hp", [("eszsl", None), ("eszsl", {"kernel": "rbf", "landmarks": 40}),
                                      ("sae", None), ("dem", DEM_HP),
                                      *[(m, hp) for m, hp in SMALL_NEURAL.items()],
                                      ("ensemble", {"pool": ["eszsl", "dem", "ssl"], **{f"dem.{k}": v for k, v in DEM_HP.items()},
                                                    **{f"ssl.{k}": v for k, v in SMALL_NEURAL["ssl"].items()}})])
def test_selection_never_reads_test_data(model, hp):
    ds, test_rows = poisoned(small_dataset())
    res = select_and_train(ds, model, seed=0, hparams=hp)
    assert ds.features.touched, "the spy saw no reads"
    assert not (ds.features.touched & test_rows)
    assert all(np.isfinite(c["val_top1"]) for c in res.selection["candidates"])
    assert all(torch.isfinite(v).all() for v in res.model.state_dict().values())
    val_names = {ds.class_names[c] for c in ds.split_classes("val")}
    assert set(res.selection["val_classes"]) == val_names
    unseen = set(res.card.unseen_classes)
    assert not unseen & set(res.selection["train_classes"]) and not unseen & val_names


def test_eszsl_selection_picks_best_val_candidate_and_fills_card():
    ds = small_dataset()
    t0 = time.perf_counter()
    res = select_and_train(ds, "eszsl", seed=3)
    wall = time.perf_counter() - t0
    table = res.selection["candidates"]
    assert len(table) == len(res.model.search_space())
    best = max(range(len(table)), key=lambda i: (table[i]["val_top1"], -i))
    assert res.selection["chosen"] == table[best]["hparams"]
    assert res.selection["val_top1"] == table[best]["val_top1"]
    assert res.model.hparams.to_dict() == {**res.model.hparams.to_dict(), **table[best]["hparams"]}
    card = res.card
    assert card.model == "eszsl" and card.seed == 3 and card.dataset == "synthetic" and card.split == "trainval"
    assert card.feature_dim == 20 and card.semantic_dims == [12] and card.metric == "ip"
    assert card.vocabulary == ds.attribute_names and card.class_names == ds.class_names
    assert card.seen_classes == [ds.class_names[c] for c in ds.split_classes("trainval")]
    assert card.unseen_classes == [ds.class_names[c] for c in ds.split_classes("test_unseen")]
    assert card.selection is res.selection
    # the refit's time (rounded to ms) and the selection's both lie inside the call's wall time
    assert isinstance(card.train_seconds, float) and isinstance(res.selection["selection_seconds"], float)
    assert 0 < res.selection["selection_seconds"] and card.train_seconds + res.selection["selection_seconds"] <= wall + 1e-3
    assert np.isfinite(res.selection["gzsl_calibration"])


def test_ensemble_members_are_chosen_by_their_own_runs_and_the_subset_on_val():
    ds = small_dataset(2)
    hp = {"pool": ["eszsl", "dem"], **{f"dem.{k}": v for k, v in DEM_HP.items()}}
    res = select_and_train(ds, "ensemble", seed=1, hparams=hp)
    sel = res.selection
    # each member's hyper-parameters and epochs: what its own protocol run chooses
    for name, own in (("eszsl", None), ("dem", DEM_HP)):
        alone = select_and_train(ds, name, seed=1, hparams=own)
        assert sel["chosen"]["member_hparams"][name] == alone.card.hparams
    # the subset: best val top-1 among every non-empty subset of the pool, fewer members on ties
    table = sel["candidates"]
    assert [c["hparams"]["members"] for c in table] == [["eszsl"], ["dem"], ["eszsl", "dem"]]
    best = max(range(len(table)), key=lambda i: (table[i]["val_top1"], -i))
    assert sel["chosen"]["members"] == table[best]["hparams"]["members"] == res.card.hparams["members"]
    assert [m.name for m in res.model.members] == table[best]["hparams"]["members"]
    assert res.card.model == "ensemble" and res.card.metric == "ip"
    with pytest.raises(InvalidInputError, match="unknown hyper-parameter"):
        select_and_train(ds, "ensemble", hparams={"pool": ["eszsl"], "epochs": 3})
    # members fixed by the user: only they run their own selection, and there is one candidate
    logs = []
    fixed = select_and_train(ds, "ensemble", seed=1, hparams={"members": ["eszsl"]}, log=logs.append)
    assert [m for m in logs if "its own selection" in m] == ["[ensemble] member eszsl: its own selection on val"]
    assert len(fixed.selection["candidates"]) == 1 and [m.name for m in fixed.model.members] == ["eszsl"]


def test_iterative_model_keeps_best_epoch_and_refits_with_it():
    ds = small_dataset(1)
    t0 = time.perf_counter()
    res = select_and_train(ds, "dem", seed=0, hparams=DEM_HP, patience=3)
    wall = time.perf_counter() - t0
    sel = res.selection
    assert len(sel["candidates"]) == len(_candidates(Dem, DEM_HP))
    for c in sel["candidates"]:
        curve = c["curve"]
        assert c["best_epoch"] == int(np.argmax(curve)) + 1 and c["val_top1"] == max(curve)
        assert len(curve) <= min(DEM_HP["epochs"], c["best_epoch"] + 3)  # early stopping
    win = max(sel["candidates"], key=lambda c: c["val_top1"])
    assert sel["epochs"] == win["best_epoch"] and res.model.hparams.epochs == sel["epochs"]
    assert res.card.metric == "l2"
    # a refit of several epochs takes measurable time: 0 would mean the card never recorded it
    assert 0 < res.card.train_seconds <= wall


def test_user_hparams_override_the_grid():
    cands = _candidates(Dem, {"hidden": 8})
    assert cands and all(c["hidden"] == 8 for c in cands)
    assert len(cands) == len({tuple(sorted(c.items())) for c in cands})
    with pytest.raises(InvalidInputError, match="unknown hyper-parameter"):
        _candidates(Dem, {"hiden": 8})


def test_calibration_hand_example():
    # classes 0, 1 seen; 2 unseen. Seen images score their class 1.0, class 2 at 0.8 (margin 0.2);
    # unseen images score class 0 at 0.9 and their own class 2 at 0.6 (gap 0.3). Uncalibrated: U = 0.
    # Any offset in (0.3, 0.2 + ...) is impossible: an offset g flips unseen images when g > 0.3 but
    # flips seen images away when g > 0.2 -> no g gets both; H is maximised by g in (0.2, 0.3)? No:
    # g in (0.3, inf) gives U = 1, S = 0 (H = 0); g < 0.2 gives S = 1, U = 0. So make seen margin larger:
    seen = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])        # margin 0.5 over the unseen class
    unseen = np.array([[0.9, 0.0, 0.6], [0.0, 0.9, 0.6]])      # gap 0.3 against the unseen class
    cal, raw, calibrated = choose_calibration(seen, np.array([0, 1]), unseen, np.array([2, 2]), np.array([0, 1]),
                                              np.array([2]))
    assert raw == {"u": 0.0, "s": 1.0, "h": 0.0}
    assert 0.3 < cal < 0.5 and calibrated == {"u": 1.0, "s": 1.0, "h": 1.0}
    ref = gzsl(seen, np.array([0, 1]), unseen, np.array([2, 2]), np.array([0, 1]), np.array([2]), cal)
    assert ref.harmonic == 1.0


def test_splits_that_leak_are_refused():
    ds = small_dataset()
    bad = dict(ds.splits)
    bad["val"] = np.concatenate([ds.splits["val"], ds.splits["train"][:3]])
    with pytest.raises(InvalidInputError, match="both train and val"):
        select_and_train(dataclasses.replace(ds, splits=bad), "eszsl")
    bad = dict(ds.splits)
    bad["train"] = np.concatenate([ds.splits["train"], ds.splits["test_unseen"][:2]])
    with pytest.raises(InvalidInputError, match="unseen test classes"):
        select_and_train(dataclasses.replace(ds, splits=bad), "eszsl")


def test_static_image_embedding_cache_changes_nothing(monkeypatch):
    # DEM declares its image side fixed during fit, so val images are embedded once per candidate;
    # the selection must be identical to re-embedding them every epoch.
    ds = small_dataset(4)
    fast = select_and_train(ds, "dem", seed=0, hparams=DEM_HP)
    monkeypatch.setattr(Dem, "static_image_embedding", False)
    slow = select_and_train(ds, "dem", seed=0, hparams=DEM_HP)
    for a, b in zip(fast.selection["candidates"], slow.selection["candidates"]):
        assert a["curve"] == pytest.approx(b["curve"])
    assert fast.selection["gzsl_calibration"] == pytest.approx(slow.selection["gzsl_calibration"])


def test_dataset_feature_groups_reach_dml_on_every_path():
    """A dataset whose features are several groups (awa1-lampert's five descriptors, a multi-stage
    backbone) gets DML attention over those groups from the protocol itself -- zslr train/eval and
    the benchmark all go through select_and_train -- while a user value still wins."""
    ds = small_dataset()
    ds = dataclasses.replace(ds, meta={**ds.meta, "feature_groups": {"a": 12, "b": 8}})
    res = select_and_train(ds, "dml", seed=0, hparams=SMALL_NEURAL["dml"])
    assert res.model.hparams.feature_groups == [12, 8] and len(res.model.group_proj) == 2
    assert all(c["hparams"]["feature_groups"] == [12, 8] for c in res.selection["candidates"])
    with torch.no_grad():
        _, att = res.model.group_attention(res.model.reduce(torch.from_numpy(ds.features[:5])))
    assert att.shape == (5, 2) and not torch.allclose(att, torch.ones_like(att))
    # models without feature groups are untouched; a user-given value overrides the dataset's
    assert _candidates(Dem, None) == _candidates(Dem, None, {})
    res1 = select_and_train(ds, "dml", seed=0, hparams={**SMALL_NEURAL["dml"], "feature_groups": [20]})
    assert res1.model.hparams.feature_groups == [20]


def test_posterior_correction_temperature_unit_is_remeasured_on_the_refit_model(monkeypatch):
    """The relative temperature is chosen on the selection model; the card carries the refit model's
    score spread (its training images against the seen and unseen classes) as the unit."""
    from zslretrieval.correction import ScoreCorrection, score_unit
    from zslretrieval.protocol import selection

    chosen = ScoreCorrection("posterior", weight=0.75, temperature=0.5, unit=123.0)
    monkeypatch.setattr(selection, "choose_correction", lambda *a, **k: (chosen, [ScoreCorrection().to_dict(),
                                                                                  chosen.to_dict()]))
    ds = small_dataset(3)
    res = select_and_train(ds, "eszsl", seed=0)
    sel = res.selection
    assert sel["retrieval_correction_unit"]["val"] == 123.0
    got = ScoreCorrection.from_dict(sel["retrieval_correction"])
    assert got.same_choice(chosen) and got.unit != 123.0
    tv = ds.split_indices("trainval")
    sample = tv[np.linspace(0, len(tv) - 1, min(len(tv), selection.UNIT_SAMPLE)).astype(np.int64)]
    ref = np.concatenate([ds.split_classes("trainval"), ds.split_classes("test_unseen")])
    sc = res.model.scores(torch.from_numpy(ds.features[sample]), torch.from_numpy(ds.attributes[ref])).double().numpy()
    assert got.unit == pytest.approx(score_unit(sc)) and sel["retrieval_correction_unit"]["refit"] == got.unit
