"""The default executor: this process's streaming pipeline, cut into commit-sized partitions."""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from .base import EncodedPartition, EncodeOptions, Executor


class LocalExecutor(Executor):
    """``features.pipeline.iter_feature_batches`` over the whole list (one DataLoader, so decoding
    overlaps encoding across partition boundaries); a partition ends at the first batch boundary
    at or after ``chunk_size`` paths. Features stay in memory."""

    name = "local"

    def run(self, paths: Sequence[str], backbone, opts: EncodeOptions) -> Iterator[EncodedPartition]:
        from ..features.pipeline import iter_feature_batches

        start, done = 0, 0
        pos: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        failures: list[tuple[int, str]] = []
        meta: dict = {}
        t0 = time.perf_counter()

        def cut() -> EncodedPartition:
            nonlocal start, pos, feats, failures, meta, t0
            p = EncodedPartition(start, done, np.concatenate(pos) if pos else np.zeros(0, np.int64),
                                 np.concatenate(feats) if feats else np.zeros((0, backbone.dim), np.float32),
                                 None, failures, meta, time.perf_counter() - t0)
            start, pos, feats, failures, meta, t0 = done, [], [], [], {}, time.perf_counter()
            return p

        for fb in iter_feature_batches(paths, backbone, batch_size=opts.batch_size, device=opts.device,
                                       workers=opts.workers, progress=opts.progress, desc=opts.desc):
            pos.append(fb.positions)
            feats.append(fb.features)
            failures += fb.failures
            meta.update(fb.meta)
            done += len(fb.positions) + len(fb.failures)
            if done - start >= opts.chunk_size:
                yield cut()
        if done > start:
            yield cut()
