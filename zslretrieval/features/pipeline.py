"""Images -> backbone features: reader -> decoder/preprocess -> encoder, after clip-retrieval.

CPU: ``workers`` threads (default: one per core), each taking a micro-batch of a few images
through read, hash, decode (JPEGs at a reduced DCT scale, see ``images.decode_image``),
preprocess and the forward pass with one torch thread. Decoding one micro-batch thus overlaps
the forward pass of another, and no OpenMP team spin-waits at barriers (on a loaded 2-core
machine a 2-thread forward pass was measured 10x slower than two 1-thread ones).
CUDA: reading, hashing, decoding and preprocessing run in ``torch.utils.data.DataLoader``
workers; the main process only moves batches to the device and runs the backbone. A file that
cannot be read or decoded becomes a ``(position, reason)`` failure and never stops the run.

On CUDA, batches are pinned and copied ``non_blocking``, the backbone runs under autocast
(bf16 where supported, else fp16), and if ``features.gpu_decode.GpuJpegDecoder`` is
available the workers only read JPEG bytes and decoding happens on the GPU (nvJPEG), with a
PIL fallback for every file it refuses. The CPU path never imports that module.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InvalidInputError
from ..limits import MAX_BATCH_SIZE, MAX_WORKERS, require_at_most
from .backbones import Backbone, load_backbone
from .images import ImageDecodeError, decode_image, exif_rotated, is_jpeg, read_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileMeta:
    """What was read: content hash of the exact bytes decoded, their size, the file's mtime."""

    sha256: str
    size: int
    mtime_ns: int


@dataclass
class FeatureBatch:
    """One encoded batch. ``positions`` index the input path list; features row i <-> positions[i]."""

    positions: np.ndarray                     # (b,) int64
    features: np.ndarray                      # (b, dim) float32
    failures: list[tuple[int, str]] = field(default_factory=list)
    meta: dict[int, FileMeta] = field(default_factory=dict)   # every item whose bytes were read


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda when available else cpu; asking for cuda without one is an input error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {name!r} but no CUDA device is available; use auto or cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise InvalidInputError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return torch.device(name)


def default_workers(device: str | torch.device = "cpu") -> int:
    """Workers for encoding on ``device`` (at most 8).

    CUDA: decoder processes, all cores but one, since the GPU encodes. CPU: decode+encode
    threads, one per core (each runs its forward passes with one torch thread).
    """
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.device(device).type == "cuda":
        return max(0, min(8, n - 1))
    return max(1, min(8, n))


class _ImageFiles(Dataset):
    """Item i -> (i, kind, payload, meta): kind "tensor" (preprocessed), "jpeg" (raw bytes) or "fail"."""

    def __init__(self, paths: Sequence[str], transform, raw_jpeg: bool, min_side: int | None = None):
        self.paths, self.transform, self.raw_jpeg, self.min_side = list(paths), transform, raw_jpeg, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        meta = None
        try:
            fb = read_file(self.paths[i])
            meta = FileMeta(fb.sha256, fb.size, fb.mtime_ns)
            # EXIF-rotated JPEGs stay on the PIL path, which applies the orientation
            if self.raw_jpeg and is_jpeg(fb.data) and not exif_rotated(fb.data):
                return i, "jpeg", fb.data, meta
            return i, "tensor", self.transform(decode_image(fb.data, self.min_side)), meta
        except ImageDecodeError as e:
            return i, "fail", str(e), meta
        except Exception as e:  # a bug in a transform must not kill a long run either
            return i, "fail", f"preprocessing failed ({type(e).__name__}: {e})", meta


def _collate(items):
    tensors = [(i, p) for i, kind, p, _ in items if kind == "tensor"]
    return {
        "ids": [i for i, _ in tensors],
        "x": torch.stack([p for _, p in tensors]) if tensors else None,
        "jpeg": [(i, p) for i, kind, p, _ in items if kind == "jpeg"],
        "failures": [(i, p) for i, kind, p, _ in items if kind == "fail"],
        "meta": {i: m for i, _, _, m in items if m is not None},
    }


# On CPU a large batch is slower per image than a small one: the activations of 32 images
# overflow the caches (efficientnet-lite0, 2 threads, channels_last: 49 / 65 / 71 / 48 / 29 img/s
# at batch 1 / 2 / 4 / 8 / 32). Decoding still works in --batch-size batches; the forward pass
# runs them through in slices of this size. ONNX Runtime has the same shape of curve, flatter (one
# thread, 2-core machine under load: 15.9 / 12.8 / 12.7 / 16.9 ms per image at batch 1 / 4 / 8 / 32).
CPU_MICRO_BATCH = 4


def _worker_init(_: int) -> None:
    # each decoder process is single-threaded; parallelism comes from the number of workers
    torch.set_num_threads(1)


def _gpu_decoder(backbone: Backbone, device: torch.device):
    try:
        from . import gpu_decode
        return gpu_decode.GpuJpegDecoder(backbone.preprocess, device)
    except Exception as e:  # absent module, no nvJPEG, old torchvision: decode on the CPU instead
        log.info("GPU JPEG decoding unavailable (%s: %s); decoding with PIL", type(e).__name__, e)
        return None


def _autocast(device: torch.device):
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def iter_feature_batches(paths: Sequence[str], backbone: Backbone, *, batch_size: int = 32,
                         device: str | torch.device = "auto", workers: int | None = None,
                         progress: bool = False, desc: str = "encoding", jpeg_decoder="auto") -> Iterator[FeatureBatch]:
    """Stream features of ``paths`` in input order, one :class:`FeatureBatch` per decoded batch.

    ``jpeg_decoder``: "auto" uses ``gpu_decode.GpuJpegDecoder`` on CUDA when it is available;
    None always decodes with PIL; any object with the GpuJpegDecoder ``decode`` method is used
    as given (JPEG files then reach it as raw bytes; what it refuses falls back to PIL).
    """
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size {batch_size}; expected >= 1")
    require_at_most("--batch-size", batch_size, MAX_BATCH_SIZE, "images")
    dev = resolve_device(device)
    workers = default_workers(dev) if workers is None else int(workers)
    if workers < 0:
        raise InvalidInputError(f"--workers {workers}; expected >= 0")
    require_at_most("--workers", workers, MAX_WORKERS, "processes")
    backbone.to(dev)
    # the shorter side the preprocessing resizes to: JPEGs need not be decoded any larger
    min_side = getattr(getattr(backbone, "preprocess", None), "resize", None)
    # channels_last helps both devices: tensor cores on CUDA, and on CPU oneDNN's depthwise/1x1
    # convolutions (efficientnet-lite0, 2 threads: 49 vs 37 img/s at batch 1).
    backbone.net.to(memory_format=torch.channels_last)
    if isinstance(jpeg_decoder, str):
        decoder = _gpu_decoder(backbone, dev) if dev.type == "cuda" and jpeg_decoder == "auto" else None
    else:
        decoder = jpeg_decoder
    ds = _ImageFiles(paths, backbone.transform, raw_jpeg=decoder is not None, min_side=min_side)
    if dev.type == "cpu" and decoder is None:
        yield from _iter_cpu(ds, backbone, batch_size, max(1, workers), progress, desc)
        return
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
                        pin_memory=dev.type == "cuda", worker_init_fn=_worker_init if workers else None,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    from tqdm.auto import tqdm

    with tqdm(total=len(ds), unit="img", desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        for b in loader:
            ids, parts, failures = list(b["ids"]), [], list(b["failures"])
            if b["x"] is not None:
                parts.append(b["x"].to(dev, non_blocking=True))
            if b["jpeg"]:
                gx, ok_ids, failed = decoder.decode(b["jpeg"])
                raw = dict(b["jpeg"])
                if len(ok_ids):
                    parts.append(gx)
                    ids += list(ok_ids)
                # nvJPEG refuses some files PIL can read (CMYK, progressive, odd sampling)
                fallback = []
                for i, _why in failed:
                    try:
                        fallback.append((i, backbone.transform(decode_image(raw[i], min_side))))
                    except ImageDecodeError as e:
                        failures.append((i, str(e)))
                if fallback:
                    ids += [i for i, _ in fallback]
                    parts.append(torch.stack([t for _, t in fallback]).to(dev, non_blocking=True))
            feats = np.zeros((0, backbone.dim), np.float32)
            if parts:
                x = torch.cat(parts).contiguous(memory_format=torch.channels_last)
                step = len(x) if dev.type == "cuda" else CPU_MICRO_BATCH
                with _autocast(dev):
                    feats = np.concatenate([backbone.forward(x[i:i + step]).float().cpu().numpy()
                                            for i in range(0, len(x), step)])
            order = np.argsort(np.asarray(ids, np.int64), kind="stable")
            yield FeatureBatch(np.asarray(ids, np.int64)[order], np.ascontiguousarray(feats[order]),
                               sorted(failures), dict(b["meta"]))
            bar.update(len(ids) + len(failures))


def _encode_micro(ds: _ImageFiles, backbone: Backbone, forward, positions: range):
    """One CPU task: read + decode + preprocess ``positions`` and run them through ``forward``."""
    items = [ds[i] for i in positions]
    b = _collate(items)
    feats = np.zeros((0, backbone.dim), np.float32)
    if b["x"] is not None:
        feats = forward(b["x"]).numpy()   # each CPU forward puts the batch in the layout it runs fastest on
    return b["ids"], feats, b["failures"], b["meta"]


def _one_torch_thread() -> None:
    # torch's intra-op (OpenMP) thread count is per calling thread: set it in every worker
    torch.set_num_threads(1)


def _iter_cpu(ds: _ImageFiles, backbone: Backbone, batch_size: int, threads: int, progress: bool,
              desc: str) -> Iterator[FeatureBatch]:
    """The CPU pipeline: ``threads`` workers, CPU_MICRO_BATCH images per task, batches yielded in order."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    n = len(ds)
    batches = [range(b0, min(n, b0 + batch_size)) for b0 in range(0, n, batch_size)]
    tasks = [(bi, range(m0, min(r.stop, m0 + CPU_MICRO_BATCH)))
             for bi, r in enumerate(batches) for m0 in range(r.start, r.stop, CPU_MICRO_BATCH)]
    main_threads = torch.get_num_threads()
    forward = backbone.forward
    if n:
        # the fastest CPU forward there is (ONNX Runtime, else a frozen TorchScript graph), built on
        # one preprocessed-shape batch
        spec = backbone.preprocess
        example = torch.zeros(min(CPU_MICRO_BATCH, n), 3, spec.crop, spec.crop).contiguous(memory_format=torch.channels_last)
        forward = backbone.cpu_forward(example)
    with ThreadPoolExecutor(threads, thread_name_prefix="zslr-encode", initializer=_one_torch_thread) as pool, \
            tqdm(total=n, unit="img", desc=desc, disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        pending: deque = deque()
        it = iter(tasks)
        # a bounded window of tasks in flight: memory stays at a few micro-batches per thread
        for bi, pos in it:
            pending.append((bi, pool.submit(_encode_micro, ds, backbone, forward, pos)))
            if len(pending) >= 2 * threads:
                break
        parts: list = []
        try:
            while pending:
                bi, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt[0], pool.submit(_encode_micro, ds, backbone, forward, nxt[1])))
                parts.append(fut.result())
                if not pending or pending[0][0] != bi:   # batch ``bi`` complete
                    ids = [i for p in parts for i in p[0]]
                    feats = np.concatenate([p[1] for p in parts]) if ids else np.zeros((0, backbone.dim), np.float32)
                    failures = sorted(f for p in parts for f in p[2])
                    meta = {k: v for p in parts for k, v in p[3].items()}
                    yield FeatureBatch(np.asarray(ids, np.int64), np.ascontiguousarray(feats, np.float32), failures, meta)
                    bar.update(len(batches[bi]))
                    parts = []
        finally:
            for _, fut in pending:
                fut.cancel()
            torch.set_num_threads(main_threads)


def extract_features(paths: Sequence[str | os.PathLike], backbone: Backbone | str, *, batch_size: int = 32,
                     device: str | torch.device = "auto", workers: int | None = None,
                     progress: bool = False) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Decode and encode images; unreadable ones are skipped and reported, never fatal.

    Returns ``features`` (n_ok, dim) float32 in input order, ``ok_paths`` (n_ok) and
    ``failures`` [(path, reason)].
    """
    paths = [str(p) for p in paths]
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, device=resolve_device(device))
    feats, ok, failures = [], [], []
    for fb in iter_feature_batches(paths, backbone, batch_size=batch_size, device=device, workers=workers,
                                   progress=progress):
        feats.append(fb.features)
        ok += [paths[i] for i in fb.positions]
        failures += [(paths[i], why) for i, why in fb.failures]
    x = np.concatenate(feats) if feats else np.zeros((0, backbone.dim), np.float32)
    return x, ok, failures
