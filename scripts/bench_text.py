#!/usr/bin/env python
"""Text queries without training: the general model on real photos, held-out ImageNet classes,
text as a modality on awa1-lampert, and query latency. Prints one table per part.

1. General model: held-out ImageNet prototype retrieval top-1 for DEM / ridge / semantic neighbours /
   ConSE and the deployed map with its hubness correction (val: chosen on; test: reported only),
   from the model's own selection record; then the known-name anchors' share, chosen on val
   category words.
2. Photos (30 each of ../shared/data/photos/{awa2,cub,sun}): `zslr index DIR` (raw features), then
   every folder class name asked as --text through the engine; mAP vs chance (share of the class's
   photos), with the general model's hubness correction (the default) and with --raw-scores; the
   rank of each class's first photo, '*' marking names that are ImageNet lemmas and '+' names of kinds
   of ImageNet classes (the known-name anchors). "No anchors" ranks with the deployed map and
   correction alone; ridge and ConSE columns rank the same raw features with the baselines, same run.
   Table 2c (awa2): for each name whose first photo is missed, the ImageNet classes whose own
   prototype, asked through the same engine, ranks a photo of that class first (the
   backbone's own view of the photo).
   Attribute words: awa2 photos by their class's 5 strongest AwA attributes (--attributes), and the
   demo's generated unseen classes by their 4 attribute values.
3. awa1-lampert (real AwA1 features, proposed split): DEM trained by the protocol with attributes,
   text (class-name embeddings) and both fused; unseen per-class top-1 and mAP.
4. Latency of one --text query: cold (a fresh `zslr query` process: imports, encoder and general
   model load) vs warm (same process, encoder loaded), with --image (backbone forward) as baseline.

    python scripts/bench_text.py                          # everything (~10-20 min on 2 CPU cores)
    python scripts/bench_text.py --skip-awa1 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def table(title: str, head: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in [head, *rows]]
    w = [max(len(r[i]) for r in cells) for i in range(len(head))]
    print(f"\n{title}")
    for j, r in enumerate(cells):
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
        if j == 0:
            print("  ".join("-" * x for x in w))


def general_part(model) -> None:
    sel, best = model.selection, model.selection["best"]
    from zslretrieval.correction import ScoreCorrection
    rows = [[m, f"{best[m]['val_top1']:.3f}", f"{best[m]['test_top1']:.3f}", f"{sel['chance']:.3f}"]
            for m in ("dem", "ridge", "neighbours", "conse")]
    d = best["deployed"]
    shares = " + ".join(f"{v:g} {k}" for k, v in d["mix"].items())
    rows.append([f"deployed: {shares}, {ScoreCorrection.from_dict(d['correction']).describe()} (chosen)",
                 f"{d['val_top1']:.3f}", f"{d['test_top1']:.3f}", f"{sel['chance']:.3f}"])
    table(f"1. held-out ImageNet prototype retrieval ({sel['split']['train']} train / {sel['split']['val']} val / "
          f"{sel['split']['test']} test classes, seed {sel['seed']}; templates {model.templates!r}, WordNet gloss weight "
          f"{model.gloss_weight:g}; build "
          f"{sel['build_seconds']} s)", ["method", "val top-1", "test top-1", "chance"], rows)
    if sel.get("anchors"):   # the hyponym anchors' share, chosen on val category words (text.general)
        table("1b. known-name anchors: category words (\"fox\" -> red fox, kit fox ...) over held-out prototypes, "
              "anchored on train classes; chosen: highest val mAP whose val top-1 of plain names is not lower",
              ["hyponyms of", "share", "val mAP", "test mAP", "words val/test", "names val top-1", "names test top-1"],
              [[f"{r['lemmas']} lemmas", f"{r['weight']:g}" + (" (chosen)" if (r["weight"], r["lemmas"]) == (
                  model.anchor_weight, model.anchor_lemmas) else ""),
                f"{r['val_map']:.3f}", f"{r['test_map']:.3f}", f"{r['val_queries']}/{r['test_queries']}",
                f"{r['val_leaf_top1']:.3f}", f"{r['test_leaf_top1']:.3f}"] for r in sel["anchors"]])


def photo_part(model, photos: Path, work: Path, data_root: Path) -> dict:
    from zslretrieval.index import open_index
    from zslretrieval.ingest import IndexConfig, index_images
    from zslretrieval.metrics.ranking import mean_average_precision
    from zslretrieval.query import QueryEngine, QuerySpec
    from zslretrieval.query.benchmark_map import label_query_map
    from zslretrieval.text import encode_vocabulary
    from zslretrieval.text.general import (apply_ridge, conse_embed, fit_ridge, imagenet_categories, imagenet_head,
                                           prompt_embeddings, softmax, with_glosses)
    from zslretrieval.text.names import class_text
    w, b, _ = imagenet_head(model.backbone)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    cats = imagenet_categories()
    from zslretrieval.correction import apply_terms
    from zslretrieval.text.general import imagenet_lemmas, name_anchors
    mark = {"exact": "*", "hyponym": "+", None: ""}
    # the baselines read the ImageNet names exactly as the model does (same prompt and WordNet glosses)
    cat_text = with_glosses(prompt_embeddings(lambda tpl: encode_vocabulary(cats, template=tpl), model.templates),
                            cats, model.gloss_weight, encode_vocabulary)
    ridge = fit_ridge(cat_text, unit(w), model.selection["best"]["ridge"]["alpha"])
    conse_t = model.selection["best"]["conse"]["T"]
    rows, out = [], {}
    for name, folder in (("awa2", photos / "awa2" / "JPEGImages"), ("cub", photos / "cub"), ("sun", photos / "sun")):
        if not folder.is_dir():
            print(f"skip {name}: {folder} not found")
            continue
        index_images(IndexConfig(inputs=[folder], name=name, root=work / "ix", device="cpu", workers=0))
        idx = open_index(name, root=work / "ix")
        eng = QueryEngine(idx, general=model)
        res = label_query_map(eng, "text")
        raw = label_query_map(QueryEngine(idx, general=model, correction=False), "text")
        ids, x = idx.raw_features()
        lab_of = {r.id: str(r.label) for r in idx.all_records()}
        labels = np.array([lab_of[int(i)] for i in ids])
        classes = sorted(res["ap"])
        q_text = model.text_embeddings([res["queries"][c] for c in classes])
        s_ridge = unit(apply_ridge(ridge, q_text)) @ unit(x).T
        img_text = conse_embed(softmax(x @ w.T + b), cat_text, conse_t)
        s_conse = q_text @ img_text.T
        m_ridge = mean_average_precision(s_ridge, np.array(classes), labels)[0]
        m_conse = mean_average_precision(s_conse, np.array(classes), labels)[0]
        # the deployed map and correction without known-name anchors: what the anchors add
        g_ids, g_x, g_scale, g_off = eng._general_gallery()
        s_plain = apply_terms(model.text_to_visual(q_text).astype(np.float64) @ g_x.T.astype(np.float64),
                              g_scale, g_off)
        m_plain = mean_average_precision(s_plain, np.array(classes), np.array([lab_of[int(i)] for i in g_ids]))[0]
        right = sum(r == 1 for r in res["first_right"].values())
        raw_right = sum(r == 1 for r in raw["first_right"].values())
        rows.append([name, res["n_images"], res["n_classes"], f"{res['chance']:.3f}", f"{res['map']:.3f}",
                     f"{right}/{len(classes)}", f"{raw['map']:.3f}", f"{raw_right}/{len(classes)}",
                     f"{m_plain:.3f}", f"{m_ridge:.3f}", f"{m_conse:.3f}"])
        out[name] = (res, idx, eng)
        print(f"\n{name} per class: query -> rank of its first photo (label of the first hit if wrong), "
              "'*' = the name is an ImageNet class's lemma, '+' = it names kinds of ImageNet classes (anchors); "
              "corrected | raw scores:")
        for c in classes:
            q = res["queries"][c]
            wrong = "" if res["first_right"][c] == 1 else f" ({res['top1'][c]})"
            rule = name_anchors(q, imagenet_lemmas(), hyponyms=model.anchor_lemmas)[1]
            print(f"  {q + mark[rule]:<36} {res['first_right'][c]:>3}{wrong:<30} | "
                  f"{raw['first_right'][c]:>3}")
        if name == "awa2":
            backbone_view(eng, unit(w).astype(np.float32), cats, lab_of,
                          [c for c in classes if res["first_right"][c] != 1])
    corr = model.correction.describe()
    table(f"2a. class-name --text queries on raw-feature indexes (general {model.backbone}/{model.method}, "
          f"correction {corr}; baselines on the same features)",
          ["photos", "images", "classes", "chance", f"mAP ({corr})", "first hit right", "mAP raw scores",
           "first right raw", "mAP no anchors", "mAP ridge", f"mAP ConSE T={conse_t}"], rows)

    # attribute words
    rows = []
    if "awa2" in out:
        res, idx, eng = out["awa2"]
        names = (data_root / "xlsa17" / "AWA2" / "predicates.txt").read_text().split()[1::2]
        matrix = np.loadtxt(photos / "awa2" / "predicate-matrix-continuous.txt")
        cls_all = [ln.split()[1] for ln in (photos / "awa2" / "classes.txt").read_text().splitlines() if ln.strip()]
        spec_of = {c: ",".join(names[j] for j in np.argsort(-matrix[cls_all.index(c)])[:5]) for c in res["ap"]}
        r = label_query_map(eng, "attributes", text_of=lambda c: spec_of[c])
        rows.append(["awa2 photos, 5 strongest AwA attributes", r["n_classes"], f"{r['chance']:.3f}", f"{r['map']:.3f}",
                     f"e.g. {spec_of['tiger']!r}"])
    from zslretrieval.demo.generator import generate_dataset
    gen = generate_dataset(work / "demo", seed=0, images_per_class=8, image_size=160)
    index_images(IndexConfig(inputs=[gen.images_dir], name="demo", root=work / "ix", device="cpu", workers=0))
    deng = QueryEngine(open_index("demo", root=work / "ix"), general=model)
    spec = {c.name: ",".join(c.attributes) for c in gen.classes}
    recs = deng.index.all_records()
    labels = np.array([str(rr.label) for rr in recs])
    ids = np.array([rr.id for rr in recs])
    results = deng.run([QuerySpec("attributes", spec[u]) for u in gen.unseen], k=None)
    pos = {int(i): p for p, i in enumerate(ids)}
    ranked = np.array([[pos[h.id] for h in rr.hits] for rr in results])
    from zslretrieval.metrics.ranking import mean_average_precision_from_rankings
    m, _ = mean_average_precision_from_rankings(ranked, np.array(gen.unseen), labels)
    rows.append([f"demo: {len(gen.unseen)} unseen classes among {len(gen.classes)} ({len(labels)} images)",
                 len(gen.unseen), f"{1 / len(gen.classes):.3f}", f"{m:.3f}", f"e.g. {spec[gen.unseen[0]]!r}"])
    table("2b. attribute words as --attributes on raw-feature indexes (general model)",
          ["gallery", "queries", "chance", "mAP", "query"], rows)
    return out


def backbone_view(eng, protos: np.ndarray, cats: list[str], lab_of: dict, missed: list[str]) -> None:
    """For each class whose first photo a name query misses: which of the backbone's own 1000 classes,
    each asked as its unit classifier row through the same engine and correction, rank one of its
    photos first. A diagnostic, not a choice: it names the known classes that lead to the photo (a
    name must reach one of them, or a mix, to rank it first); a class whose photo only unrelated
    rows find has no ImageNet class of its kind to be anchored on."""
    if not missed:
        return
    D, I = eng.search_vectors(protos, 1, corrected=eng.terms is not None)
    top = np.array([lab_of.get(int(i), "?") for i in I[:, 0]])
    rows = []
    for c in missed:
        hits = np.flatnonzero(top == c)
        best = hits[np.argsort(-D[hits, 0], kind="stable")][:4]
        rows.append([c, f"{len(hits)}/{len(protos)}", ", ".join(cats[i] for i in best) or "-"])
    table("2c. missed names: the ImageNet classes whose own prototype ranks a photo of that class first "
          "(the backbone's view of the photo; corrected scores)", ["class", "prototypes", "strongest of them"], rows)


def awa1_part(data_root: Path, seed: int) -> None:
    from zslretrieval.data import load_dataset
    from zslretrieval.protocol import evaluate, select_and_train
    ds = load_dataset("awa1-lampert", data_root, seed=seed)
    rows = []
    for mods in (("attributes",), ("text",), ("attributes", "text")):
        t0 = time.perf_counter()
        res = select_and_train(ds, "dem", seed=seed, modalities=mods)
        m = evaluate(res.model, ds, ("top1", "map"), card=res.card)
        rows.append(["+".join(mods), f"{res.selection['val_top1']:.3f}", f"{m['top1']:.3f}", f"{m['map']:.3f}",
                     f"{time.perf_counter() - t0:.0f}"])
    table(f"3. awa1-lampert (proposed split, 10 unseen classes, chance 0.100), DEM by the protocol, seed {seed}",
          ["semantics", "val top-1", "unseen top-1", "unseen mAP", "seconds"], rows)


def latency_part(work: Path, photos: Path, env: dict) -> None:
    from zslretrieval.index import open_index
    from zslretrieval.query import QueryEngine, QuerySpec
    image = sorted((photos / "awa2" / "JPEGImages" / "tiger").glob("*.jpg"))[0]
    base = [sys.executable, "-m", "zslretrieval", "query", "--index", "awa2", "--index-root", str(work / "ix"),
            "--top-k", "5"]
    cold = {}
    for kind, arg in (("text", ["--text", "a striped animal in the water"]), ("image", ["--image", str(image)])):
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run(base + arg, env=env, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        cold[kind] = min(times)
    eng = QueryEngine(open_index("awa2", root=work / "ix"))
    warm = {}
    for kind, text in (("text", "a striped animal in the water"), ("image", str(image))):
        eng.run([QuerySpec(kind, text)], k=5)          # loads encoder + general model / backbone
        times = []
        for i in range(10):
            q = f"a striped animal in the water {i}" if kind == "text" else text
            t0 = time.perf_counter()
            eng.run([QuerySpec(kind, q)], k=5)
            times.append(time.perf_counter() - t0)
        warm[kind] = statistics.median(times)
    table("4. query latency, awa2 raw index (30 photos); cold = fresh `zslr query` process, best of 2",
          ["query", "cold s", "warm ms (median of 10)"],
          [[f"--{k}" + (" (baseline)" if k == "image" else ""), f"{cold[k]:.1f}", f"{1000 * warm[k]:.0f}"]
           for k in ("text", "image")])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data",
                    help="benchmarks and photos (read only)")
    ap.add_argument("--work", type=Path, default=None, help="indexes, general model, caches (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-awa1", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="zslr-bench-text-"))
    # caches and the general model go to the work folder, never into the (shared) data folder
    os.environ["ZSLR_CACHE"] = str(work / "cache")
    os.environ["ZSLR_DATA"] = str(work / "data")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    from zslretrieval.text.general import load_general_model
    print(f"work folder {work}; data {args.data_root}; seed {args.seed}; torch threads {args.threads}; "
          f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    model = load_general_model("efficientnet-lite0", log=lambda m: print(m, flush=True))
    print(f"general model ready in {time.perf_counter() - t0:.1f} s")
    general_part(model)
    photo_part(model, args.data_root / "photos", work, args.data_root)
    if not args.skip_awa1:
        awa1_part(args.data_root, args.seed)
    if not args.skip_latency:
        latency_part(work, args.data_root / "photos", {**os.environ, "PYTHONPATH": str(ROOT)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
