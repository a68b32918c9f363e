"""Ray executor: partitions of the path list are decoded + encoded by a pool of Ray actors.

Each actor loads the backbone once (``__init__``) and encodes whole partitions with the same
pipeline as the local executor (``features.pipeline.iter_feature_batches``); it writes the
partition's features as a *staged* file next to the index's feature store (shared storage on a
cluster) and returns only paths' metadata. The driver commits partitions in input order, so the
catalog transaction stays the single commit point and a re-run after any crash redoes only the
uncommitted partitions.

Failures: an actor process that dies is restarted by Ray up to ``max_restarts`` times and its
partition retried (encoding a partition is idempotent: the staged file is simply rewritten).
Past that the run stops with :class:`WorkerLostError`; every partition committed so far stays.

GPUs: when the cluster has GPUs and the device is ``auto`` or ``cuda``, there is one actor per
GPU (``num_gpus=1``), each with ``CPU / GPU`` cores for its JPEG decoder processes; otherwise one
single-threaded actor per CPU.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import IncompatibleError, InvalidInputError, ZslrError
from ..fileio import atomic_write
from .base import EncodedPartition, EncodeOptions, Executor, WorkerLostError

IN_FLIGHT_PER_ACTOR = 2      # a queued partition per actor hides the driver round trip
REORDER_WINDOW = 4           # partitions per actor that may finish ahead of the next commit


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise IncompatibleError(f"--executor ray needs Ray: pip install 'zslretrieval[ray]' ({e})") from e
    return ray


class EncoderWorker:
    """Ray actor body: one backbone, loaded once; ``encode`` does one partition."""

    def __init__(self, loader, weights: str | None, device: str, threads: int, batch_size: int, workers: int):
        import torch

        from ..features.pipeline import resolve_device

        torch.set_num_threads(max(1, threads))
        self.device = resolve_device(device)
        self.backbone = loader(weights, str(self.device)).to(self.device)
        self.batch_size, self.workers = batch_size, workers
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def info(self) -> tuple[str, str, str]:
        return self.where, str(self.device), self.backbone.weights_id

    def encode(self, start: int, paths: list[str], stage_path: str) -> EncodedPartition:
        from ..features.pipeline import iter_feature_batches

        t0 = time.perf_counter()
        pos, feats, failures, meta = [], [], [], {}
        for fb in iter_feature_batches(paths, self.backbone, batch_size=self.batch_size, device=self.device,
                                       workers=self.workers, progress=False):
            pos.append(fb.positions + start)
            feats.append(fb.features)
            failures += [(i + start, why) for i, why in fb.failures]
            meta.update({i + start: m for i, m in fb.meta.items()})
        x = np.concatenate(feats) if feats else np.zeros((0, self.backbone.dim), np.float32)
        staged = None
        if len(x):
            from pathlib import Path

            staged = Path(stage_path)
            if not staged.parent.is_dir():
                raise InvalidInputError(f"worker {self.where} cannot see the feature store {staged.parent}; "
                                        "index folders must be on storage shared by every node")
            atomic_write(staged, lambda f: np.save(f, np.ascontiguousarray(x, np.float32), allow_pickle=False))
        positions = np.concatenate(pos) if pos else np.zeros(0, np.int64)
        return EncodedPartition(start, start + len(paths), positions, None, staged, failures, meta,
                                time.perf_counter() - t0, self.where)


@dataclass
class _Plan:
    actors: int
    num_cpus: float
    num_gpus: float
    device: str
    threads: int
    workers: int


class RayExecutor(Executor):
    """Encode on a Ray cluster (``address`` None: a local one is started and shut down again).

    ``actors``: pool size (default: one per GPU, else one per CPU); ``max_restarts``: how often a
    dead actor is restarted (and its partition retried) before the run gives up.
    """

    name = "ray"

    def __init__(self, address: str | None = None, actors: int | None = None, max_restarts: int = 2,
                 init_kwargs: dict | None = None, log=None):
        if actors is not None and actors < 1:
            raise InvalidInputError(f"--ray-actors {actors}; expected >= 1")
        if max_restarts < 0:
            raise InvalidInputError(f"max_restarts {max_restarts}; expected >= 0")
        self.address, self.n_actors, self.max_restarts = address, actors, max_restarts
        self.init_kwargs = init_kwargs or {}
        self.log = log or (lambda msg: None)
        self.startup_seconds = 0.0
        self.workers_info: list[tuple[str, str, str]] = []

    def describe(self) -> str:
        return f"ray ({len(self.workers_info)} actor(s))" if self.workers_info else "ray"

    def _plan(self, ray, opts: EncodeOptions) -> _Plan:
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        dev = str(opts.device)
        if dev.startswith("cuda") and gpus < 1:
            raise InvalidInputError(f"--device {dev!r} but the Ray cluster has no GPU (resources: {cpus:g} CPU); "
                                    "use auto or cpu")
        if gpus >= 1 and dev != "cpu":
            n = self.n_actors or int(gpus)
            per_cpu = max(1.0, (cpus - 1) // max(1, int(gpus)))   # one core left for the driver
            workers = opts.workers if opts.workers is not None else max(0, int(per_cpu) - 1)
            plan = _Plan(n, per_cpu, 1, "cuda", 1, workers)
        else:
            n = self.n_actors or max(1, int(cpus))
            plan = _Plan(n, 1, 0, "cpu", 1, opts.workers or 0)
        if plan.actors * plan.num_cpus > cpus or plan.actors * plan.num_gpus > gpus:
            raise InvalidInputError(f"{plan.actors} Ray actor(s) of {plan.num_cpus:g} CPU / {plan.num_gpus:g} GPU do not fit "
                                    f"the cluster ({cpus:g} CPU, {gpus:g} GPU); use --ray-actors <= "
                                    f"{int(min(cpus // plan.num_cpus, gpus // plan.num_gpus if plan.num_gpus else 1e9))}")
        return plan

    def run(self, paths: Sequence[str], backbone, opts: EncodeOptions) -> Iterator[EncodedPartition]:
        from ..features.backbones import BACKBONES
        from ..index.store import FeatureStore

        if opts.stage_dir is None:
            raise InvalidInputError("the Ray executor needs a stage_dir (the index's feature store folder)")
        ray = import_ray()
        t0 = time.perf_counter()
        started = False
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise InvalidInputError(f"cannot connect to Ray at --ray-address {self.address!r}: {e}") from e
            started = True
        store = FeatureStore(opts.stage_dir)
        store.folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        actors = []
        try:
            plan = self._plan(ray, opts)
            loader = BACKBONES.get(backbone.name)   # pickled by reference: workers import its module
            Worker = ray.remote(EncoderWorker)
            actors = [Worker.options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=self.max_restarts,
                                     max_task_retries=self.max_restarts)
                      .remote(loader, None if opts.weights is None else str(opts.weights), plan.device, plan.threads,
                              opts.batch_size, plan.workers) for _ in range(plan.actors)]
            try:
                self.workers_info = ray.get([a.info.remote() for a in actors])
            except ray.exceptions.RayError as e:
                raise WorkerLostError(f"Ray workers could not load backbone {backbone.name!r}: {_cause(e)}") from e
            for where, _, wid in self.workers_info:
                if wid != backbone.weights_id:
                    raise IncompatibleError(f"worker {where} loaded {backbone.name} weights {wid!r}, the driver "
                                            f"{backbone.weights_id!r}; every node needs the same --weights file")
            self.startup_seconds = time.perf_counter() - t0
            self.log(f"ray: {plan.actors} actor(s) on {plan.device} ready in {self.startup_seconds:.1f} s "
                     f"({len({w.split(':')[0] for w, _, _ in self.workers_info})} node(s))")
            yield from self._schedule(ray, actors, paths, opts, store, token)
        finally:
            for a in actors:
                ray.kill(a)
            for p in store.folder.glob(f"{store.stage_prefix(token)}*"):
                p.unlink(missing_ok=True)   # partitions encoded but never committed
            if started:
                ray.shutdown()

    def _schedule(self, ray, actors, paths, opts: EncodeOptions, store, token) -> Iterator[EncodedPartition]:
        from tqdm.auto import tqdm

        n = len(paths)
        parts = [(s, min(s + opts.chunk_size, n)) for s in range(0, n, opts.chunk_size)]
        load = [0] * len(actors)
        pending: dict = {}
        ready: dict[int, EncodedPartition] = {}
        nxt_submit = nxt_yield = 0
        window = REORDER_WINDOW * len(actors)
        with tqdm(total=n, unit="img", desc=opts.desc, disable=not opts.progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            while nxt_yield < len(parts):
                while nxt_submit < len(parts) and nxt_submit < nxt_yield + window:
                    a = min(range(len(actors)), key=load.__getitem__)
                    if load[a] >= IN_FLIGHT_PER_ACTOR:
                        break
                    s, e = parts[nxt_submit]
                    f = actors[a].encode.remote(s, list(paths[s:e]), str(store.stage_path(token, nxt_submit)))
                    pending[f] = (nxt_submit, a)
                    load[a] += 1
                    nxt_submit += 1
                done, _ = ray.wait(list(pending), num_returns=1)
                for f in done:
                    i, a = pending.pop(f)
                    load[a] -= 1
                    try:
                        ready[i] = ray.get(f)
                    except ray.exceptions.RayTaskError as e:
                        if isinstance(e.cause, ZslrError):
                            raise e.cause from None
                        raise
                    except ray.exceptions.RayError as e:
                        raise WorkerLostError(
                            f"a Ray worker died encoding paths {parts[i][0]}..{parts[i][1] - 1} "
                            f"(after {self.max_restarts} restart(s)): {_cause(e)}; {nxt_yield} of {len(parts)} "
                            f"partition(s) were committed; run the same command again to resume") from e
                while nxt_yield in ready:
                    p = ready.pop(nxt_yield)
                    nxt_yield += 1
                    bar.update(p.stop - p.start)
                    yield p


def _cause(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__
