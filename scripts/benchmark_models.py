#!/usr/bin/env python
"""Benchmark every registered zero-shot model with the protocol, over several seeds.

For each (dataset, model, seed): ``protocol.select_and_train`` (hyper-parameters and training
length chosen on the *val* classes only, then refit on trainval) and ``protocol.evaluate`` on the
unseen test classes (top-1, mAP, GZSL). Prints and writes a markdown table of mean +- std to
``docs/results.md`` and, when README.md holds the markers ``<!-- results:start -->`` /
``<!-- results:end -->``, replaces the block between them. A chance row (1 / #unseen classes for
top-1; the mean positive fraction for mAP, the expected AP of a random ranking) is the baseline
measured in the same run.

Every finished run is appended to a JSON-lines file (``--raw``, default
``runs/benchmark_models.jsonl``); ``--resume`` reuses the runs already there, so an interrupted
benchmark continues where it stopped.

    python scripts/benchmark_models.py --data-root /work/shared/data            # everything, 3 seeds
    python scripts/benchmark_models.py --datasets synthetic --models ssl --seeds 0 1
    python scripts/benchmark_models.py --datasets cub --backbone efficientnet-lite0   # CUB from its photos

A benchmark whose features can come from photos (the xlsa17 ones: CUB, AWA2, SUN) uses ``res101.mat``
when present, else the photos under the data root through ``--backbone`` (features cached per
backbone, so only the first run pays the backbone pass); the table says which features were used.
The ensemble reuses the hyper-parameters its pool members chose in the same seed when those members
ran in this benchmark (the same selection it would otherwise repeat), so it costs one subset search.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zslretrieval.correction import ScoreCorrection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
METRICS = ("top1", "map", "gzsl", "gzsl_map", "hubness")
RETRIEVAL = ("map", "gzsl_map", "hubness")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["awa1-lampert", "synthetic"])
    p.add_argument("--models", nargs="+", default=None, help="default: every registered model")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-root", default=None, help="default: $ZSLR_DATA")
    p.add_argument("--backbone", default=None,
                   help="photo-feature datasets (cub, awa2, sun without res101.mat): the offline backbone "
                        "(default: the loader's own)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on a shared machine more threads spin-wait and run slower)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    p.add_argument("--corrections-out", default=str(ROOT / "docs" / "hubness.md"),
                   help="markdown file whose results block receives the score-correction x model table")
    p.add_argument("--raw", default=str(ROOT / "runs" / "benchmark_models.jsonl"))
    p.add_argument("--resume", action="store_true", help="reuse finished runs found in --raw")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tabulate the finished runs found in --raw")
    return p.parse_args(argv)


def chance(dataset) -> dict[str, float]:
    """Top-1 of a uniform random guess among the unseen classes; mAP of a random ranking
    (expected AP = fraction of positives, averaged over the unseen classes)."""
    y = dataset.labels[dataset.split_indices("test_unseen")]
    classes, counts = np.unique(y, return_counts=True)
    return {"top1": 1.0 / len(classes), "map": float(np.mean(counts / len(y)))}


def best_per_kind(table: list[dict]) -> list[dict]:
    """The candidate with the best val mAP of each correction kind (first one on ties), in table order."""
    best: dict[str, dict] = {}
    for r in table:
        if r["kind"] not in best or r["map"] > best[r["kind"]]["map"]:
            best[r["kind"]] = r
    return list(best.values())


def member_hparams_from(runs: list[dict], dataset_name: str, seed: int, model_name: str) -> dict | None:
    """The ensemble's pool members' chosen hyper-parameters (with their epochs) from this benchmark's runs of
    the same dataset and seed -- what ``protocol.selection._select_members`` would choose again -- or None
    when a pool member did not run here (the ensemble then selects its members itself)."""
    from zslretrieval.models import get_model_class
    cls = get_model_class(model_name)
    if not getattr(cls, "composite", False):
        return None
    pool = cls.member_names(cls._coerce_hparams({}))
    got = {r["model"]: r.get("card_hparams") for r in runs if r["dataset"] == dataset_name and r["seed"] == seed}
    if not all(got.get(n) for n in pool):
        return None
    return {n: got[n] for n in pool}


def run_one(dataset, model_name: str, seed: int, log, member_hparams: dict | None = None) -> dict:
    from zslretrieval import protocol
    from zslretrieval.models import get_model_class
    from zslretrieval.protocol.selection import dataset_hparams

    # recorded only: select_and_train applies the dataset's facts itself (as zslr train/eval do)
    hp = dataset_hparams(get_model_class(model_name), dataset)
    t0 = time.perf_counter()
    fixed = {"member_hparams": member_hparams} if member_hparams else None
    res = protocol.select_and_train(dataset, model_name, seed=seed, log=log, hparams=fixed)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = protocol.evaluate(res.model, dataset, METRICS, card=res.card)
    raw = protocol.evaluate(res.model, dataset, RETRIEVAL, card=res.card, raw_scores=True)
    metrics.update({f"{k}_raw": v for k, v in raw.items() if k in ("gzsl_map", "seen_share@10", "n10_skew")})
    # each kind of correction (none, stack, zscore, posterior): its best candidate on val (val figures
    # from selection) next to its test figures; a posterior's temperature unit is the refit model's
    corrections = []
    refit_unit = (res.selection.get("retrieval_correction_unit") or {}).get("refit") or 1.0
    for cand in best_per_kind(res.selection.get("retrieval_correction_candidates", [])):
        c = ScoreCorrection.from_dict(cand)
        if c.kind == "posterior":
            c = dataclasses.replace(c, unit=refit_unit)
        test = protocol.evaluate(res.model, dataset, RETRIEVAL, card=res.card, correction=c)
        corrections.append({"correction": c.to_dict(), "val": {k: cand[k] for k in cand if k not in c.to_dict()},
                            "test": test})
    return {"dataset": dataset.name, "model": model_name, "seed": seed, "metrics": metrics,
            "retrieval_correction": res.selection.get("retrieval_correction"), "corrections": corrections,
            "train_seconds": round(train_s, 2), "eval_seconds": round(time.perf_counter() - t1, 2),
            "chosen": res.selection.get("chosen"), "epochs": res.selection.get("epochs"),
            "val_top1": res.selection.get("val_top1"), "fixed_hparams": hp,
            "val_gzsl_calibrated": res.selection.get("val_gzsl_calibrated"),
            "val_map_mixed": res.selection.get("val_map_mixed"), "card_hparams": res.card.hparams,
            "members_reused": bool(member_hparams),
            "features": (dataset.meta or {}).get("feature_source", ""), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB; Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def fmt(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float) * scale
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


COLUMNS = [("T1", "top1"), ("mAP", "map"), ("U", "gzsl_u"), ("S", "gzsl_s"), ("H", "gzsl_h"),
           ("H cal.", "gzsl_cal_h"), ("gMAP raw", "gzsl_map_raw"), ("gMAP", "gzsl_map"),
           ("seen@10", "seen_share@10"), ("N10 skew", "n10_skew")]
# columns that are not percentages
PLAIN = {"n10_skew"}


def table(runs: list[dict], datasets: list[str], models: list[str], chances: dict[str, dict]) -> str:
    head = "| dataset | model | seeds | " + " | ".join(c for c, _ in COLUMNS) + " | train s |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    best_notes = []
    for ds in datasets:
        ch = chances.get(ds)
        if ch:
            lines.append(f"| {ds} | *chance* | – | {100 * ch['top1']:.1f} | {100 * ch['map']:.1f} |"
                         + " – |" * (len(COLUMNS) - 1))
        means: dict[str, dict[str, float]] = {}
        for m in models:
            rs = [r for r in runs if r["dataset"] == ds and r["model"] == m]
            if not rs:
                continue
            cells = [fmt([r["metrics"].get(k) for r in rs], 1.0 if k in PLAIN else 100.0) for _, k in COLUMNS]
            means[m] = {k: float(np.nanmean([r["metrics"].get(k, np.nan) for r in rs])) for _, k in COLUMNS}
            lines.append(f"| {ds} | {m} | {len(rs)} | " + " | ".join(cells)
                         + f" | {fmt([r['train_seconds'] for r in rs], 1.0, 0)} |")
        if means:
            best = []
            for col, k in COLUMNS:
                if k in PLAIN or k.startswith("seen_share"):
                    continue  # lower is better there; "best" would mislead
                vals = {m: v[k] for m, v in means.items() if np.isfinite(v[k])}
                if vals:
                    b = max(vals, key=vals.get)
                    best.append(f"{col}: **{b}** ({100 * vals[b]:.1f})")
            best_notes.append(f"- {ds}: " + ", ".join(best))
    return "\n".join(lines) + ("\n\nBest mean per metric:\n" + "\n".join(best_notes) if best_notes else "")


def compute_line(runs: list[dict]) -> str:
    """Wall seconds (selection + refit + test evaluation, summed over the runs) and the peak resident memory
    of the benchmark process, per dataset."""
    parts = []
    for ds in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == ds]
        wall = sum(r["train_seconds"] + r["eval_seconds"] for r in rs)
        peaks = [r["peak_rss_mb"] for r in rs if r.get("peak_rss_mb")]
        parts.append(f"`{ds}`: {len(rs)} runs, {wall / 60:.1f} min of selection + refit + evaluation"
                     + (f", peak memory {max(peaks) / 1024:.2f} GB" if peaks else ""))
    return "Compute: " + "; ".join(parts) + "."


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch thread(s)), {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def report(runs: list[dict], args: argparse.Namespace, models: list[str], chances: dict[str, dict],
           data_desc: dict[str, str]) -> str:
    seeds = sorted({r["seed"] for r in runs})
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "## Model benchmark (zero-shot retrieval / classification)",
        "",
        f"Split: xlsa17 \"proposed split\" (GBU, Xian et al.) -- scores on the **unseen test classes**; "
        f"hyper-parameters and training length chosen on the **val classes only** "
        f"(`protocol.select_and_train`), then refit on trainval. Seeds: {', '.join(map(str, seeds))} "
        f"(mean ± sample std over seeds). Machine: {machine()}. Date: {date}.",
        "",
        "Data: " + "; ".join(f"`{k}` = {v}" for k, v in data_desc.items()) + ".",
        "",
        "T1 = per-class top-1 among unseen classes; mAP = each unseen class's attribute query ranks all "
        "unseen test images (exact, full ranking); U/S/H = generalized ZSL per-class top-1 on unseen / "
        "seen test images searched over all classes and their harmonic mean, uncalibrated; H cal. = H "
        "with calibrated stacking whose offset was chosen on val. gMAP = generalized retrieval mAP: each "
        "unseen class queries the unseen **and** seen test images together (raw model scores, then with the "
        "per-image score correction chosen on val, see docs/hubness.md); seen@10 = share of the unseen "
        "queries' top-10 held by seen-class images; N10 skew = skewness of how many class queries (all "
        "classes) hold each image in their top 10 (not in %). mAP, gMAP, seen@10, N10 use the val-chosen "
        "correction. All in % unless noted. train s = wall seconds of selection + refit.",
        "",
        table(runs, args.datasets, models, chances),
        "",
        compute_line(runs),
        "",
        f"Reproduce: `python scripts/benchmark_models.py --datasets {' '.join(args.datasets)} "
        f"--models {' '.join(models)} --seeds {' '.join(map(str, seeds))} --threads {args.threads}"
        + (" --data-root DIR" if args.data_root else "") + (f" --backbone {args.backbone}" if args.backbone else "")
        + "` (data root: `--data-root`, else `$ZSLR_DATA`)",
    ]
    return "\n".join(lines) + "\n"


def correction_table(runs: list[dict]) -> str:
    """Markdown: each score correction x model, val figures (val classes among held-out seen images)
    and test figures (unseen classes among test_seen images); the val-chosen row is marked."""
    lines = ["| dataset | model | seed | correction | val gMAP | val seen@10 | val N10 skew* | test gMAP | "
             "test mAP | test seen@10 | test N10 skew |", "|" + "---|" * 11]
    for r in runs:
        chosen = ScoreCorrection.from_dict(r.get("retrieval_correction"))
        for c in r.get("corrections", []):
            corr = ScoreCorrection.from_dict(c["correction"])
            v, t = c["val"], c["test"]
            name = corr.describe() + (" **(chosen)**" if corr.same_choice(chosen) else "")
            lines.append(f"| {r['dataset']} | {r['model']} | {r['seed']} | {name} | {100 * v['map']:.1f} | "
                         f"{100 * v['seen_share@10']:.1f} | {v['n10_skew']:.1f} | {100 * t['gzsl_map']:.1f} | "
                         f"{100 * t['map']:.1f} | {100 * t['seen_share@10']:.1f} | {t['n10_skew']:.1f} |")
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str | None:
    pattern = re.compile(re.escape(MARK_START) + r".*?" + re.escape(MARK_END), re.S)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda _: f"{MARK_START}\n{block}{MARK_END}", text, count=1)


KEEP_MARK = "<!-- kept: the sections below are hand-written; benchmark_models.py keeps them -->"

NOTES = """
### Notes on the models

- Every model is trained by the same protocol; the grid of each model is its `search_space()` and
  the training length of iterative models is the best val epoch (patience 5). Nothing is chosen on
  the unseen test classes.
- `ssl`, `acmr`, `dml` project inputs wider than `pca_dim` (256) with a PCA fitted on the training
  images only (per feature group for `dml`), so that an epoch over 8,252-d features takes seconds on
  a CPU; `dml` receives the awa1-lampert feature groups (lss, sift, surf, rgsift, phog) from the
  dataset (`fixed` hyper-parameter, not tuned).
- `acmr`'s Information Enhancement Module is a Jensen-Shannon mutual-information bound between each
  input and its latent mean (Deep InfoMax style critic, negatives from other classes); its GZSL
  latent softmax classifier (`ACMR.gzsl_scores`) is not what this table reports: the protocol scores
  every model by its embeddings (cosine of latent means for `acmr`).
- GZSL columns are uncalibrated except "H cal.", whose calibrated-stacking offset was chosen on val.
- `ensemble` sums its members' cosines, one weight per member (1 / spread on the training images);
  each member is first selected by its own protocol run, then the subset of the pool on val; its
  `train s` include those member runs.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    from zslretrieval.data import load_dataset
    from zslretrieval.models import list_models
    from zslretrieval.fileio import atomic_write

    models = args.models or list_models()
    raw = Path(args.raw)
    done: list[dict] = []
    if (args.resume or args.report_only) and raw.is_file():
        done = [json.loads(line) for line in raw.read_text().splitlines() if line.strip()]
    raw.parent.mkdir(parents=True, exist_ok=True)

    runs, chances, data_desc, datasets, failed = [], {}, {}, {}, []
    for ds_name in args.datasets:
        t = time.perf_counter()
        dataset = load_dataset(ds_name, args.data_root, seed=0, backbone=args.backbone)
        print(f"# {ds_name}: loaded in {time.perf_counter() - t:.1f}s, features {dataset.features.shape}",
              flush=True)
        datasets[ds_name] = dataset
        chances[dataset.name] = chance(dataset)
        n_unseen = len(dataset.split_classes("test_unseen"))
        data_desc[dataset.name] = (f"{dataset.features.shape[0]} images, {dataset.feature_dim}-d features "
                                   f"({dataset.feature_transform}), {dataset.semantic_dim} attributes, "
                                   f"{len(dataset.split_classes('trainval'))} seen / {n_unseen} unseen classes"
                                   + (f"; features: {dataset.meta['feature_source']}"
                                      if (dataset.meta or {}).get("feature_source") else ""))
    # Seed-major order: an interrupted benchmark still has every model on every dataset for the
    # first seeds (--report-only then tabulates what is there).
    for seed in args.seeds:
        for dataset in datasets.values():
            for model in models:
                prev = [r for r in done if r["dataset"] == dataset.name and r["model"] == model and r["seed"] == seed]
                if prev:
                    runs.append(prev[-1])
                    continue
                if args.report_only:
                    continue
                print(f"## {dataset.name} {model} seed {seed}", flush=True)
                try:
                    members = member_hparams_from(runs, dataset.name, seed, model)
                    if members:
                        print(f"   ensemble members' hyper-parameters from this seed's runs: {sorted(members)}",
                              flush=True)
                    r = run_one(dataset, model, seed, log=lambda m: print("   " + m, flush=True),
                                member_hparams=members)
                except Exception as e:  # one broken model must not lose the others' results
                    print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
                    failed.append(f"{dataset.name} {model} seed {seed}: {type(e).__name__}: {e}")
                    continue
                print(f"   -> {json.dumps(r['metrics'])} train {r['train_seconds']}s", flush=True)
                runs.append(r)
                with raw.open("a") as f:
                    f.write(json.dumps(r) + "\n")

    if args.corrections_out and any(r.get("corrections") for r in runs):
        from zslretrieval.fileio import atomic_write as _aw
        block = correction_table([r for r in runs if r.get("corrections")])
        path = Path(args.corrections_out)
        old_text = path.read_text() if path.is_file() else ""
        new_text = replace_block(old_text, block + "\n") or f"{old_text}\n{MARK_START}\n{block}\n{MARK_END}\n"
        _aw(path, lambda f: f.write(new_text.encode()))
        print(block)
        print(f"wrote {path}")
    text = report(runs, args, models, chances, data_desc)
    print(text)
    out = Path(args.out)
    # hand-written sections below KEEP_MARK (experiments, diagnostics) survive a regeneration
    old_out = out.read_text() if out.is_file() else ""
    kept = old_out[old_out.index(KEEP_MARK):] if KEEP_MARK in old_out else ""
    atomic_write(out, lambda f: f.write(("# Results\n\n" + text + NOTES + ("\n" + kept if kept else "")).encode()))
    print(f"wrote {out}")
    readme = Path(args.readme)
    if not args.no_readme and readme.is_file():
        # the README holds the table under its own "## Results" heading: one level down there
        new = replace_block(readme.read_text(), re.sub(r"(?m)^## ", "### ", text))
        if new is not None:
            atomic_write(readme, lambda f: f.write(new.encode()))
            print(f"updated the results block of {readme}")
    for line in failed:
        print(f"FAILED (missing from the table): {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
