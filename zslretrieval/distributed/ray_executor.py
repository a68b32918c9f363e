"""Ray executor: partitions of the path list are decoded + encoded by a pool of Ray actors.

Each actor loads the backbone once (``__init__``) and encodes whole partitions with the same
pipeline as the local executor (``features.pipeline.iter_feature_batches``); it writes the
partition's features as a *staged* file next to the index's feature store (shared storage on a
cluster) and returns only paths' metadata. The driver commits partitions in input order, so the
catalog transaction stays the single commit point and a re-run after any crash redoes only the
uncommitted partitions.

Failures: when an actor dies (its process, or the node under it), its partitions are resubmitted
to the live actors (encoding a partition is idempotent: the staged file is simply rewritten) and a
replacement actor is started, which joins when Ray can place it; each partition is retried and
each actor replaced at most ``max_restarts`` times. Every retry is logged (``ray: worker H:PID
lost ...; partition P retried``), kept in ``RayExecutor.retried`` and counted in ``describe()``
(the executor named in ``zslr index``'s summary line). Past the limit the run stops with
:class:`WorkerLostError`; every partition committed so far stays.

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
REPLACEMENT_WAIT_S = 300.0   # with no live worker left, how long a replacement may take to be placed


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
        self.retried: list[tuple[int, int, int, str, str]] = []   # (partition, start, stop, worker, why)
        self.lost: list[str] = []                                  # workers ("host:pid") that died
        self.replacements = 0
        self._weights_id = None

    def describe(self) -> str:
        if not self.workers_info:
            return "ray"
        faults = (f", {len(self.lost)} lost, {len(self.retried)} partition(s) retried, "
                  f"{self.replacements} replacement(s)") if self.retried or self.lost else ""
        return f"ray ({len(self.workers_info)} actor(s){faults})"

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

            def new_actor():
                # no restart by Ray itself: the scheduler resubmits a dead actor's partitions to live actors
                # and starts a replacement, so a restart that cannot be placed (its node is gone) blocks nothing
                return Worker.options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, max_restarts=0,
                                      max_task_retries=0).remote(
                    loader, None if opts.weights is None else str(opts.weights), plan.device, plan.threads,
                    opts.batch_size, plan.workers)

            actors = [new_actor() for _ in range(plan.actors)]
            self._weights_id = backbone.weights_id
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
            yield from self._schedule(ray, actors, new_actor, paths, opts, store, token)
        finally:
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001 - an actor on a lost node may already be gone
                    pass
            for p in store.folder.glob(f"{store.stage_prefix(token)}*"):
                p.unlink(missing_ok=True)   # partitions encoded but never committed
            if started:
                ray.shutdown()

    def _schedule(self, ray, actors, new_actor, paths, opts: EncodeOptions, store, token) -> Iterator[EncodedPartition]:
        """Submit partitions to the pool and yield them in input order.

        A partition whose actor dies (its process or its whole node) is resubmitted to a live actor,
        at most ``max_restarts`` times; the dead actor leaves the pool and a replacement is started
        (``max_restarts`` in all), joining when it is up (on a cluster that lost a node it may never
        be placed: the survivors carry on). Each retry is logged and kept in ``self.retried``.
        """
        from tqdm.auto import tqdm

        n = len(paths)
        parts = [(s, min(s + opts.chunk_size, n)) for s in range(0, n, opts.chunk_size)]
        pool = {k: a for k, a in enumerate(actors)}      # slot -> live actor
        where = {k: w for k, (w, _, _) in enumerate(self.workers_info)}
        load = {k: 0 for k in pool}
        pending: dict = {}                                # future -> (partition, slot)
        booting: dict = {}                                # info future -> (slot, actor)
        ready: dict[int, EncodedPartition] = {}
        attempts = [0] * len(parts)
        retry: list[int] = []                             # partitions to resubmit, before new ones
        nxt_submit = nxt_yield = 0
        lost_since = None
        with tqdm(total=n, unit="img", desc=opts.desc, disable=not opts.progress, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            while nxt_yield < len(parts):
                window = REORDER_WINDOW * max(1, len(pool))
                while pool:
                    k = min(pool, key=load.__getitem__)
                    if load[k] >= IN_FLIGHT_PER_ACTOR:
                        break
                    if retry:
                        i = retry.pop(0)
                    elif nxt_submit < len(parts) and nxt_submit < nxt_yield + window:
                        i, nxt_submit = nxt_submit, nxt_submit + 1
                    else:
                        break
                    s, e = parts[i]
                    pending[pool[k].encode.remote(s, list(paths[s:e]), str(store.stage_path(token, i)))] = (i, k)
                    load[k] += 1
                if not pool and not booting:
                    raise WorkerLostError(f"every Ray worker was lost and no restart is left (max_restarts "
                                          f"{self.max_restarts}); {nxt_yield} of {len(parts)} partition(s) were "
                                          "committed; run the same command again to resume")
                if not pool:   # only replacements that may never be placed (a lost node's resources)
                    lost_since = lost_since or time.perf_counter()
                    if time.perf_counter() - lost_since > REPLACEMENT_WAIT_S:
                        raise WorkerLostError(f"no Ray worker alive and none placed in {REPLACEMENT_WAIT_S:.0f} s; "
                                              f"{nxt_yield} of {len(parts)} partition(s) were committed; run the "
                                              "same command again to resume")
                done, _ = ray.wait(list(pending) + list(booting), num_returns=1, timeout=5.0)
                for f in done:
                    if f in booting:
                        k, actor = booting.pop(f)
                        try:
                            w, _, wid = ray.get(f)
                        except ray.exceptions.RayError as e:
                            self.log(f"ray: replacement actor could not start: {_cause(e)}")
                            continue
                        if wid != self._weights_id:
                            raise IncompatibleError(f"worker {w} loaded weights {wid!r}, the driver "
                                                    f"{self._weights_id!r}; every node needs the same --weights file")
                        pool[k], load[k], where[k], lost_since = actor, 0, w, None
                        self.log(f"ray: replacement actor ready at {w}")
                        continue
                    i, k = pending.pop(f)
                    load[k] = load.get(k, 1) - 1
                    try:
                        ready[i] = ray.get(f)
                    except ray.exceptions.RayTaskError as e:
                        if isinstance(e.cause, ZslrError):
                            raise e.cause from None
                        raise
                    except ray.exceptions.RayError as e:
                        attempts[i] += 1
                        if attempts[i] > self.max_restarts:
                            raise WorkerLostError(
                                f"a Ray worker died encoding paths {parts[i][0]}..{parts[i][1] - 1} "
                                f"(after {self.max_restarts} restart(s)): {_cause(e)}; {nxt_yield} of {len(parts)} "
                                f"partition(s) were committed; run the same command again to resume") from e
                        self.retried.append((i, parts[i][0], parts[i][1], where.get(k, "?"), _cause(e)))
                        self.log(f"ray: worker {where.get(k, '?')} lost ({_cause(e)}); partition {i} (paths "
                                 f"{parts[i][0]}..{parts[i][1] - 1}) retried on another worker")
                        retry.append(i)
                        retry.sort()
                        if k in pool:
                            self.lost.append(where.get(k, "?"))
                            dead = pool.pop(k)
                            try:
                                ray.kill(dead, no_restart=True)
                            except Exception:  # noqa: BLE001 - already gone is the usual case
                                pass
                            if self.replacements < self.max_restarts:
                                self.replacements += 1
                                actor = new_actor()
                                actors.append(actor)   # killed at the end like the others
                                booting[actor.info.remote()] = (len(actors) - 1, actor)
                while nxt_yield in ready:
                    p = ready.pop(nxt_yield)
                    nxt_yield += 1
                    bar.update(p.stop - p.start)
                    yield p


def _cause(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else type(e).__name__
