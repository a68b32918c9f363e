#!/usr/bin/env python
"""How far could a score ensemble of the trained models go on a benchmark's unseen test classes?

A diagnostic for issue #15, not a model and not a choice: each model is trained exactly as
``zslr train`` / ``benchmark_models.py`` train it (``protocol.select_and_train``: grid and epochs
chosen on the val classes, refit on trainval); then every subset of the models is combined by an
equal-weight sum of per-image z-scored class scores over the unseen classes, and its top-1 is
printed. The subsets are scored on the **test** classes, so the best row is an optimistic bound
for this combiner (a deployed ensemble would have to pick its members on val), and the last line
is a looser one: the share of test images some member classifies right.

    python scripts/probe_ensemble.py --data-root ../shared/data --seed 0
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zslretrieval.data import load_dataset  # noqa: E402
from zslretrieval.data.base import semantic_matrix  # noqa: E402
from zslretrieval.metrics import per_class_top1  # noqa: E402
from zslretrieval.protocol.selection import select_and_train  # noqa: E402


@torch.no_grad()
def unseen_scores(model, x: np.ndarray, sem: np.ndarray, batch: int = 8192) -> np.ndarray:
    """(n, C) scores of test images x (n, D) against the unseen classes' semantics sem (C, A)."""
    if hasattr(model, "eval"):
        model.eval()
    s = torch.from_numpy(np.ascontiguousarray(sem, np.float32))
    return np.concatenate([model.scores(torch.from_numpy(np.ascontiguousarray(x[i:i + batch], np.float32)), s)
                           .double().numpy() for i in range(0, len(x), batch)])


def top1(scores: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> float:
    """Per-class top-1 of (n, C) scores over ``classes`` (the project's metric)."""
    return per_class_top1(classes[scores.argmax(1)], labels, classes)


def zscore_rows(s: np.ndarray) -> np.ndarray:
    """Each image's class scores standardised, so models on different scales add up evenly."""
    return (s - s.mean(1, keepdims=True)) / np.maximum(s.std(1, keepdims=True), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="awa1-lampert")
    ap.add_argument("--models", nargs="+", default=["eszsl", "dem", "ssl", "acmr", "dml"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, root=args.data_root, seed=args.seed)
    te = ds.split_indices("test_unseen")
    labels, unseen = ds.labels[te], np.unique(ds.labels[te])
    sem, _ = semantic_matrix(ds, ("attributes",))
    scores, rows = {}, []
    for name in args.models:
        t0 = time.perf_counter()
        run = select_and_train(ds, name, seed=args.seed)
        scores[name] = zscore_rows(unseen_scores(run.model, ds.features[te], sem[unseen]))
        rows.append((name, top1(scores[name], labels, unseen), run.selection.get("val_top1"),
                     time.perf_counter() - t0))
    print(f"# Score ensembles on {args.dataset} (seed {args.seed}, {len(unseen)} unseen test classes, "
          f"{len(te):,} images); {platform.processor() or platform.machine()}, {os.cpu_count()} cpus\n")
    print("| models | T1 (test) | val top-1 of the model | train s |\n|---|---|---|---|")
    for name, t1, val, secs in rows:
        print(f"| {name} | {t1:.3f} | {val:.3f} | {secs:.0f} |")
    combos = [(top1(sum(scores[m] for m in c), labels, unseen), "+".join(c))
              for r in range(2, len(args.models) + 1) for c in itertools.combinations(args.models, r)]
    for t1, name in sorted(combos, reverse=True):
        print(f"| {name} (z-score sum) | {t1:.3f} | – | – |")
    pred = {m: unseen[s.argmax(1)] for m, s in scores.items()}
    any_right = np.any([p == labels for p in pred.values()], axis=0)
    print(f"\nshare of each class's test images some model gets right (mean over classes): "
          f"{np.mean([any_right[labels == c].mean() for c in unseen]):.3f}")


if __name__ == "__main__":
    main()
