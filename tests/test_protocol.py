"""The selection protocol never reads test data, picks by val top-1, refits on trainval; evaluate
matches brute-force references; calibration is chosen by a hand-checkable rule."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.metrics import gzsl, mean_average_precision, per_class_top1
from zslretrieval.models.dem import Dem
from zslretrieval.protocol import (_candidates, check_compatible, choose_calibration, evaluate, select_and_train,
                                   semantic_matrix)

DEM_HP = {"hidden": 32, "epochs": 12, "batch_size": 32, "lr": 3e-3}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(seed=0):
    return make_synthetic(n_classes=14, n_unseen=4, n_val=3, n_attributes=12, images_per_class=24, feature_dim=20,
                          hidden_dim=24, feature_noise=0.5, seed=seed)


class RowSpy(np.ndarray):
    """Feature matrix that records which rows were read."""

    def __getitem__(self, idx):
        rows = np.arange(len(self))[idx if not isinstance(idx, tuple) else idx[0]]
        self.touched.update(np.atleast_1d(rows).tolist())
        return np.asarray(self).__getitem__(idx)


def _poisoned(ds):
    """Test images and test-class semantics are NaN, and every feature read is recorded."""
    test_rows = np.concatenate([ds.splits["test_unseen"], ds.splits["test_seen"]])
    feats = ds.features.copy()
    feats[test_rows] = np.nan
    spy = feats.view(RowSpy)
    spy.touched = set()
    att = ds.attributes.copy()
    att[ds.split_classes("test_unseen")] = np.nan
    return dataclasses.replace(ds, features=spy, attributes=att), set(test_rows.tolist())


SMALL_NEURAL = {
    "ssl": {"hidden_dim": 32, "embed_dim": 16, "semantic_hidden_dim": 16, "epochs": 3, "batch_size": 64},
    "acmr": {"latent_dim": 8, "visual_hidden_dim": 32, "semantic_hidden_dim": 16, "epochs": 3, "batch_size": 64,
             "cls_samples_per_class": 10, "cls_epochs": 2},
    "dml": {"group_dim": 16, "attention_dim": 8, "embed_dim": 16, "semantic_hidden_dim": 16, "epochs": 3,
            "batch_size": 64},
}


@pytest.mark.parametrize("model,hp", [("eszsl", None), ("eszsl", {"kernel": "rbf", "landmarks": 40}),
                                      ("sae", None), ("dem", DEM_HP),
                                      *[(m, hp) for m, hp in SMALL_NEURAL.items()],
                                      ("ensemble", {"pool": ["eszsl", "dem", "ssl"], **{f"dem.{k}": v for k, v in DEM_HP.items()},
                                                    **{f"ssl.{k}": v for k, v in SMALL_NEURAL["ssl"].items()}})])
def test_selection_never_reads_test_data(model, hp):
    ds, test_rows = _poisoned(_small())
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
    ds = _small()
    res = select_and_train(ds, "eszsl", seed=3)
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
    assert card.selection is res.selection and card.train_seconds >= 0
    assert np.isfinite(res.selection["gzsl_calibration"])


def test_ensemble_members_are_chosen_by_their_own_runs_and_the_subset_on_val():
    ds = _small(2)
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
    ds = _small(1)
    res = select_and_train(ds, "dem", seed=0, hparams=DEM_HP, patience=3)
    sel = res.selection
    assert len(sel["candidates"]) == len(_candidates(Dem, DEM_HP))
    for c in sel["candidates"]:
        curve = c["curve"]
        assert c["best_epoch"] == int(np.argmax(curve)) + 1 and c["val_top1"] == max(curve)
        assert len(curve) <= min(DEM_HP["epochs"], c["best_epoch"] + 3)  # early stopping
    win = max(sel["candidates"], key=lambda c: c["val_top1"])
    assert sel["epochs"] == win["best_epoch"] and res.model.hparams.epochs == sel["epochs"]
    assert res.card.metric == "l2"


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


@pytest.fixture(scope="module")
def trained():
    ds = _small(2)
    return ds, select_and_train(ds, "eszsl", seed=0), select_and_train(ds, "dem", seed=0, hparams=DEM_HP)


def test_evaluate_matches_brute_force(trained):
    ds, *results = trained
    for res in results:
        out = evaluate(res.model, ds, ("top1", "map", "gzsl"), card=res.card, raw_scores=True)
        xu, yu = ds.subset("test_unseen")
        uc = ds.split_classes("test_unseen")
        s = torch.from_numpy(ds.attributes)
        sc = res.model.scores(torch.from_numpy(xu), s).double().numpy()      # (n, C) for all classes
        assert out["top1"] == pytest.approx(per_class_top1(uc[sc[:, uc].argmax(1)], yu, uc))
        m, _ = mean_average_precision(sc[:, uc].T, uc, yu)
        assert out["map"] == pytest.approx(m)
        xs, ys = ds.subset("test_seen")
        ss = res.model.scores(torch.from_numpy(xs), s).double().numpy()
        seen_c = ds.split_classes("trainval")
        raw = gzsl(ss, ys, sc, yu, seen_c, uc, 0.0)
        assert (out["gzsl_u"], out["gzsl_s"], out["gzsl_h"]) == pytest.approx((raw.unseen, raw.seen, raw.harmonic))
        cal = res.selection["gzsl_calibration"]
        # the offset was chosen on per-image standardised scores of the selection model (z units)
        assert res.selection["gzsl_calibration_space"] == "z"
        calib = gzsl(ss, ys, sc, yu, seen_c, uc, cal, space="z")
        assert out["gzsl_calibration"] == cal and out["gzsl_cal_h"] == pytest.approx(calib.harmonic)
        assert out["top1"] > 1.0 / len(uc)  # chance 1/4


def test_evaluate_retrieval_metrics_with_the_val_chosen_correction_match_brute_force(trained):
    from zslretrieval.correction import ScoreCorrection, apply_terms, reference_columns
    from zslretrieval.metrics.hubness import n_k_skewness, seen_share_at_k
    from zslretrieval.metrics.ranking import rank_by_scores

    ds, *results = trained
    for res in results:
        corr = ScoreCorrection.from_dict(res.selection["retrieval_correction"])
        table = res.selection["retrieval_correction_candidates"]
        assert table[0]["kind"] == "none" and any(ScoreCorrection.from_dict(r).same_choice(corr) for r in table)
        assert {r["kind"] for r in table} == {"none", "stack", "zscore", "posterior"}
        for c in (corr, ScoreCorrection("zscore"), ScoreCorrection("stack", 3, 0.5),
                  ScoreCorrection("posterior", weight=1.0, temperature=0.5, unit=0.2)):
            out = evaluate(res.model, ds, ("map", "gzsl_map", "hubness"), card=res.card, correction=c)
            xu, yu = ds.subset("test_unseen")
            xs, ys = ds.subset("test_seen")
            x, y = np.concatenate([xu, xs]), np.concatenate([yu, ys])
            uc, seen_c = ds.split_classes("test_unseen"), ds.split_classes("trainval")
            sc = res.model.scores(torch.from_numpy(x), torch.from_numpy(ds.attributes)).double().numpy()
            scale, offset = c.terms(sc[:, reference_columns(c, seen_c, uc)])
            adj = apply_terms(sc[:, uc].T, scale, offset)                   # (Q, N) corrected
            m, _ = mean_average_precision(adj, uc, y)
            assert out["gzsl_map"] == pytest.approx(m, abs=1e-9)
            nu = len(yu)
            assert out["map"] == pytest.approx(mean_average_precision(adj[:, :nu], uc, yu)[0], abs=1e-9)
            ranked = rank_by_scores(adj)
            assert out["seen_share@10"] == pytest.approx(seen_share_at_k(ranked, np.r_[np.zeros(nu, bool),
                                                                                        np.ones(len(ys), bool)], 10)[0])
            top = np.concatenate([ranked[:, :10], rank_by_scores(sc[:, seen_c].T)[:, :10]])
            assert out["n10_skew"] == pytest.approx(n_k_skewness(top, len(y), 10))
        raw = evaluate(res.model, ds, ("gzsl_map",), card=res.card, raw_scores=True)
        assert raw["gzsl_map"] == pytest.approx(mean_average_precision(sc[:, uc].T, uc, y)[0], abs=1e-9)


def test_evaluate_explicit_calibration_and_metric_names(trained):
    ds, res, _ = trained
    out = evaluate(res.model, ds, ("gzsl",), calibration=0.0)
    assert out["gzsl_cal_h"] == out["gzsl_h"] and "top1" not in out
    with pytest.raises(InvalidInputError, match="unknown metric 'acc'"):
        evaluate(res.model, ds, ("acc",))


def test_incompatible_models_are_refused(trained):
    ds, res, _ = trained
    other = make_synthetic(n_classes=14, n_unseen=4, n_val=3, n_attributes=12, images_per_class=24, feature_dim=21,
                           hidden_dim=24, seed=2)
    with pytest.raises(IncompatibleError, match="20-d image features.*21-d"):
        evaluate(res.model, other, ("top1",))
    renamed = dataclasses.replace(ds, attribute_names=[f"x{i}" for i in range(ds.semantic_dim)])
    with pytest.raises(IncompatibleError, match="vocabulary"):
        check_compatible(res.model, res.card, renamed, ["attributes"])
    leaky = dataclasses.replace(res.card, seen_classes=[ds.class_names[c] for c in ds.split_classes("test_unseen")])
    with pytest.raises(IncompatibleError, match="unseen test classes"):
        check_compatible(res.model, leaky, ds, ["attributes"])
    with pytest.raises(InvalidInputError, match="unknown semantic modality 'sent'"):
        semantic_matrix(ds, ["attributes", "sent"])


def test_splits_that_leak_are_refused():
    ds = _small()
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
    ds = _small(4)
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
    ds = _small()
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
    ds = _small(3)
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
