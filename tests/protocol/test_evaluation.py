"""protocol/evaluation.py: evaluate matches brute-force references (top-1, mAP, GZSL, corrected
retrieval metrics); incompatible models and datasets are refused."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.metrics import gzsl, mean_average_precision, per_class_top1
from zslretrieval.protocol import check_compatible, evaluate, select_and_train, semantic_matrix

from .toy import DEM_HP, small_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained():
    ds = small_dataset(2)
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
