#!/usr/bin/env python
"""GPU benchmark: exact search and image ingestion, each against a floor and a baseline measured
in the same run.

Search: generated unit vectors (1M x 2048 and 10M x 256 by default, generated on the device in
chunks), 1 and 1,000 queries, k=100, for every available backend: torch fp16 / bf16 scan + fp32
re-rank (exact), torch fp32 scan (baseline on the same device), FAISS GPU Flat if this faiss build
sees a GPU, and FAISS CPU Flat on a 1% subset with its time scaled by 100 (labelled as such).
Floor = max(database bytes scanned / HBM bandwidth, 2 nq n d FLOPs / peak).

Ingestion: a few thousand generated 500x375 JPEGs in a temp dir, through ResNet-101 (random-init
weights: throughput does not depend on them) in bf16 channels_last, with (a) PIL decode + transform
in DataLoader workers and (b) nvJPEG batched decode + on-device resize/crop/normalise. Floor =
model FLOPs per image (counted by torch's FlopCounterMode, ~2 x 7.8e9 at 224 px) / peak.

    python scripts/bench_gpu.py                    # full run on a GPU (H100 defaults for the floor)
    python scripts/bench_gpu.py --quick --device cpu   # small sizes, < 1 min on a CPU: checks it runs
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zslretrieval.features.gpu_decode import (GpuJpegDecoder, PreprocessSpec,  # noqa: E402
                                              apply_cuda_fast_paths, prefetch_to_device)
from zslretrieval.index.searchers import FaissSearcher, TorchSearcher  # noqa: E402
from zslretrieval.index.searchers.faiss_searcher import faiss_num_gpus  # noqa: E402


@dataclass
class SearchRow:
    backend: str
    n: int
    d: int
    nq: int
    k: int
    seconds: float        # median latency of one search call (nq queries), end to end incl. D2H
    scanned_bytes: float  # bytes of the database one call must read
    note: str = ""

    def floor(self, bw: float, peak: float) -> float:
        return max(self.scanned_bytes / bw, 2.0 * self.nq * self.n * self.d / peak)


@dataclass
class IngestRow:
    pipeline: str
    images: int
    seconds: float
    flops_per_image: float  # 0 for decode-only rows
    note: str = ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn: Callable[[], object], device: torch.device, *, min_reps: int = 3, budget_s: float = 1.0) -> float:
    """Median wall time of ``fn`` after one warm-up call; repeats until ``budget_s`` or 20 reps."""
    fn()
    sync(device)
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < t_end and len(times) < 20):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def unit_vectors(n: int, d: int, device: torch.device, seed: int, chunk: int = 1 << 18):
    """Yield (start, (rows, d) fp32 unit vectors on ``device``) without materialising all n on the host."""
    g = torch.Generator(device=device).manual_seed(seed)
    for i0 in range(0, n, chunk):
        x = torch.randn(min(chunk, n - i0), d, device=device, generator=g)
        yield i0, x / x.norm(dim=1, keepdim=True)


# -- search ------------------------------------------------------------------------------------------
def bench_search(n: int, d: int, nqs: list[int], k: int, device: torch.device, seed: int,
                 faiss_cpu_fraction: float, budget_s: float) -> list[SearchRow]:
    rows: list[SearchRow] = []
    queries = {nq: next(unit_vectors(nq, d, device, seed + 1))[1].cpu().numpy() for nq in nqs}

    for dtype in ("fp16", "bf16", "fp32"):
        s = TorchSearcher(d, "ip", device=str(device), dtype=dtype)
        s.reserve(n)
        for i0, x in unit_vectors(n, d, device, seed):
            s.add(x, np.arange(i0, i0 + len(x), dtype=np.int64))
        elem = 4 if dtype == "fp32" else 2
        label = f"torch {dtype} scan" + (" + fp32 re-rank (exact)" if dtype != "fp32" else " (exact; baseline)")
        for nq in nqs:
            s.stats.update(queries=0, widened=0, exact_fallback=0)
            t = timeit(lambda s=s, nq=nq: s.search(queries[nq], k), device, budget_s=budget_s)
            st = s.stats
            note = f"widened {st['widened'] / max(1, st['queries']):.1%}" if dtype != "fp32" else ""
            rows.append(SearchRow(f"{label} [{device.type}]", n, d, nq, k, t, n * d * elem, note))
        del s
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if faiss_num_gpus() > 0 and device.type == "cuda":
        f = FaissSearcher(d, "ip", device="cuda")
        for i0, x in unit_vectors(n, d, device, seed):
            f.add(x.cpu().numpy(), np.arange(i0, i0 + len(x), dtype=np.int64))
        for nq in nqs:
            t = timeit(lambda: f.search(queries[nq], k), device, budget_s=budget_s)
            rows.append(SearchRow("faiss-gpu Flat fp32 (exact)", n, d, nq, k, t, n * d * 4))
        del f
        gc.collect()

    # CPU FAISS on a subset: the full database would take minutes per query batch
    n_sub = max(min(n, 2000), int(n * faiss_cpu_fraction))
    f = FaissSearcher(d, "ip", device="cpu")
    for i0, x in unit_vectors(n_sub, d, device, seed):
        f.add(x.cpu().numpy(), np.arange(i0, i0 + len(x), dtype=np.int64))
    scale = n / n_sub
    for nq in nqs:
        t = timeit(lambda: f.search(queries[nq], k), torch.device("cpu"), budget_s=budget_s)
        note = f"measured on {n_sub:,} vectors, time x{scale:g}" if scale != 1 else ""
        rows.append(SearchRow(f"faiss-cpu Flat fp32 ({os.cpu_count()} cores)", n, d, nq, k, t * scale, n * d * 4, note))
    return rows


# -- ingestion ---------------------------------------------------------------------------------------
def make_jpegs(folder: Path, count: int, seed: int, size=(500, 375)) -> list[Path]:
    """Photo-like (smooth) random JPEGs; a few distinct images re-encoded with different noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    bases = [Image.fromarray(rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8))
             .resize(size, Image.BILINEAR) for _ in range(8)]
    for i in range(count):
        arr = np.asarray(bases[i % len(bases)], dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
        p = folder / f"img_{i:05d}.jpg"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


class PilDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], spec: PreprocessSpec):
        self.paths, self.tf = paths, spec.pil_transform()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB"))


class BytesDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, bytes]:
        return i, self.paths[i].read_bytes()


def _list_collate(batch):
    return batch


def count_flops(model: torch.nn.Module, crop: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    m = model.eval().cpu()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        m(torch.zeros(1, 3, crop, crop))
    return float(fc.get_total_flops())


def bench_ingest(count: int, model_name: str, crop: int, batch: int, workers: int, device: torch.device,
                 seed: int) -> list[IngestRow]:
    import torchvision

    spec = PreprocessSpec(resize=crop * 256 // 224, crop=crop)
    model = getattr(torchvision.models, model_name)(weights=None)  # random init: throughput only
    flops = count_flops(model, crop)
    bf16 = device.type == "cuda"  # CPUs without AMX run bf16 convolutions slower than fp32
    fast = apply_cuda_fast_paths(model, device, bf16=bf16)
    prec = "bf16 channels_last" if bf16 else "fp32 channels_last"
    pin = device.type == "cuda"
    rows: list[IngestRow] = []
    with tempfile.TemporaryDirectory(prefix="zslr_bench_") as tmp:
        paths = make_jpegs(Path(tmp), count, seed)

        def pil_loader():
            return torch.utils.data.DataLoader(PilDataset(paths, spec), batch_size=batch, num_workers=workers,
                                               pin_memory=pin, persistent_workers=False)

        decoder = GpuJpegDecoder(spec, device)

        def bytes_loader():
            return torch.utils.data.DataLoader(BytesDataset(paths), batch_size=batch, num_workers=workers,
                                               collate_fn=_list_collate)

        def run_pil(with_model: bool) -> None:
            for x in prefetch_to_device(pil_loader(), device):
                if with_model:
                    fast(x)
            sync(device)

        def run_gpu(with_model: bool) -> None:
            for items in bytes_loader():
                x, ok, failed = decoder.decode(items)
                assert not failed, failed[:3]
                if with_model:
                    fast(x)
            sync(device)

        # warm-up: cuDNN autotuning, worker start-up code paths, nvJPEG handles
        fast(decoder.decode([BytesDataset(paths)[i] for i in range(min(batch, count))])[0])
        sync(device)
        dec_name = "nvJPEG batched decode" if device.type == "cuda" else "torchvision decode_jpeg (CPU stand-in)"
        for label, fn, with_model in (
                (f"PIL decode+transform, {workers} workers (baseline)", run_pil, False),
                (f"{dec_name} + on-device resize/crop/norm", run_gpu, False),
                (f"PIL workers -> {model_name} {prec} (baseline)", run_pil, True),
                (f"{dec_name} -> {model_name} {prec}", run_gpu, True)):
            t0 = time.perf_counter()
            fn(with_model)
            rows.append(IngestRow(label, count, time.perf_counter() - t0, flops if with_model else 0.0,
                                  "random-init weights" if with_model else "decode only"))
    return rows


# -- report ------------------------------------------------------------------------------------------
def print_search(rows: list[SearchRow], bw: float, peak: float) -> None:
    print(f"\n### Search (k={rows[0].k if rows else '-'}, unit vectors, inner product)\n")
    print(f"floor = max(bytes scanned / {bw:.3g} B/s, 2 nq n d / {peak:.3g} FLOP/s)\n")
    print("| backend | n x d | queries | latency ms | queries/s | floor ms | x floor | note |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        fl = r.floor(bw, peak)
        print(f"| {r.backend} | {r.n:,} x {r.d} | {r.nq:,} | {r.seconds * 1e3:.3f} | {r.nq / r.seconds:,.0f} | "
              f"{fl * 1e3:.4f} | {r.seconds / fl:,.1f} | {r.note} |")


def print_ingest(rows: list[IngestRow], peak: float, crop: int) -> None:
    print(f"\n### Ingestion ({rows[0].images if rows else 0} generated 500x375 JPEGs, {crop} px crop)\n")
    print(f"floor = model FLOPs per image / {peak:.3g} FLOP/s (decode-only rows have no floor)\n")
    print("| pipeline | img/s | ms/img | GFLOP/img | floor img/s | x floor | note |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        ips = r.images / r.seconds
        if r.flops_per_image:
            floor_ips = peak / r.flops_per_image
            extra = f"{r.flops_per_image / 1e9:.2f} | {floor_ips:,.0f} | {floor_ips / ips:,.1f}"
        else:
            extra = "- | - | -"
        print(f"| {r.pipeline} | {ips:,.1f} | {1e3 / ips:.3f} | {extra} | {r.note} |")


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        n, d = part.lower().split("x")
        out.append((int(float(n)), int(d)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes; runs on a CPU in < 1 minute")
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    ap.add_argument("--sizes", help="comma list of NxD (default 1000000x2048,10000000x256)")
    ap.add_argument("--queries", default="1,1000", help="comma list of query batch sizes")
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument("--images", type=int, help="JPEGs to generate for ingestion (default 3000)")
    ap.add_argument("--model", default="resnet101", help="torchvision model name (random init)")
    ap.add_argument("--crop", type=int, help="input size (default 224)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--hbm-bandwidth", type=float, default=3.35e12, help="B/s (default H100 SXM)")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="dense fp16/bf16 FLOP/s (default H100 SXM)")
    ap.add_argument("--faiss-cpu-fraction", type=float, default=0.01)
    ap.add_argument("--skip-search", action="store_true")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    if a.quick:
        sizes = parse_sizes(a.sizes or "20000x256,50000x64")
        nqs = [int(x) for x in (a.queries if a.queries != "1,1000" else "1,100").split(",")]
        images, crop, batch, workers, budget = a.images or 12, a.crop or 64, min(a.batch, 4), min(a.workers, 1), 0.05
        model = a.model if a.model != "resnet101" else "resnet18"  # ResNet-101 takes ~1 s/img on 2 CPU cores
        fraction = 1.0
    else:
        sizes = parse_sizes(a.sizes or "1000000x2048,10000000x256")
        nqs = [int(x) for x in a.queries.split(",")]
        images, crop, batch, workers, budget = a.images or 3000, a.crop or 224, a.batch, a.workers, 1.0
        model, fraction = a.model, a.faiss_cpu_fraction
    torch.manual_seed(a.seed)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"device {device} ({gpu}); torch {torch.__version__}; faiss GPUs {faiss_num_gpus()}; "
          f"seed {a.seed}; {'quick' if a.quick else 'full'} mode")
    if device.type != "cuda":
        print("NOTE: no GPU -- timings are CPU timings; the floors still use the GPU figures given by flags")

    t_start = time.perf_counter()
    if not a.skip_search:
        rows: list[SearchRow] = []
        for n, d in sizes:
            rows += bench_search(n, d, nqs, a.k, device, a.seed, fraction, budget)
        print_search(rows, a.hbm_bandwidth, a.peak_flops)
    if not a.skip_ingest:
        print_ingest(bench_ingest(images, model, crop, batch, workers, device, a.seed), a.peak_flops, crop)
    print(f"\ntotal wall time {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
