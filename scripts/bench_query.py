#!/usr/bin/env python
"""Latency of zslr's query path against a raw FAISS search of the same index, in one run.

Engine path = what ``zslr query --attributes ...`` does after the index is open (``QueryEngine.run``):
parse the attribute list, build + normalise the descriptor, project it with the model, search the
index and fetch the catalog records of the hits. The single-query breakdown times the stages run()
takes (its lean attribute path where it applies: see ``single_query_stages``). Baseline =
``faiss.Index.search`` on the very FAISS index the engine searches, with the already-projected query
vectors. Their ratio is the engine's overhead. Measured for single queries (one call per
query) and for a batch of 1,000 queries in one call.

    python scripts/bench_query.py                      # synthetic gallery (50k), fresh temp index
    python scripts/bench_query.py --index awa1-test --index-root indexes   # an existing index

Prints markdown tables (latency percentiles in ms per call, queries/s).
"""
from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from zslretrieval.query import QueryEngine, QuerySpec


def build_synthetic_index(root: Path, n_gallery: int, feature_dim: int, n_attributes: int, model_name: str,
                          seed: int) -> object:
    """Fit ``model_name`` on a small synthetic benchmark, then index ``n_gallery`` generated images."""
    from zslretrieval.data.synthetic import make_synthetic
    from zslretrieval.ingest import index_features
    from zslretrieval.models import create_model
    from zslretrieval.models.checkpoint import ModelCard, save_checkpoint

    n_classes = 40
    ds = make_synthetic(n_classes=n_classes, n_unseen=8, n_val=6, n_attributes=n_attributes,
                        images_per_class=max(20, -(-n_gallery // n_classes)), feature_dim=feature_dim, seed=seed)
    tr = ds.split_indices("trainval")
    seen = np.unique(ds.labels[tr])
    remap = {int(c): i for i, c in enumerate(seen)}
    model = create_model(model_name, ds.feature_dim, [ds.semantic_dim])
    x = torch.from_numpy(ds.features[tr][:20000])
    y = torch.tensor([remap[int(c)] for c in ds.labels[tr][:20000]])
    model.fit(x, y, torch.from_numpy(ds.attributes[seen]), seed=seed)
    card = ModelCard(model=model.name, hparams=model.hparams.to_dict(), feature_dim=ds.feature_dim,
                     semantic_dims=[ds.semantic_dim], dataset=ds.name, metric=model.metric,
                     class_names=list(ds.class_names), vocabulary=list(ds.attribute_names), semantic_norm="l2")
    ckpt = save_checkpoint(model, card, root / "model.pt", torch.from_numpy(ds.attributes))
    rows = np.arange(n_gallery) % len(ds.features)
    paths = [f"synthetic/{i}" for i in range(n_gallery)]
    labels = [ds.class_names[int(ds.labels[r])] for r in rows]
    return index_features("bench", ds.features[rows], paths, labels, model_checkpoint=ckpt, root=root / "indexes")


def raw_faiss_index(index) -> faiss.Index:
    """The FAISS index the OpenIndex searches (its ``index`` attribute), else its file read on its own."""
    if isinstance(getattr(index, "index", None), faiss.Index):
        return index.index
    folder = Path(index.manifest.folder)
    path = folder / index.manifest.index_file
    if not path.is_file():
        sys.exit(f"no FAISS file {path}")
    return faiss.read_index(str(path))


def random_specs(vocab: list[str], n: int, seed: int) -> list[QuerySpec]:
    """Queries like ``black, water=0.7, -stripes`` drawn from the vocabulary."""
    rng = random.Random(seed)
    specs = []
    for _ in range(n):
        names = rng.sample(vocab, min(len(vocab), rng.randint(2, 5)))
        items = [names[0], f"{names[1]}={rng.uniform(0.2, 1.0):.2f}"] + [f"-{x}" for x in names[2:3]] + names[3:]
        specs.append(QuerySpec("attributes", ", ".join(items)))
    return specs


def single_query_stages(engine: QueryEngine, spec: QuerySpec, k: int | None) -> tuple[tuple[str, ...], list[float], list]:
    """``engine.run([spec], k)`` split into the stages it takes, each timed: (stage names, seconds of
    [parse+build, project, search, records], results).

    An attribute list on an affine "ip" model takes run()'s lean path: ``_attribute_descriptors``,
    ``_attribute_embed``, the index's ``search_unchecked`` and ``collect``; elsewhere (no lean
    path, or a query it steps aside for) the general one: ``prepare_all``, ``embed``,
    ``search_vectors``, ``collect``. With score-correction terms both search by ``search_vectors``.
    """
    t0 = time.perf_counter()
    lean = engine._lean_setup()
    built = engine._attribute_descriptors([spec], lean) if lean is not None else None
    t1 = time.perf_counter()
    xq = engine._attribute_embed(built[1], lean) if built is not None else None
    t2 = time.perf_counter()
    on_lean = xq is not None
    if on_lean:
        prepared = built[0]
        names = ["parse+build (lean: _attribute_descriptors)", "project (lean: _attribute_embed)"]
    else:
        t0 = time.perf_counter()
        prepared, descriptors = engine.prepare_all([spec])
        t1 = time.perf_counter()
        xq = engine.embed(prepared, descriptors)
        t2 = time.perf_counter()
        names = ["parse+build (general: prepare_all)", "project (general: embed)"]
    if engine.terms is not None:
        fix = engine.corrects(prepared[0])
        D, I = engine.search_vectors(xq, k, corrected=fix)
        if fix:
            prepared[0].resolved["correction"] = engine.terms.correction.describe()
        names.append("search (search_vectors, score correction)")
    elif on_lean:
        D, I = engine._search_unchecked(xq, k)
        names.append("search (search_unchecked)")
    else:
        D, I = engine.search_vectors(xq, k)
        names.append("search (search_vectors)")
    t3 = time.perf_counter()
    results = engine.collect(prepared, D, I)
    return (*names, "records (collect)"), [t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3], results


def timed_pair(fa, fb, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of ``repeats`` calls of ``fa`` and of ``fb``, interleaved call by call: (repeats, 2) arrays
    of [wall clock, this thread's CPU time] each.

    Interleaving matters on a shared machine: a burst of load from other processes then hits
    both paths alike instead of skewing one measurement. CPU time (``time.thread_time``) leaves
    out the time spent waiting for a core, which dominates wall clock on an oversubscribed
    machine; with one thread it is the work the call does. One warm-up call of each first.
    """
    fa(), fb()
    ta, tb = np.empty((repeats, 2)), np.empty((repeats, 2))
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fa()
        t1, c1 = time.perf_counter(), time.thread_time()
        fb()
        t2, c2 = time.perf_counter(), time.thread_time()
        ta[i], tb[i] = (t1 - t0, c1 - c0), (t2 - t1, c2 - c1)
    return ta, tb


def row(mode: str, path: str, secs: np.ndarray, per_call: int, base: np.ndarray | None) -> str:
    p50, p95 = np.percentile(secs[:, 0], 50), np.percentile(secs[:, 0], 95)
    cpu50 = np.percentile(secs[:, 1], 50)
    qps = per_call / secs[:, 0].mean()
    if base is None:
        ratio = cpu_ratio = "1.00x (baseline)"
    else:
        ratio = f"{p50 / np.percentile(base[:, 0], 50):.2f}x"
        cpu_ratio = f"{cpu50 / np.percentile(base[:, 1], 50):.2f}x"
    return f"| {mode} | {path} | {p50 * 1e3:.3f} | {p95 * 1e3:.3f} | {qps:,.0f} | {ratio} | {cpu50 * 1e3:.3f} | {cpu_ratio} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", help="bench an existing index (name or folder) instead of a synthetic one")
    ap.add_argument("--index-root", default=None)
    ap.add_argument("--n-gallery", type=int, default=50_000)
    ap.add_argument("--feature-dim", type=int, default=512)
    ap.add_argument("--n-attributes", type=int, default=85)
    ap.add_argument("--model", default="eszsl", help="model fitted for the synthetic index")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--single", type=int, default=200, help="single queries timed (one call each)")
    ap.add_argument("--batch", type=int, default=1000, help="queries in the batched call")
    ap.add_argument("--repeats", type=int, default=10, help="timed repeats of the batched call")
    # One thread by default: on a loaded machine OpenMP spin-waiting makes multi-threaded single-query
    # FAISS searches 50x slower and the numbers meaningless; 0 keeps the libraries' defaults.
    ap.add_argument("--threads", type=int, default=1, help="torch + faiss threads (0: library defaults)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    from zslretrieval.index import open_index

    tmp = None
    if args.index:
        index = open_index(args.index, root=args.index_root)
        source = f"index {args.index}"
    else:
        tmp = tempfile.TemporaryDirectory(prefix="zslr-bench-")
        t0 = time.perf_counter()
        index = build_synthetic_index(Path(tmp.name), args.n_gallery, args.feature_dim, args.n_attributes,
                                      args.model, args.seed)
        source = (f"synthetic gallery, {args.model} fitted on synthetic data (seed {args.seed}), "
                  f"built in {time.perf_counter() - t0:.0f} s")
    try:
        engine = QueryEngine(index)
        raw = raw_faiss_index(index)
        k = args.top_k
        specs = random_specs(engine.vocabulary.names, max(args.single, args.batch), args.seed)
        # The baseline gets the exact vectors the engine would search with, computed outside the clock.
        xq = engine.embed([engine.prepare(s) for s in specs])

        # sanity: both paths find the same neighbours (exact Flat index): same scores, same catalog ids
        res = engine.run(specs[:20], k)
        D_raw, fid_raw = raw.search(xq[:20], k)
        if engine.metric == "l2":
            D_raw = -D_raw
        same = bool(np.allclose([[h.score for h in r.hits] for r in res], D_raw, atol=1e-4))
        to_ids = getattr(index, "_to_image_ids", None)
        if to_ids is not None:
            same &= bool((np.array([[h.id for h in r.hits] for r in res]) == to_ids(fid_raw)).all())

        it = iter(range(10**9))
        it2 = iter(range(10**9))
        single_raw, single_engine = timed_pair(lambda: raw.search(xq[next(it2) % args.single][None], k),
                                               lambda: engine.run([specs[next(it) % args.single]], k), args.single)
        batch_specs, batch_xq = specs[:args.batch], np.ascontiguousarray(xq[:args.batch])
        batch_raw, batch_engine = timed_pair(lambda: raw.search(batch_xq, k), lambda: engine.run(batch_specs, k),
                                             args.repeats)

        # where the single-query time goes: the stages QueryEngine.run takes for one query, timed on the same
        # varied queries; their results must be run()'s own
        stages = np.empty((args.single, 4))
        paths = set()
        k_eff = engine.effective_k(k)
        for i in range(args.single):
            names, stages[i], staged = single_query_stages(engine, specs[i], k_eff)
            paths.add(names)
            if i < 20:
                same &= [h.to_dict() for h in staged[0].hits] == [h.to_dict() for h in engine.run([specs[i]], k)[0].hits]
        names = paths.pop() if len(paths) == 1 else ("parse+build", "project", "search", "records")  # paths mixed

        print(f"# zslr query latency vs raw FAISS ({source})\n")
        print(f"gallery {raw.ntotal:,} vectors, dim {raw.d}, metric {engine.metric}, "
              f"index type {getattr(engine.manifest, 'index_type', '?')}, top-k {k}; torch threads "
              f"{torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cpus; engine results == raw FAISS results == staged single-query results "
              f"on 20 queries: {same}\n")
        print("| queries per call | path | p50 ms/call | p95 ms/call | queries/s | p50 vs raw | p50 CPU ms/call "
              "| CPU p50 vs raw |")
        print("|---|---|---|---|---|---|---|---|")
        print(row("1", "raw faiss.search (pre-embedded)", single_raw, 1, None))
        print(row("1", "zslr engine (parse+build+project+search+records)", single_engine, 1, single_raw))
        print(row(f"{args.batch:,}", "raw faiss.search (pre-embedded)", batch_raw, args.batch, None))
        print(row(f"{args.batch:,}", "zslr engine (parse+build+project+search+records)", batch_engine, args.batch,
                  batch_raw))
        print(f"\nload average while measuring: {' / '.join(f'{x:.1f}' for x in os.getloadavg())} (1 / 5 / 15 min) "
              f"on {os.cpu_count()} cpus")
        mixed = " (queries took different paths)" if paths else ""
        print(f"\nSingle-query breakdown of QueryEngine.run, the stages it takes for one query{mixed} (p50 ms): "
              + ", ".join(f"{name} {np.percentile(t, 50) * 1e3:.3f}" for name, t in zip(names, stages.T)))
    finally:
        close = getattr(index, "close", None)
        if close:
            close()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
