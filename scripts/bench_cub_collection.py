#!/usr/bin/env python
"""Zero-shot retrieval over a whole photo collection through the engine: each unseen class of the
index's model, asked by ``--class`` (its attribute vector), ranks *every* indexed photo.

    zslr train --dataset cub --backbone efficientnet-lite2 --model dem --out cub-dem.pt   # val-chosen
    zslr index CUB_200_2011/images --backbone efficientnet-lite2 --model cub-dem.pt --name cub   # 11,788 photos
    python scripts/bench_cub_collection.py --index cub               # this script

The photos' backbone features are already cached by ``zslr eval/train --dataset cub`` (the same
ingestion, decode and forward that ``zslr index`` uses); ``--write-features F.npz`` writes them with
the photos' absolute paths, labels and backbone, so that ``zslr index --features F.npz --model
cub-dem.pt --name cub`` indexes the same 11,788 photos without a second backbone pass (same figures;
such an index holds features, not files, so ``zslr serve`` shows no thumbnails for it):

    python scripts/bench_cub_collection.py --write-features cub-lite2.npz --backbone efficientnet-lite2

For every class the model card lists as unseen, ``QueryEngine.run`` (the path of ``zslr query
--class NAME``, with the score correction the card recorded, chosen on val classes) returns the full
ranking of the collection; a photo is relevant when its class folder (the photo's parent folder, the
CUB release's ``<class>/<file>.jpg`` layout) is the queried class. Reported: the mixed-collection mAP
over the unseen classes (seen-class photos, training photos included, are all in the gallery), the
same with raw model scores (``--raw-scores``), the share of seen-class photos in each top-10, and
the top results of a few classes. Nothing here chooses anything: it only measures.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", default="cub", help="index name or folder")
    p.add_argument("--index-root", default=None, help="default: $ZSLR_INDEXES, else ./indexes")
    p.add_argument("--show", type=int, default=3, help="classes whose top results are printed")
    p.add_argument("--top", type=int, default=5, help="results printed per shown class")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--write-features", metavar="NPZ", default=None,
                   help="only write the cached photo features of --dataset (features, absolute paths, labels, "
                        "backbone) for `zslr index --features`, then exit")
    p.add_argument("--dataset", default="cub", help="with --write-features: the photo benchmark")
    p.add_argument("--backbone", default=None, help="with --write-features: its backbone (default: the loader's)")
    p.add_argument("--data-root", default=None, help="with --write-features: default $ZSLR_DATA")
    return p.parse_args(argv)


def write_features(args: argparse.Namespace) -> int:
    """The benchmark's photo features (from the feature cache, in the checked image order) as an .npz that
    ``zslr index --features`` reads: one row per photo, its absolute path and class folder as label."""
    from zslretrieval.data import load_dataset
    from zslretrieval.data.photo_features import INDEX_FILE, read_image_index

    ds = load_dataset(args.dataset, args.data_root, backbone=args.backbone)
    info = ds.meta["features"]
    if info.get("source") != "photos":
        print(f"{args.dataset}: features are not from photos ({ds.meta.get('feature_source')}); nothing to index",
              file=sys.stderr)
        return 2
    images_dir = Path(info["folder"])
    index = read_image_index(Path(ds.meta["folder"]) / INDEX_FILE)
    if len(index.images) != len(ds.features):
        print(f"{len(index.images)} indexed photos but {len(ds.features)} feature rows", file=sys.stderr)
        return 2
    paths = np.array([str((images_dir / rel).resolve()) for rel in index.images])
    labels = np.array([ds.class_names[int(c)] for c in ds.labels])
    np.savez(args.write_features, features=ds.features.astype(np.float32), paths=paths, labels=labels,
             backbone=np.array(ds.meta["backbone"]))
    print(f"wrote {args.write_features}: {len(paths)} photos of {images_dir}, {ds.features.shape[1]}-d "
          f"{ds.meta['backbone']} features ({ds.meta.get('feature_source')})")
    return 0


def average_precision(relevant: np.ndarray) -> float:
    """AP of one full ranking given its relevance flags in rank order."""
    hits = np.cumsum(relevant)
    n = int(relevant.sum())
    if n == 0:
        return float("nan")
    return float(np.sum((hits / np.arange(1, len(relevant) + 1))[relevant]) / n)


def class_of(path: str) -> str:
    return Path(path).parent.name


def measure(engine, classes: list[str], seen: set[str]) -> tuple[dict, list]:
    from zslretrieval.query import QuerySpec

    t = time.perf_counter()
    results = engine.run([QuerySpec("class", c) for c in classes], k=None)
    seconds = time.perf_counter() - t
    aps, seen_share = [], []
    for c, r in zip(classes, results):
        labels = [class_of(h.path) for h in r.hits]
        aps.append(average_precision(np.array([lab == c for lab in labels])))
        seen_share.append(np.mean([lab in seen for lab in labels[:10]]))
    return {"map": float(np.nanmean(aps)), "seen_share@10": float(np.mean(seen_share)),
            "per_class_ap": dict(zip(classes, aps)), "seconds": round(seconds, 2),
            "n_ranked": len(results[0].hits) if results else 0}, results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.write_features:
        return write_features(args)
    from zslretrieval.query import open_engine

    engine = open_engine(args.index, args.index_root)
    card = engine.card
    if card is None:
        print(f"index {args.index!r} has no model; index the photos with --model CKPT", file=sys.stderr)
        return 2
    unseen, seen = list(card.unseen_classes), set(card.seen_classes)
    n = engine.index.ntotal
    corrected, results = measure(engine, unseen, seen)
    raw, _ = measure(open_engine(args.index, args.index_root, correction=False), unseen, seen)
    print(f"index {args.index!r}: {n} photos, model {card.model} ({card.dataset}, {len(seen)} seen / "
          f"{len(unseen)} unseen classes), features {card.feature_source or '?'}")
    print(f"mixed-collection mAP over the {len(unseen)} unseen classes, each ranking all {corrected['n_ranked']} "
          f"photos: {corrected['map']:.4f} with the card's score correction, {raw['map']:.4f} raw; seen-class "
          f"share of top-10: {corrected['seen_share@10']:.3f} ({raw['seen_share@10']:.3f} raw); "
          f"{corrected['seconds']:.1f}s for the {len(unseen)} queries")
    order = sorted(unseen, key=lambda c: -corrected["per_class_ap"][c])
    show = [order[0], order[len(order) // 2], order[-1]][:args.show] if args.show else []
    for c, r in zip(unseen, results):
        if c not in show:
            continue
        print(f"\n--class {c!r} (AP {corrected['per_class_ap'][c]:.3f}; {r.resolved.get('correction', 'raw')})")
        for h in r.hits[:args.top]:
            mark = "+" if class_of(h.path) == c else " "
            print(f"  {mark} {h.rank:>2} {h.score:8.4f}  {'/'.join(Path(h.path).parts[-2:])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"index": args.index, "n_photos": n, "corrected": corrected,
                                               "raw": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
