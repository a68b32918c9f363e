#!/usr/bin/env python
"""An index of N synthetic images near the CUB feature distribution, built through ``zslr index
--features`` (the library call it makes), measured step by step at each size given.

    python scripts/bench_scale.py --n 20000 --n 100000           # the small run (a few minutes)
    python scripts/bench_scale.py --n 100000 --n 1000000 --work /big/tmp
    # the same in two steps: ingest once (kept), then measure the kept indexes (again after a change)
    python scripts/bench_scale.py --n 100000 --n 1000000 --work /big/tmp --ingest-only --keep
    python scripts/bench_scale.py --n 100000 --n 1000000 --work /big/tmp --reuse --keep
    python scripts/bench_scale.py --quick                        # tiny sizes, the test's mode

How the vectors are drawn (``SyntheticCub``): the cached efficientnet-lite0 features of the real
CUB-200-2011 photos (``<cache>/features/*/features-efficientnet-lite0.npz``, 11,787 x 1280, made by
``zslr train/eval --dataset cub``; a seeded stand-in of the same shape when absent, reported) are
the centres; each synthetic row is a real row chosen uniformly plus Gaussian noise in the real
features' top-64 principal directions (variances of the real features scaled by ``--noise`` ^ 2,
default 0.5), clipped at 0 like the real (post-ReLU) features. So the collection is ~N / 11,787
near-copies around each real photo, with the real spread between photos. Paths are synthetic
(``/synthetic/cub/<class>/<i>.jpg``, the real photo's class); no file is read.

Per size, in one fresh index under ``--work``:
- ingest: ``index_features_file`` (``zslr index --features F.npy --file-list L --index-type
  auto``), with the time inside the catalog commits (``IndexWriter.commit_chunk``), the FAISS sync
  (``IndexWriter.sync_index``) and the auto choice (``IndexWriter.choose_index_type``) split out;
- the index type ``auto`` picked, and its recall@10 against the exact ranking (a FAISS Flat index
  of the same vectors, itself checked against ``OpenIndex.search(k=None)`` up to 200k images) on
  ``--queries`` fresh draws;
- query latency, one query at a time: the baseline raw FAISS search of the same vectors (a Flat
  index built here), ``OpenIndex.search`` (the chosen index), and ``QueryEngine.run`` of an
  attribute query and of a text query (the engine's whole path on a raw-feature index: resolve
  through the general model, embed, search, catalog records);
- ``zslr serve``: process start to its ready line (``zslr serve: index ...``) and to the first
  200 of /api/health, and its resident memory then and after ``--queries`` searches;
- disk use of the index folder per image.
Then every step's cost per image at the largest size against the smallest: a ratio above
``--superlinear`` (default 1.5) is flagged as growing faster than linearly.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from _procs import free_port, rss_mib, stop  # noqa: E402

PCA_RANK = 64
CUB_GLOB = "features/*/features-efficientnet-lite0.npz"


def pct(xs, p: float) -> float:
    return float(np.percentile(np.asarray(xs, float), p)) if len(xs) else float("nan")


def du_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def cub_features_file() -> Path | None:
    """The cached CUB lite0 features: $ZSLR_CACHE, the data root's cache, then /work/data/cache."""
    roots = [os.environ.get("ZSLR_CACHE"), os.path.join(os.environ.get("ZSLR_DATA", ""), "cache"),
             str(REPO.parent / "data" / "cache")]
    for root in filter(None, roots):
        for f in sorted(glob.glob(os.path.join(root, CUB_GLOB))):
            with np.load(f) as z:
                if z["features"].shape[0] > 10_000:   # the whole CUB collection, not a small folder
                    return Path(f)
    return None


class SyntheticCub:
    """Rows near the real CUB features: a real row + Gaussian noise in its top principal directions."""

    def __init__(self, noise: float, seed: int, source: Path | None = None):
        if source is not None:
            with np.load(source) as z:
                self.centres = np.asarray(z["features"], np.float32)
            self.source = str(source)
        else:   # stand-in: non-negative, low-rank-ish, same shape
            rng = np.random.default_rng(seed)
            basis = rng.standard_normal((32, 1280)).astype(np.float32)
            self.centres = np.maximum(rng.standard_normal((2000, 32)).astype(np.float32) @ basis * 0.1, 0)
            self.source = "seeded stand-in (no cached CUB features found)"
        self.classes = np.arange(len(self.centres)) % 200   # the cache has no labels: 200 pseudo-classes
        x = self.centres - self.centres.mean(0)
        x = x[:: max(1, len(x) // 2000)]   # ~2,000 rows estimate the top directions well enough
        _, s, vt = np.linalg.svd(x, full_matrices=False)
        sd = s[:PCA_RANK] / np.sqrt(max(1, len(x) - 1))
        self.directions = (vt[:PCA_RANK] * (sd[:, None] * noise)).astype(np.float32)   # (r, D)
        self.dim = self.centres.shape[1]
        self.seed = seed

    def draw(self, n: int, seed_offset: int = 0, block: int = 65536):
        """Yield (rows (b, D) float32, centre index (b,)) blocks, n rows in all, reproducibly."""
        rng = np.random.default_rng(self.seed + seed_offset)
        for start in range(0, n, block):
            b = min(block, n - start)
            c = rng.integers(0, len(self.centres), b)
            z = rng.standard_normal((b, PCA_RANK), dtype=np.float32)
            yield np.maximum(self.centres[c] + z @ self.directions, 0, dtype=np.float32), c


def write_features(gen: SyntheticCub, n: int, folder: Path) -> tuple[Path, Path]:
    """``folder/features.npy`` (memory-mapped write) + ``folder/paths.txt`` (path TAB class)."""
    folder.mkdir(parents=True, exist_ok=True)
    npy, lst = folder / "features.npy", folder / "paths.txt"
    out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(n, gen.dim))
    i = 0
    with open(lst, "w") as f:
        for rows, c in gen.draw(n):
            out[i:i + len(rows)] = rows
            cls = gen.classes[c]
            f.writelines(f"/synthetic/cub/{k:03d}/{i + j:08d}.jpg\t{k:03d}\n" for j, k in enumerate(cls))
            i += len(rows)
    out.flush()
    del out
    return npy, lst


@contextlib.contextmanager
def timed_methods(cls, names: list[str], into: dict[str, float]):
    """Add the wall time spent inside ``cls.<name>`` (every call) to ``into[name]``."""
    saved = {n: getattr(cls, n) for n in names}

    def wrap(name, fn):
        def inner(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                into[name] = into.get(name, 0.0) + time.perf_counter() - t0
        return inner

    for n in names:
        setattr(cls, n, wrap(n, saved[n]))
    try:
        yield into
    finally:
        for n, fn in saved.items():
            setattr(cls, n, fn)


def serve_startup(folder: Path, work: Path, queries: np.ndarray, timeout: float) -> dict:
    """Start ``zslr serve`` on loopback: seconds to its ready line and to a 200 on /api/health, RSS."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    log = work / "serve.log"
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "zslretrieval", "serve", "--index", str(folder), "--port",
                                 str(port), "--cache-dir", str(work / "thumbs"), "--reload-interval", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    res = {"ready_s": float("nan"), "health_s": float("nan"), "rss_start": float("nan"), "rss_after": float("nan"),
           "peak_rss": 0.0}
    try:
        while time.perf_counter() - t0 < timeout:
            res["peak_rss"] = max(res["peak_rss"], rss_mib(proc.pid))
            if res["ready_s"] != res["ready_s"] and "zslr serve: index" in log.read_text(errors="replace"):
                res["ready_s"] = time.perf_counter() - t0
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/api/health")
                if c.getresponse().status == 200:
                    res["health_s"] = time.perf_counter() - t0
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"bench: zslr serve exited {proc.returncode}:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        else:
            raise SystemExit(f"bench: zslr serve not ready in {timeout:.0f} s:\n{log.read_text()[-2000:]}")
        if res["ready_s"] != res["ready_s"]:
            res["ready_s"] = res["health_s"]
        res["rss_start"] = rss_mib(proc.pid)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for q in queries:
            c.request("GET", "/api/search?" + urlencode({"attributes": q, "top_k": 10}))
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                res["search_error"] = f"HTTP {r.status}: {body[:200]!r}"
                break
        res["rss_after"] = rss_mib(proc.pid)
        res["peak_rss"] = max(res["peak_rss"], res["rss_after"])
    finally:
        stop(proc, timeout=30)
    return res


WORDS = ["red", "blue", "yellow", "black", "white", "brown", "grey", "striped", "spotted", "long wings",
         "short beak", "hooked beak", "long tail", "crested", "water", "perching"]
TEXTS = ["a small red bird with a short thick beak", "a large white seabird with long wings",
         "a yellow bird with black wings", "a brown bird with a striped breast", "a blue bird perched on a branch"]


def attribute_queries(vocab: list[str], n: int, seed: int):
    """``n`` attribute queries of 1-3 names of the index's vocabulary (the general model's on a raw index)."""
    from zslretrieval.query import QuerySpec

    rng = np.random.default_rng(seed)
    return [QuerySpec("attributes", ",".join(rng.choice(vocab, size=int(rng.integers(1, 4)), replace=False)))
            for _ in range(n)]


@dataclass
class Row:
    n: int
    t: dict[str, float] = field(default_factory=dict)     # seconds per step
    info: dict = field(default_factory=dict)


def ingest(n: int, gen: SyntheticCub, here: Path, args, row: Row) -> Path:
    """Draw ``n`` rows, write the input files and index them (``zslr index --features``); the index folder."""
    import faiss

    from zslretrieval.index.writer import IndexWriter
    from zslretrieval.ingest import FeaturesIndexConfig, index_features_file

    shutil.rmtree(here, ignore_errors=True)
    t0 = time.perf_counter()
    npy, lst = write_features(gen, n, here / "input")
    row.t["draw + write input"] = time.perf_counter() - t0

    faiss.omp_set_num_threads(os.cpu_count() or 1)   # ingest as `zslr index` runs: every core for FAISS builds
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
    t0 = time.perf_counter()
    with timed_methods(IndexWriter, ["commit_chunk", "sync_index", "choose_index_type", "existing"], row.t):
        if prof:
            prof.enable()
        rep = index_features_file(FeaturesIndexConfig(features=npy, file_list=lst, name="scale", root=here / "indexes",
                                                      index_type="auto", chunk_size=args.chunk_size))
        if prof:
            prof.disable()
    row.t["ingest (index_features_file)"] = time.perf_counter() - t0
    if prof:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(args.profile)
        prof.dump_stats(str(here / f"ingest-{n}.prof"))
        print(f"\n--- ingest profile, {n:,} images (cumulative, top {args.profile}; {here}/ingest-{n}.prof)\n"
              + "\n".join(out.getvalue().splitlines()[6:]), file=sys.stderr)
    assert rep.n_ok == n == rep.n_entries, (rep, n)
    return Path(rep.folder)


def run_size(n: int, gen: SyntheticCub, work: Path, args) -> Row:
    import faiss

    from zslretrieval.index import open_index
    from zslretrieval.query import QueryEngine, QuerySpec

    row = Row(n)
    here = work / f"n{n}"
    saved = here / "ingest.json"   # the ingest's figures, for a later --reuse run of the measurements
    if args.reuse and saved.is_file():
        rec = json.loads(saved.read_text())
        row.t.update(rec["seconds"])
        folder = Path(rec["folder"])
        print(f"bench: reusing the {n:,}-image index in {folder} (ingest figures from {saved})", file=sys.stderr)
    else:
        folder = ingest(n, gen, here, args, row)
        saved.write_text(json.dumps({"folder": str(folder), "seconds": row.t, "load": os.getloadavg()}, indent=1))
    if args.ingest_only:
        row.info["ingest_only"] = True
        return row
    choice = json.loads((folder / "index-choice.json").read_text()) if (folder / "index-choice.json").is_file() else {}
    ix = open_index(folder, repair=False)
    m = ix.manifest
    row.info.update(index_type=m.index_type, search_params=getattr(m, "search_params", None) or "",
                    choice_recall=(choice.get("chosen") or {}).get("recall_at_10"))
    disk = du_bytes(folder)
    row.info["disk_per_image"] = disk / n
    row.info["faiss_bytes"] = sum(p.stat().st_size for p in folder.glob("index-*.faiss"))

    faiss.omp_set_num_threads(1)    # one query at a time, the server's default (--threads 1)
    # held-out queries: fresh draws (another seed), in index space as the engine puts them
    from zslretrieval.index.space import l2_normalize

    raw_q = np.concatenate([r for r, _ in gen.draw(args.queries, seed_offset=10_000_019)])
    xq = l2_normalize(raw_q) if m.metric == "ip" else raw_q
    # baseline: raw FAISS Flat over the same index-space vectors (ids = catalog ids). It is exact, so it
    # also gives the recall truth; OpenIndex.search(k=None) (the engine's own exact path) is checked
    # against it on the first queries, without holding a third copy of the vectors at a million
    t0 = time.perf_counter()
    ids, vecs = ix.vectors()
    flat = faiss.IndexIDMap(faiss.IndexFlatIP(vecs.shape[1]) if m.metric == "ip" else faiss.IndexFlatL2(vecs.shape[1]))
    flat.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids.astype(np.int64))
    del vecs, ids
    row.t["baseline Flat build"] = time.perf_counter() - t0
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    exact = flat.search(xq, 10)[1]
    row.t["exact full ranking (recall truth)"] = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    if n <= 200_000:
        engine_exact = np.concatenate([ix.search(xq[i:i + 8], None)[1][:, :10] for i in range(0, min(len(xq), 16), 8)])
        agree = float(np.mean(engine_exact == exact[:len(engine_exact)]))
        row.info["engine exact vs Flat"] = agree
        ix._exact = None   # the exact searcher's copy of the vectors
    _, I = ix.search(xq, 10)
    row.info["recall@10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)]))

    lat = {"raw FAISS Flat (baseline)": [], "OpenIndex.search (chosen index)": [],
           "QueryEngine.run (attribute query)": []}
    if not args.no_text:
        lat["QueryEngine.run (text query)"] = []
    engine = QueryEngine(ix)
    # a model's vocabulary, else (raw index: the general model embeds any attribute word) bird words
    attrs = attribute_queries(list(engine.vocabulary.names) if engine.vocabulary else WORDS, len(xq), args.seed)
    texts = [QuerySpec("text", TEXTS[i % len(TEXTS)]) for i in range(len(xq))]
    t0 = time.perf_counter()
    engine.run(attrs[:1] + ([] if args.no_text else texts[:1]), 10)   # first call: records, general model, encoder
    row.t["engine first call (loads)"] = time.perf_counter() - t0
    for i in range(len(xq)):
        for name, fn in (("raw FAISS Flat (baseline)", lambda: flat.search(xq[i:i + 1], 10)),
                         ("OpenIndex.search (chosen index)", lambda: ix.search(xq[i:i + 1], 10)),
                         ("QueryEngine.run (attribute query)", lambda: engine.run([attrs[i]], 10)),
                         ("QueryEngine.run (text query)", lambda: engine.run([texts[i]], 10))):
            if name not in lat:
                continue
            t0 = time.perf_counter()
            fn()
            lat[name].append(time.perf_counter() - t0)
    row.info["latency"] = lat
    del flat
    ix.close()
    del engine, ix   # the FAISS index in this process, while the server loads its own
    import gc

    gc.collect()
    if args.no_serve:
        row.info["serve_first"] = row.info["serve"] = dict.fromkeys(SERVE_KEYS, float("nan"))
        return row
    # twice: the first start of a fresh process may build caches (ONNX sessions, page cache of the files)
    row.info["serve_first"] = serve_startup(folder, here, [a.text for a in attrs[:50]], args.serve_timeout)
    row.info["serve"] = serve_startup(folder, here, [a.text for a in attrs[:50]], args.serve_timeout)
    if not args.keep:
        shutil.rmtree(here / "input", ignore_errors=True)
    return row


SERVE_KEYS = ("ready_s", "health_s", "rss_start", "rss_after", "peak_rss")
STEPS = ["draw + write input", "ingest (index_features_file)", "existing", "commit_chunk", "sync_index",
         "choose_index_type", "exact full ranking (recall truth)", "baseline Flat build", "engine first call (loads)"]


def report(rows: list[Row], args, gen: SyntheticCub) -> int:
    import faiss

    load = os.getloadavg()
    print(f"\nscale benchmark: synthetic CUB-like features ({gen.source}; noise {args.noise}, PCA rank {PCA_RANK}), "
          f"{os.cpu_count()} CPUs, faiss {faiss.__version__}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n")
    head = "".join(f"{r.n:>14,}" for r in rows)
    print(f"{'images':<44}{head}")
    print(f"{'step, microseconds per image':<44}")
    for s in STEPS:
        print(f"  {s:<42}" + "".join(f"{r.t.get(s, float('nan')) / r.n * 1e6:>14.1f}" for r in rows))
    ing = [r.n / r.t["ingest (index_features_file)"] for r in rows]
    print(f"{'ingest rate, images/s (catalog + FAISS)':<44}" + "".join(f"{x:>14,.0f}" for x in ing))
    print(f"{'catalog rate, images/s (commit_chunk)':<44}" + "".join(f"{r.n / r.t['commit_chunk']:>14,.0f}" for r in rows))
    if any(r.info.get("ingest_only") for r in rows):
        print("\n(--ingest-only: measure these indexes with --reuse)")
        return 0
    print(f"{'index type chosen by auto':<44}" + "".join(f"{r.info['index_type']:>14}" for r in rows))
    print(f"{'  search params':<44}" + "".join(f"{r.info['search_params'] or '-':>14}" for r in rows))
    print(f"{'recall@10 vs exact (held-out draws)':<44}" + "".join(f"{r.info['recall@10']:>14.3f}" for r in rows))
    print(f"{'engine exact path = Flat top-10 (share)':<44}" + "".join(
        f"{r.info.get('engine exact vs Flat', float('nan')):>14.3f}" for r in rows))
    for name in rows[0].info["latency"]:
        for p in (50, 99):
            print(f"{'p' + str(p) + ' ms ' + name:<44}" + "".join(
                f"{pct(r.info['latency'][name], p) * 1e3:>14.3f}" for r in rows))
    print(f"{'serve: first start to ready line, s':<44}" + "".join(f"{r.info['serve_first']['ready_s']:>14.1f}" for r in rows))
    print(f"{'serve: first start, RSS when ready, MiB':<44}" + "".join(f"{r.info['serve_first']['rss_start']:>14.1f}" for r in rows))
    for key, label in (("ready_s", "serve: start to ready line, s"), ("health_s", "serve: start to first 200, s"),
                       ("rss_start", "serve: RSS when ready, MiB"), ("rss_after", "serve: RSS after searches, MiB"),
                       ("peak_rss", "serve: peak RSS, MiB")):
        print(f"{label:<44}" + "".join(f"{r.info['serve'][key]:>14.1f}" for r in rows))
    print(f"{'FAISS file, MiB':<44}" + "".join(f"{r.info['faiss_bytes'] / 2**20:>14.1f}" for r in rows))
    print(f"{'disk per image, KiB (index folder)':<44}" + "".join(f"{r.info['disk_per_image'] / 1024:>14.2f}" for r in rows))
    errors = [r.info["serve"].get("search_error") for r in rows if r.info["serve"].get("search_error")]
    for e in errors:
        print(f"serve search failed: {e}")
    if len(rows) > 1:
        a, b = rows[0], rows[-1]
        print(f"\ngrowth from {a.n:,} to {b.n:,} images ({b.n / a.n:.0f}x): per-image cost ratio "
              f"(> {args.superlinear} flagged as super-linear)")
        for s, ratio in growth(rows).items():
            flag = "  <-- super-linear" if ratio > args.superlinear else ""
            print(f"  {s:<42}{ratio:>8.2f}{flag}")
    return 1 if errors else 0


def growth(rows: list[Row]) -> dict[str, float]:
    """Per step: (seconds per image at the largest size) / (seconds per image at the smallest)."""
    a, b = rows[0], rows[-1]
    return {s: (b.t[s] / b.n) / (a.t[s] / a.n) for s in STEPS[1:] if a.t.get(s) and s in b.t}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, action="append", help="collection size (repeatable) [default: 20000 and 100000]")
    ap.add_argument("--queries", type=int, default=200, help="held-out queries for recall and latency")
    ap.add_argument("--noise", type=float, default=0.5, help="noise scale in the principal directions")
    ap.add_argument("--chunk-size", type=int, default=65536, help="rows per catalog commit")
    ap.add_argument("--work", type=Path, help="scratch folder [default: a temp dir, removed]")
    ap.add_argument("--keep", action="store_true", help="keep the input files and the indexes")
    ap.add_argument("--reuse", action="store_true", help="measure the indexes a --keep run left in --work (no ingest)")
    ap.add_argument("--ingest-only", action="store_true", help="draw and ingest only (then --reuse measures)")
    ap.add_argument("--serve-timeout", type=float, default=600.0)
    ap.add_argument("--superlinear", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (2,000 and 6,000), 20 queries: a smoke test")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--no-serve", action="store_true", help="skip the zslr serve start-up measurement")
    ap.add_argument("--no-text", action="store_true", help="skip text queries (the sentence encoder's load)")
    ap.add_argument("--profile", type=int, default=0, metavar="K", help="cProfile each ingest, print the top K functions")
    args = ap.parse_args(argv)
    sizes = args.n or ([2000, 6000] if args.quick else [20000, 100000])
    if args.quick:
        args.queries = min(args.queries, 20)
    if any(n < 100 for n in sizes) or args.queries < 1:
        ap.error("--n >= 100, --queries >= 1")
    import faiss
    import torch

    torch.set_num_threads(1)
    gen = SyntheticCub(args.noise, args.seed, cub_features_file())
    work = args.work or Path(tempfile.mkdtemp(prefix="zslr-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ZSLR_CACHE", str(work / "cache"))
    try:
        rows = []
        for n in sorted(sizes):
            print(f"bench: {n:,} images ...", file=sys.stderr, flush=True)
            rows.append(run_size(n, gen, work, args))
        rc = report(rows, args, gen)
        if args.json:
            args.json.write_text(json.dumps([{"n": r.n, "seconds": r.t, **{k: v for k, v in r.info.items()}}
                                             for r in rows], default=float, indent=1))
        return rc
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
