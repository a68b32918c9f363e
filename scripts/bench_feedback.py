"""One round of relevance feedback on zero-shot queries: mAP before and after, through the query engine.

For each class of a split, the zero-shot query (``class:`` -- its attribute vector through the
model) ranks the gallery; the top ``--marks`` (10) are marked right or wrong from their labels, as
a user would; the refined query (``query.feedback``, Rocchio in the index's space) ranks it again.
Both rankings are scored **without the marked images** (removed from both), so the gain is what
the user gets on the rest of the collection, not the marked images moving up.

Zero-shot honesty: the Rocchio weights and the relevance scale are chosen on the **val** classes:

1. ``select_and_train`` chooses the model's hyper-parameters on val and refits on trainval (model B);
2. model A = the same hyper-parameters fitted on the ``train`` classes only; its gallery is the
   ``val`` images, its queries the val classes. On it: the (beta, gamma) grid (alpha = 1) is
   scored and the best mean mAP after one round is chosen; the logistic of the relevance scale
   (``query.calibration``) is fitted on the zero-shot z-scores of the val queries;
3. model B, gallery ``test_unseen``, queries the unseen (test) classes: mAP before / after with the
   chosen weights -- the reported figure. The baseline (zero-shot mAP) is measured in the same run.

    ZSLR_DATA=/work/data python scripts/bench_feedback.py --dataset cub --model eszsl --seed 0
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from zslretrieval.correction import ScoreCorrection
from zslretrieval.data import load_dataset
from zslretrieval.data.base import semantic_matrix
from zslretrieval.ingest import index_features
from zslretrieval.models import get_model_class
from zslretrieval.models.checkpoint import save_checkpoint
from zslretrieval.protocol import select_and_train
from zslretrieval.query import QueryEngine, QuerySpec
from zslretrieval.query.benchmark_map import class_semantics_for, gallery_paths
from zslretrieval.query.calibration import ScoreMoments, fit_logistic, zscores
from zslretrieval.query.feedback import Feedback, RocchioWeights
from zslretrieval.query.gallery import gallery_of
from zslretrieval.query.refined import SearchOptions

BETAS = (0.25, 0.5, 1.0, 2.0, 4.0)
GAMMAS = (0.0, 0.25, 0.5, 1.0)


def average_precision(ranked_labels: list, target) -> float:
    rel = np.array([lab == target for lab in ranked_labels], bool)
    if not rel.any():
        return float("nan")
    hits = np.cumsum(rel)
    return float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())


def open_gallery(tmp: Path, name: str, dataset, model, card, split: str):
    rows = np.asarray(dataset.split_indices(split))
    feats = np.asarray(dataset.features[rows], np.float32)
    labels = [dataset.class_names[int(c)] for c in dataset.labels[rows]]
    ckpt = save_checkpoint(model, card, tmp / f"{name}.pt", torch.from_numpy(class_semantics_for(dataset, card)))
    return index_features(name, feats, gallery_paths(dataset, rows, split), labels, model_checkpoint=ckpt,
                          root=tmp / "indexes", backbone=f"dataset:{dataset.name}",
                          source=f"dataset:{dataset.name}/{split}")


def one_round(engine: QueryEngine, classes: list[str], marks: int, grid: list[RocchioWeights]) -> dict:
    """Zero-shot + one feedback round per class: AP before and for each weight setting, marked images excluded."""
    label = {r.id: r.label for r in engine.index.all_records()}
    before, after, n_right = [], {w: [] for w in grid}, []
    for c in classes:
        spec = [QuerySpec("class", c, "bench")]
        ranked = [h.id for h in engine.run(spec, None)[0].hits]
        top = ranked[:marks]
        pos = tuple(i for i in top if label[i] == c)
        neg = tuple(i for i in top if label[i] != c)
        n_right.append(len(pos))
        marked = set(top)
        before.append(average_precision([label[i] for i in ranked if i not in marked], c))
        for w in grid:
            opts = SearchOptions(feedback=Feedback(pos, neg, w))
            again = [h.id for h in engine.run(spec, None, options=opts)[0].hits]
            after[w].append(average_precision([label[i] for i in again if i not in marked], c))
    return {"before": np.array(before), "after": {w: np.array(a) for w, a in after.items()},
            "right_marked": np.array(n_right)}


def zero_shot_z(engine: QueryEngine, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """z-scores (over the engine's gallery) of every image for each class's zero-shot query, and
    whether the image is of that class: (z, relevant), pooled over the queries."""
    label = {r.id: r.label for r in engine.index.all_records()}
    res = engine.run([QuerySpec("class", c, "bench") for c in classes], None)
    g = gallery_of(engine.index)
    prepared, desc = engine.prepare_all([r.query for r in res])
    xq = engine.embed(prepared, desc)
    corrected = engine.terms is not None and all(engine.corrects(p) for p in prepared)
    scale, offset = engine.terms.lookup(g.ids) if corrected else (None, None)
    mom = ScoreMoments(g.vectors, g.metric, scale, offset)
    mu, sd = mom.mean_std(xq)
    zs, ys = [], []
    for q, (r, c) in enumerate(zip(res, classes)):
        s = np.array([[h.score for h in r.hits]])
        zs.append(zscores(s, mu[q:q + 1], sd[q:q + 1])[0])
        ys.append(np.array([label[h.id] == c for h in r.hits]))
    return np.concatenate(zs), np.concatenate(ys)


def reliability(p: np.ndarray, y: np.ndarray, edges=(0.0, 0.05, 0.2, 0.4, 0.6, 0.8, 1.0001)) -> list[str]:
    """Rows: a relevance band, how many results fall in it, their mean relevance and the share truly relevant."""
    rows = [f"{'relevance':>13} {'results':>8} {'mean rel':>9} {'relevant':>9}"]
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & (p < hi)
        if m.any():
            rows.append(f"{lo:5.2f} .. {min(hi, 1):4.2f} {int(m.sum()):8d} {p[m].mean():9.3f} {y[m].mean():9.3f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="cub")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--model", default="eszsl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--marks", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(1)
    d = load_dataset(args.dataset, args.data_root, seed=args.seed)
    print(f"dataset {d.name}: {d.features.shape} features ({d.meta.get('feature_source', d.meta.get('source'))}), "
          f"split {d.meta.get('val_split', 'proposed')}", flush=True)
    trained = select_and_train(d, args.model, seed=args.seed)
    card_b, model_b = trained.card, trained.model
    sel = trained.selection
    print(f"model {args.model}: chosen {sel['chosen']} on val; correction {sel['retrieval_correction']} "
          f"({time.time() - t0:.0f}s)", flush=True)

    # model A: the chosen values fitted on the train classes only (val classes unseen to it)
    cls = get_model_class(args.model)
    sem, dims = semantic_matrix(d, card_b.semantic_modalities or ["attributes"])
    tr_idx, tr_c = d.split_indices("train"), d.split_classes("train")
    val_c = d.split_classes("val")
    local = {int(c): i for i, c in enumerate(tr_c)}
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model_a = cls(d.feature_dim, dims, dict(sel["chosen"]))
    model_a.fit(torch.from_numpy(np.asarray(d.features[tr_idx], np.float32)),
                torch.as_tensor([local[int(c)] for c in d.labels[tr_idx]]), torch.from_numpy(sem[tr_c]),
                seed=args.seed, epochs=sel.get("epochs"))
    model_a.eval()
    corr = ScoreCorrection.from_dict(sel["retrieval_correction"])
    if corr.kind == "posterior" and sel.get("retrieval_correction_unit", {}).get("val"):
        corr = dataclasses.replace(corr, unit=sel["retrieval_correction_unit"]["val"])   # the selection model's unit
    names = d.class_names
    card_a = dataclasses.replace(card_b, split="train", seen_classes=[names[c] for c in tr_c],
                                 unseen_classes=[names[c] for c in val_c],
                                 selection={**sel, "retrieval_correction": corr.to_dict()})
    grid = [RocchioWeights(1.0, b, g) for b in BETAS for g in GAMMAS]
    with tempfile.TemporaryDirectory(prefix="zslr-bench-feedback-") as tmp:
        tmp = Path(tmp)
        idx_a = open_gallery(tmp, "val", d, model_a, card_a, "val")
        eng_a = QueryEngine(idx_a)
        val_names = [names[c] for c in val_c]
        va = one_round(eng_a, val_names, args.marks, grid)
        z_val, y_val = zero_shot_z(eng_a, val_names)
        logistic, prior = fit_logistic(z_val, y_val), float(y_val.mean())
        idx_a.close()
        print(f"\nVAL ({len(val_names)} val classes, gallery {len(d.split_indices('val'))} val images, model A on "
              f"train classes): zero-shot mAP without the top {args.marks} = {np.nanmean(va['before']):.4f}; "
              f"right among the top {args.marks}: mean {va['right_marked'].mean():.2f}")
        print(f"{'alpha':>5} {'beta':>5} {'gamma':>5}  val mAP after")
        for w in grid:
            print(f"{w.alpha:5g} {w.beta:5g} {w.gamma:5g}  {np.nanmean(va['after'][w]):.4f}")
        best = max(grid, key=lambda w: (np.nanmean(va["after"][w]), -w.beta, -w.gamma))
        print(f"chosen on val: {best} (val mAP {np.nanmean(va['before']):.4f} -> {np.nanmean(va['after'][best]):.4f})")
        print(f"relevance logistic on val zero-shot z: a={logistic.a:.4f} b={logistic.b:.4f} "
              f"(share relevant {prior:.4f})", flush=True)

        idx_b = open_gallery(tmp, "test", d, model_b, card_b, "test_unseen")
        eng_b = QueryEngine(idx_b)
        test_names = [names[c] for c in d.split_classes("test_unseen")]
        te = one_round(eng_b, test_names, args.marks, [best])
        z_te, y_te = zero_shot_z(eng_b, test_names)
        idx_b.close()
    before, after = te["before"], te["after"][best]
    print(f"\nTEST ({len(test_names)} unseen classes, gallery {len(d.split_indices('test_unseen'))} test_unseen images, "
          f"model B refit on trainval; weights from val):")
    print(f"{'':24} {'mAP':>7}")
    print(f"{'zero-shot (baseline)':24} {np.nanmean(before):7.4f}")
    print(f"{'after one round':24} {np.nanmean(after):7.4f}")
    print(f"{'gain (absolute)':24} {np.nanmean(after) - np.nanmean(before):+7.4f}")
    print(f"right among the top {args.marks}: mean {te['right_marked'].mean():.2f}; classes improved "
          f"{int((after > before).sum())}/{len(before)}; worse {int((after < before).sum())}  ({time.time() - t0:.0f}s)")
    p_te = logistic(z_te)
    print(f"\nRELEVANCE on TEST (zero-shot queries of the {len(test_names)} unseen classes x every test_unseen image; "
          "logistic fitted on val): is a relevance of p right about p of the time, whatever the query?")
    print("\n".join(reliability(p_te, y_te)))
    per_q = p_te.reshape(len(test_names), -1) >= 0.5
    yq = y_te.reshape(len(test_names), -1)
    kept = per_q.sum(1)
    print(f"relevance >= 0.5: {int(kept.sum())} results over {int((kept > 0).sum())}/{len(test_names)} queries, "
          f"precision {yq[per_q].mean():.3f}, recall {yq[per_q].sum() / yq.sum():.3f}")
    out = {"dataset": d.name, "model": args.model, "seed": args.seed, "marks": args.marks,
           "features": d.meta.get("feature_source"), "chosen_hparams": sel["chosen"],
           "weights": dataclasses.asdict(best), "logistic": {"a": logistic.a, "b": logistic.b, "val_share": prior},
           "val": {"map_before": float(np.nanmean(va["before"])), "map_after": float(np.nanmean(va["after"][best]))},
           "test": {"map_before": float(np.nanmean(before)), "map_after": float(np.nanmean(after)),
                    "per_class": {c: [float(b), float(a)] for c, b, a in zip(test_names, before, after)}}}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
