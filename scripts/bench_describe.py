#!/usr/bin/env python
"""Describe an unseen bird in your own words: human descriptions as the semantic side, on CUB from its photos.

Three measurements on CUB-200-2011 (proposed split; features of its photos through ``--backbone``; the
photos' ten human sentences each in ``CUB_200_2011/text``), every choice made on the val classes:

1. **Class level** -- for each model and seed, ``protocol.select_and_train`` then ``protocol.evaluate`` (top-1,
   mAP over the unseen gallery) with the class descriptors ``attributes``, ``descriptions`` (mean
   all-MiniLM-L6-v2 embedding of all the class's sentences, ``data.descriptions``) and both fused (DEM: one
   first layer per modality, summed; ESZSL: side by side).
2. **One human sentence** about a photo of an unseen species (``--sentences`` of them, a seeded sample, one per
   photo): AP of that species over the unseen gallery and over all 11,788 photos, ranked by the model's raw
   scores for the descriptor the sentence map (``query.sentences``: ridge fitted on the training photos' own
   sentences, lam/beta chosen on val) reads it as. Baseline measured in the same run: a ridge from the
   sentence embedding straight to its photo's feature (lam chosen on val the same way), cosine ranking; and
   chance (the mean positive fraction).
3. **Five sentence queries** through the engine (``QueryEngine`` on an index of the 11,788 photos holding the
   best model of the seed-0 fused runs, with its sentence map in the checkpoint): their top 5.

    python scripts/bench_describe.py --data-root /work/data --models dem eszsl --seeds 0 1 2

Prints markdown tables; ``--out`` writes them (docs/results.md takes the "Descriptions" section from it),
``--raw`` keeps every run as JSON lines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODALITIES = {"attributes": ("attributes",), "descriptions": ("descriptions",),
              "both": ("attributes", "descriptions")}
QUERIES = ("a small bird with a red crown and black wings",
           "this bird has a bright yellow breast and a black mask",
           "a large white seabird with long grey wings and a hooked yellow bill",
           "a tiny bird with a long thin bill and iridescent green feathers",
           "a brown bird with a speckled white belly and a short pointed beak")
RIDGE_LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# DEM's weights of its modality branches (models.dem fusion_weights), fused runs only: chosen by val top-1
FUSION_WEIGHTS = ([1.0, 1.0], [1.0, 0.5], [1.0, 2.0])


def select(protocol, ds, name, seed, mods):
    """``select_and_train``; a fused DEM also chooses its branch weights on val (best val top-1)."""
    if name != "dem" or len(mods) < 2:
        return protocol.select_and_train(ds, name, seed=seed, modalities=mods)
    tried = [protocol.select_and_train(ds, name, seed=seed, modalities=mods, hparams={"fusion_weights": w})
             for w in FUSION_WEIGHTS]
    for w, r in zip(FUSION_WEIGHTS, tried):
        log(f"  dem fusion_weights {w}: val top-1 {r.selection['val_top1']:.4f}")
    return max(tried, key=lambda r: r.selection["val_top1"])


def ridge_baseline(ds, emb, photo, q, seed):
    """Sentence embedding -> its photo's raw feature (ridge, lam chosen on val), cosine ranking."""
    from zslretrieval.query.sentences import _Ridge, average_precision, sample_sentences

    def rows(split):
        return np.isin(photo, ds.split_indices(split))

    def unit(a):
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    fit = rows("train")
    ridge = _Ridge(emb[fit], ds.features[photo[fit]])
    val_idx = ds.split_indices("val")
    vq = sample_sentences(val_idx, photo, 1000, seed)
    xv = unit(ds.features[val_idx])
    rel = ds.labels[val_idx][:, None] == ds.labels[photo[vq]][None, :]
    best = max(RIDGE_LAMBDAS, key=lambda lam: average_precision(
        xv @ unit(emb[vq] @ ridge.solve(lam)[0] + ridge.solve(lam)[1]).T, rel).mean())
    W, b = _Ridge(emb[rows("trainval")], ds.features[photo[rows("trainval")]]).solve(best)
    return lambda x, e: unit(x) @ unit(e @ W + b).T, best


def sentence_aps(score_fn, ds, emb, photo, q):
    """(AP over the unseen gallery, AP over every photo) averaged over the sentences ``q``."""
    from zslretrieval.query.sentences import average_precision

    want = ds.labels[photo[q]]
    unseen = ds.split_indices("test_unseen")
    out = []
    for rows in (unseen, np.arange(len(ds.labels))):
        aps = []
        for start in range(0, len(q), 500):   # (N, 500) score blocks keep memory small
            sl = slice(start, start + 500)
            s = score_fn(ds.features[rows], emb[q[sl]])
            aps.append(average_precision(s, ds.labels[rows][:, None] == want[sl][None, :]))
        out.append(float(np.concatenate(aps).mean()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("ZSLR_DATA"))
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--models", nargs="+", default=["dem", "eszsl"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--sentences", type=int, default=2000, help="single-sentence queries (seeded sample)")
    ap.add_argument("--sentence-seeds", nargs="+", type=int, default=[0],
                    help="model seeds whose sentence maps are measured (each costs a refit on train)")
    ap.add_argument("--out", type=Path, help="write the markdown tables here")
    ap.add_argument("--raw", type=Path, default=Path("runs/bench_describe.jsonl"))
    ap.add_argument("--keep", type=Path, help="folder for the best model's checkpoint and index (default: temporary)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from zslretrieval import protocol
    from zslretrieval.data import load_dataset
    from zslretrieval.data.descriptions import dataset_sentences
    from zslretrieval.query.sentences import fit_sentence_map, query_scores, sample_sentences
    from zslretrieval.text import encoder_id

    t0 = time.perf_counter()
    ds = load_dataset("cub", args.data_root, seed=0, backbone=args.backbone)
    texts, emb = dataset_sentences(ds)
    log(f"CUB: {len(ds.labels)} photos, {len(texts.sentences)} sentences ({time.perf_counter() - t0:.0f}s); "
        f"features {ds.meta.get('feature_source')}")
    q = sample_sentences(ds.split_indices("test_unseen"), texts.photo, args.sentences, seed=0)
    args.raw.parent.mkdir(parents=True, exist_ok=True)
    runs, sent_rows, best = [], [], None

    for seed in args.seeds:
        for name in args.models:
            for label, mods in MODALITIES.items():
                t = time.perf_counter()
                res = select(protocol, ds, name, seed, mods)
                m = protocol.evaluate(res.model, ds, ("top1", "map"), card=res.card)
                row = {"model": name, "seed": seed, "semantics": label, "top1": m["top1"], "map": m["map"],
                       "val_top1": res.selection["val_top1"], "chosen": res.selection["chosen"],
                       "seconds": round(time.perf_counter() - t, 1)}
                log(f"{name} seed {seed} {label}: T1 {m['top1']:.4f} mAP {m['map']:.4f} ({row['seconds']}s)")
                runs.append(row)
                with open(args.raw, "a") as f:
                    f.write(json.dumps({"kind": "class", **row}) + "\n")
                if seed in args.sentence_seeds and label in ("attributes", "both"):
                    t = time.perf_counter()
                    smap = fit_sentence_map(ds, res.card, seed=seed)
                    u, a = sentence_aps(lambda x, e: query_scores(res.model, x, smap.descriptors(e)), ds, emb,
                                        texts.photo, q)
                    srow = {"model": name, "seed": seed, "semantics": label, "unseen_map": u, "all_map": a,
                            "val_map": smap.selection["val_map"], "chosen": smap.selection["chosen"],
                            "seconds": round(time.perf_counter() - t, 1)}
                    log(f"  sentence map {label}: unseen mAP {u:.4f}, all {a:.4f} (val {srow['val_map']:.4f}, "
                        f"{srow['chosen']})")
                    sent_rows.append(srow)
                    with open(args.raw, "a") as f:
                        f.write(json.dumps({"kind": "sentence", **srow}) + "\n")
                    # the demo index's model: the fused run with the best *val* top-1 (never test)
                    if label == "both" and (best is None or res.selection["val_top1"] > best[0]):
                        best = (res.selection["val_top1"], res, smap, mods)

    fn, lam = ridge_baseline(ds, emb, texts.photo, q, 0)
    u, a = sentence_aps(fn, ds, emb, texts.photo, q)
    sent_rows.append({"model": f"ridge sentence -> photo feature (lam {lam:g}, val)", "seed": 0, "semantics": "-",
                      "unseen_map": u, "all_map": a})
    want = ds.labels[texts.photo[q]]
    unseen = ds.split_indices("test_unseen")
    sent_rows.append({"model": "chance", "seed": 0, "semantics": "-",
                      "unseen_map": float(np.mean([np.mean(ds.labels[unseen] == c) for c in want])),
                      "all_map": float(np.mean([np.mean(ds.labels == c) for c in want]))})

    lines = [f"CUB-200-2011 from its photos ({ds.meta.get('feature_source')}), proposed split; descriptions: "
             f"{len(texts.sentences):,} human sentences ({len(texts.sentences) / len(ds.labels):g} per photo) through {encoder_id()}; "
             f"choices on val classes only; {platform.node()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "Class level (unseen classes; T1 = per-class top-1, mAP over the unseen gallery; mean +- std over seeds "
             f"{', '.join(map(str, args.seeds))}):", "",
             "| model | semantics | T1 | mAP | runs |", "|---|---|---|---|---|"]
    for name in args.models:
        for label in MODALITIES:
            rs = [r for r in runs if r["model"] == name and r["semantics"] == label]
            t1, mp = np.array([r["top1"] for r in rs]), np.array([r["map"] for r in rs])
            lines.append(f"| {name} | {label} | {t1.mean():.3f} +- {t1.std():.3f} | {mp.mean():.3f} +- {mp.std():.3f} "
                         f"| {len(rs)} |")
    lines += ["", f"One human sentence about a photo of an unseen species ({len(q)} sentences, seeded, one per photo): "
              "AP of that species, mean over sentences (model seed 0; raw model scores):", "",
              f"| ranked by | semantics | unseen gallery mAP ({len(ds.split_indices('test_unseen')):,} photos) "
              f"| all {len(ds.labels):,} photos mAP | chosen on val |",
              "|---|---|---|---|---|"]
    for r in sent_rows:
        lines.append(f"| {r['model']} | {r['semantics']} | {r['unseen_map']:.3f} | {r['all_map']:.3f} | "
                     f"{r.get('chosen', '')} |")

    if best is not None:
        _, res, smap, mods = best
        lines += ["", *five_queries(ds, res, smap, mods, args.keep)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    log(f"total {time.perf_counter() - t0:.0f}s")
    return 0


def five_queries(ds, res, smap, mods, keep: Path | None) -> list[str]:
    """The best fused model's checkpoint (with its sentence map) indexed over all photos; five --text queries."""
    from zslretrieval.ingest.features import index_features
    from zslretrieval.models.checkpoint import save_checkpoint
    from zslretrieval.query.engine import QueryEngine
    from zslretrieval.query.spec import QuerySpec

    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_describe-"))
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = save_checkpoint(res.model, res.card, folder / f"cub-{res.card.model}-describe.pt",
                           torch.from_numpy(ds.semantic_matrix(mods)[0]), sentence_map=smap.to_tensors())
    images = Path(ds.meta["features"]["folder"])
    paths = [str(images / p) for p in ds.meta["image_files"]]
    labels = [ds.class_names[int(c)] for c in ds.labels]
    index = index_features("cub", ds.features, paths, labels, model_checkpoint=ckpt, root=folder / "indexes",
                           backbone=ds.meta.get("backbone"), source="photos:cub")
    unseen = set(res.card.unseen_classes)
    out = [f"Five sentence queries on an index of all {len(paths):,} photos holding {res.card.model} "
           f"({'+'.join(mods)}) with its sentence map (`zslr query --index cub --text ...`; * = unseen species):", ""]
    results = QueryEngine(index).run([QuerySpec("text", t) for t in QUERIES], k=5)
    for r in results:
        how = r.resolved["understood_as"]
        out.append(f"- **{r.resolved['text']}** -- read as: "
                   + ", ".join(a["name"] for a in how.get("nearest_attributes", []))
                   + "; nearest classes (model space): "
                   + ", ".join(f"{c['name']}{'' if c['seen'] else '*'} ({c['cosine']:.2f})"
                               for c in how.get("nearest_classes", [])[:3])
                   + "; reads like the descriptions of: "
                   + ", ".join(f"{c['name']}{'*' if c['name'] in unseen else ''} ({c['cosine']:.2f})"
                               for c in how.get("reads_like", [])))
        for h in r.hits:
            out.append(f"  {h.rank}. {h.label}{'*' if h.label in unseen else ''} -- "
                       f"{Path(h.path).relative_to(images.parent) if h.path.startswith(str(images)) else h.path}")
    index.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
