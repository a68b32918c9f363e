"""The general model (no training) on all 11,788 CUB-200-2011 photos: species names and category words.

    python scripts/bench_general_cub.py                        # the model zslr would load (cache / shipped)
    python scripts/bench_general_cub.py --model path/to/model.npz --label before

A raw index of every CUB photo's efficientnet-lite0 features (read from the photo feature cache,
keyed by each file's sha1, so no backbone pass) is built with ``ingest.index_features``, and asked
through the engine exactly as ``zslr query --text`` asks it (the general model's deployed map,
anchors and hubness correction):

* the 200 species names (``text.names.class_text``: "001.Black_footed_Albatross" -> "Black footed
  Albatross") as ``text`` queries: mAP over all photos and P@1 (share of names whose first photo is
  of that species);
* category words (albatross, hummingbird, pelican, jay, woodpecker, kingfisher, cormorant, wren):
  AP of the photos of every species whose name ends in the word, with its chance (the share of
  those photos).

Nothing here chooses anything: the model's choices were made on held-out ImageNet classes.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

CATEGORY_WORDS = ("albatross", "hummingbird", "pelican", "jay", "woodpecker", "kingfisher", "cormorant", "wren")


def cub_photos(cub: Path) -> tuple[list[str], list[str]]:
    """(relative photo paths, class folder names) in images.txt order, checked against image_class_labels.txt."""
    rows = dict(line.split() for line in (cub / "images.txt").read_text().splitlines() if line.strip())
    labels = dict(line.split() for line in (cub / "image_class_labels.txt").read_text().splitlines() if line.strip())
    classes = dict(line.split() for line in (cub / "classes.txt").read_text().splitlines() if line.strip())
    ids = sorted(rows, key=int)
    paths = [rows[i] for i in ids]
    names = [classes[labels[i]] for i in ids]
    bad = [p for p, c in zip(paths, names) if p.split("/")[0] != c]
    if bad:
        raise SystemExit(f"{len(bad)} photos whose folder is not their labelled class, e.g. {bad[0]}")
    return paths, names


def cached_features(cub: Path, paths: list[str], cache: Path | None) -> tuple[np.ndarray, str | None]:
    """(N, D) features of the photos, in ``paths`` order, from the photo feature cache (rows keyed by
    the sha1 of each file's bytes, ``data.feature_cache``); the cache's weights id."""
    from zslretrieval.data.feature_cache import cache_file, content_key, default_cache_dir, read_cache
    path = cache or cache_file(default_cache_dir(cub / "images"), "efficientnet-lite0")
    contents = read_cache(Path(path))
    keys = [content_key(cub / "images" / p) for p in paths]
    missing = [p for p, k in zip(paths, keys) if k not in contents.rows]
    if missing:
        raise SystemExit(f"{len(missing)} photos not in the feature cache {path}, e.g. {missing[0]}")
    return np.stack([contents.rows[k] for k in keys]).astype(np.float32), contents.weights_id


def run(model, cub: Path, cache: Path | None, work: Path) -> dict:
    from zslretrieval.ingest import index_features
    from zslretrieval.metrics.ranking import average_precision
    from zslretrieval.query import QueryEngine, QuerySpec
    from zslretrieval.query.benchmark_map import label_query_map
    from zslretrieval.text.names import class_text
    paths, labels = cub_photos(cub)
    x, weights = cached_features(cub, paths, cache)
    if weights and weights != model.backbone_weights:
        raise SystemExit(f"features of weights {weights}, general model of {model.backbone_weights}")
    idx = index_features("cub-all", x, paths, labels, root=work, backbone="efficientnet-lite0")
    eng = QueryEngine(idx, general=model)
    t0 = time.perf_counter()
    res = label_query_map(eng, "text")
    lab_of = {r.id: str(r.label) for r in idx.all_records()}
    species = {"p_at_1": float(np.mean([res["top1"][c] == c for c in res["ap"]])), **res,
               "seconds": time.perf_counter() - t0}
    words = {}
    for w, r in zip(CATEGORY_WORDS, eng.run([QuerySpec("text", w) for w in CATEGORY_WORDS], k=None)):
        pos = {c for c in res["ap"] if class_text(c).lower().split()[-1] == w}
        hit = np.array([lab_of[h.id] in pos for h in r.hits])
        words[w] = {"ap": float(average_precision(hit)), "chance": float(hit.mean()), "classes": len(pos),
                    "anchors": r.resolved.get("understood_as", {}).get("anchors")}
    return {"species": species, "words": words, "n_images": len(labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cub", type=Path, default=Path(os.environ.get("ZSLR_CUB", "/work/data/CUB_200_2011")))
    ap.add_argument("--features", type=Path, default=None, help="feature cache .npz (default: the data root's)")
    ap.add_argument("--model", type=Path, default=None, help="a general model .npz (default: what zslr loads)")
    ap.add_argument("--label", default="")
    ap.add_argument("--show", type=int, default=0, help="print the N best and worst species APs")
    args = ap.parse_args()
    from zslretrieval.text.general import GeneralModel, load_general_model
    model = (GeneralModel.load(args.model, source="file") if args.model
             else load_general_model("efficientnet-lite0", build=False))
    print(f"general model: {model.source} {model.path} hparams {model.hparams}")
    with tempfile.TemporaryDirectory(prefix="bench-general-cub-") as tmp:
        out = run(model, args.cub, args.features, Path(tmp))
    sp = out["species"]
    print(f"\n{args.label} all {out['n_images']} CUB photos, raw efficientnet-lite0 index, general model, engine path")
    print(f"| query | AP | chance |\n|---|---|---|")
    print(f"| 200 species names: mAP | **{sp['map']:.3f}** | {sp['chance']:.3f} |")
    print(f"| 200 species names: P@1 | {sp['p_at_1']:.3f} | {sp['chance']:.3f} |")
    for w, r in out["words"].items():
        print(f"| `{w}` ({r['classes']} species) | {r['ap']:.3f} | {r['chance']:.3f} |")
    print(f"(200 queries in {sp['seconds']:.1f} s)")
    for w, r in out["words"].items():
        print(f"  {w}: anchors {r['anchors']}")
    if args.show:
        order = sorted(sp["ap"], key=sp["ap"].get)
        for c in order[::-1][:args.show] + order[:args.show]:
            print(f"  {c}: AP {sp['ap'][c]:.3f} first right at {sp['first_right'][c]}, top1 {sp['top1'][c]}")


if __name__ == "__main__":
    main()
