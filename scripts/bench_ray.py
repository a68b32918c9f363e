#!/usr/bin/env python
"""Ingestion on Ray against the local executor, same images, same run; per-image costs for docs/scale.md.

1. Per-image costs, one thread each: read + JPEG decode + resize/crop (PIL), backbone forward
   (micro-batches of 4, as the CPU pipeline runs it), write (feature shard + catalog transaction
   per chunk, then the FAISS add at the end).
2. ``index_images`` with the local executor (the baseline), then with the Ray executor on a local
   Ray started here (its start-up timed apart: ``ray.init``, then actors + backbone loads).
3. The two indexes compared: ``check_index`` clean, same catalog paths and ids, max |feature diff|.

    python scripts/bench_ray.py                       # 96 generated 500x375 JPEGs
    python scripts/bench_ray.py --images ../shared/data/photos/awa2/JPEGImages
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_index import make_jpegs  # noqa: E402


def per_image_costs(paths, backbone_name: str, folder: Path, chunk: int = 256) -> dict[str, float]:
    import torch

    from zslretrieval.features import load_backbone
    from zslretrieval.features.images import decode_image, read_file
    from zslretrieval.features.pipeline import CPU_MICRO_BATCH, FileMeta
    from zslretrieval.index.writer import ChunkItem, IndexWriter

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    bb = load_backbone(backbone_name)
    bb.net.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    xs = [bb.transform(decode_image(read_file(p).data)) for p in paths]
    t_decode = (time.perf_counter() - t0) / len(paths)
    x = torch.stack(xs).contiguous(memory_format=torch.channels_last)
    bb.forward(x[:CPU_MICRO_BATCH])  # warm-up
    t0 = time.perf_counter()
    feats = np.concatenate([bb.forward(x[i:i + CPU_MICRO_BATCH]).numpy() for i in range(0, len(x), CPU_MICRO_BATCH)])
    t_backbone = (time.perf_counter() - t0) / len(paths)
    torch.set_num_threads(before)
    # write: 16 commits of the default --chunk-size, rows from the real features
    n = 16 * chunk
    rows = np.resize(feats, (n, feats.shape[1]))
    with IndexWriter(folder / "write-cost") as w:
        w.init_manifest(source="images", backbone=bb.name, backbone_weights=bb.weights_id, feature_dim=bb.dim,
                        index_type=None, search_params=None)
        t0 = time.perf_counter()
        for s in range(0, n, chunk):
            items = [ChunkItem(f"/bench/{i}.jpg", None, FileMeta(f"{i:064x}", 1, 0)) for i in range(s, min(n, s + chunk))]
            w.commit_chunk(items, rows[s:s + len(items)], [])
        t_commit = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        w.sync_index()
        t_faiss = (time.perf_counter() - t0) / n
    return {"decode": t_decode, "backbone": t_backbone, "commit": t_commit, "faiss_add": t_faiss}


def compare(a: Path, b: Path) -> tuple[bool, bool, float]:
    from zslretrieval.index import check_index, open_index

    clean = check_index(a).ok and check_index(b).ok
    q = "select i.path, e.faiss_id, i.id from images i left join index_entries e on e.image_id = i.id order by i.id"
    with sqlite3.connect(a / "catalog.sqlite") as ca, sqlite3.connect(b / "catalog.sqlite") as cb:
        same = ca.execute(q).fetchall() == cb.execute(q).fetchall()
    ia, ib = open_index(a), open_index(b)
    (_, xa), (_, xb) = ia.raw_features(), ib.raw_features()
    ia.close()
    ib.close()
    return clean, same, float(np.abs(xa - xb).max()) if len(xa) == len(xb) else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="folder of images [default: generate --generate JPEGs]")
    ap.add_argument("--generate", type=int, default=96)
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--chunk-size", type=int, default=16, help="paths per partition / commit")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import ray
    import torch

    from zslretrieval.ingest import IndexConfig, index_images

    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(cpus)  # the local baseline uses every core (bench_index's import set OMP to 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.images:
            src = args.images
            paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        else:
            src = tmp / "imgs"
            src.mkdir()
            paths = make_jpegs(src, args.generate, args.seed)
        cost = per_image_costs(paths, args.backbone, tmp)
        cfg = dict(inputs=[src], root=tmp, backbone=args.backbone, device="cpu", chunk_size=args.chunk_size)
        local = index_images(IndexConfig(name="local", **cfg))
        torch.set_num_threads(1)  # on a loaded machine a second OpenMP thread mostly spin-waits
        local1 = index_images(IndexConfig(name="local1", **cfg))
        torch.set_num_threads(cpus)
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        t_ray_init = time.perf_counter() - t0
        try:
            rr = index_images(IndexConfig(name="ray", executor="ray", **cfg))
        finally:
            ray.shutdown()
        clean, same, diff = compare(tmp / "local", tmp / "ray")

    print(f"\n{len(paths)} images ({'generated 500x375 JPEGs' if not args.images else args.images}), {args.backbone}, "
          f"chunk {args.chunk_size}, {cpus} cores, torch CPU\n")
    print("| per image, 1 thread (commit, faiss_add: chunks of 256) | ms |\n|---|---|")
    for k, v in cost.items():
        print(f"| {k} | {v * 1e3:.2f} |")
    print("\n| executor | start-up s | encode s | img/s | vs local |\n|---|---|---|---|---|")
    print(f"| local (1 process, {cpus} torch threads) | 0 | {local.encode_seconds:.1f} | {local.images_per_s:.1f} | 1.00x |")
    print(f"| local (1 process, 1 torch thread) | 0 | {local1.encode_seconds:.1f} | {local1.images_per_s:.1f} | "
          f"{local1.images_per_s / max(local.images_per_s, 1e-9):.2f}x |")
    print(f"| {rr.executor}, 1 thread each | ray.init {t_ray_init:.1f} + actors {rr.startup_seconds:.1f} | "
          f"{rr.encode_seconds:.1f} | {rr.images_per_s:.1f} | {rr.images_per_s / max(local.images_per_s, 1e-9):.2f}x |")
    print(f"\nzslr check clean on both: {clean}; same paths, catalog ids and faiss ids: {same}; "
          f"max |feature difference| {diff:.2e}")
    return 0 if clean and same and diff < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
