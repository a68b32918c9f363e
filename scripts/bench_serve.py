#!/usr/bin/env python
"""``zslr serve`` under load: N concurrent clients on loopback for a bounded time, then the same
while ``zslr index`` adds images to the served index; baselines measured in the same run.

    zslr demo                                   # once: builds zslr-demo/indexes/demo
    python scripts/bench_serve.py               # 8 clients, 10 s per phase, 40 images added
    python scripts/bench_serve.py --index zslr-demo/indexes/demo --clients 16 --seconds 20 --add 100

What it does
1. Copies the index folder to a temp dir (phase 3 writes to the copy; the images stay where they are).
2. Baselines in this process on the copy: ``OpenIndex.search`` of one precomputed query vector
   (the raw index search), and ``QueryEngine.run`` of one attribute query (resolve + embed +
   search + catalog records: what the server calls per query).
3. Starts ``zslr serve`` on a free loopback port and measures, for a fixed set of attribute queries
   (GET /api/search, top_k 24): one sequential client, then N clients for ``--seconds`` (requests/s,
   p50/p95/p99 latency, errors, the server's peak RSS), then N clients while ``zslr index`` adds
   ``--add`` new images (mirrored copies of indexed ones) to the served index. Every response of
   that phase must equal the old or the new ranking of its query (never a mix) and name the old or
   the new entry count; anything else counts as an error.
Exit status 1 when any request failed or saw a mixed state.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    errors: int = 0
    mixed: int = 0
    peak_rss: float = 0.0
    first_error: str = ""

    @property
    def requests(self) -> int:
        return len(self.latencies) + self.errors


def make_queries(vocab: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        terms = rng.sample(vocab, k=min(len(vocab), rng.randint(1, 4)))
        if len(terms) > 1 and rng.random() < 0.3:
            terms[-1] = "-" + terms[-1]
        out.append(",".join(terms))
    return out


def run_clients(port: int, queries: list[str], phase: Phase, top_k: int, stop: threading.Event,
                check=None, pid: int | None = None) -> None:
    """``phase.clients`` threads, each on one keep-alive connection, until ``stop`` is set."""
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            qi = rng.randrange(len(queries))
            path = "/api/search?" + urlencode({"attributes": queries[qi], "top_k": top_k})
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
                data = json.loads(body)
                bad = check(qi, data) if check else None
                with lock:
                    phase.latencies.append(dt)
                    phase.server_ms.append(data["took_ms"])
                    if bad:
                        phase.mixed += 1
                        phase.first_error = phase.first_error or bad
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                with lock:
                    phase.errors += 1
                    phase.first_error = phase.first_error or f"{type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(phase.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if pid:
            phase.peak_rss = max(phase.peak_rss, rss_mib(pid))
        time.sleep(0.2)
        if stop.is_set():
            for t in threads:
                t.join(timeout=65)
    phase.seconds = time.perf_counter() - t0


def timed(stop_after: float, phase: Phase, port: int, queries, top_k, pid, check=None) -> None:
    stop = threading.Event()
    timer = threading.Timer(stop_after, stop.set)
    timer.start()
    run_clients(port, queries, phase, top_k, stop, check, pid)


def ranking(port: int, query: str, top_k: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/search?" + urlencode({"attributes": query, "top_k": top_k}))
    r = conn.getresponse()
    data = json.loads(r.read())
    conn.close()
    if r.status != 200:
        raise SystemExit(f"bench: query {query!r} failed: {data}")
    return data


def ids_of(data: dict) -> list[int]:
    return [h["id"] for h in data["queries"][0]["results"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", default="zslr-demo/indexes/demo", help="index folder (made by `zslr demo`)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each load phase")
    ap.add_argument("--top-k", type=int, default=24)
    ap.add_argument("--queries", type=int, default=32, help="distinct attribute queries the clients cycle through")
    ap.add_argument("--add", type=int, default=40, help="images `zslr index` adds in the last phase")
    ap.add_argument("--max-index-seconds", type=float, default=600.0, help="give up on the writer after this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.clients < 1 or args.seconds <= 0 or not 1 <= args.top_k <= 100 or args.add < 1:
        ap.error("--clients >= 1, --seconds > 0, --top-k in 1..100, --add >= 1")
    src = Path(args.index)
    if not (src / "zslr-index.json").is_file():
        print(f"bench: no index at {src}; run `zslr demo` first (it writes zslr-demo/indexes/demo)", file=sys.stderr)
        return 2

    import numpy as np
    import torch

    from zslretrieval.index import open_index
    from zslretrieval.query import QueryEngine, QuerySpec

    import faiss

    # the server's defaults (`zslr serve --threads 1`): the baselines run under the same settings
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="zslr-bench-serve-"))
    server = None
    try:
        folder = work / "indexes" / src.name
        shutil.copytree(src, folder, ignore=shutil.ignore_patterns(".lock"))

        # ---- baselines, in this process, on the same index copy
        ix = open_index(folder, repair=False)
        engine = QueryEngine(ix)
        queries = make_queries(list(engine.vocabulary.names), args.queries, args.seed)
        n_entries = ix.ntotal
        specs = [QuerySpec("attributes", q) for q in queries]
        xq = engine.embed([engine.prepare(s) for s in specs])
        raw, full = [], []
        for rep in range(5):
            for i in range(len(queries)):
                t0 = time.perf_counter()
                ix.search(xq[i:i + 1], args.top_k + 1)
                raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                engine.run([specs[i]], args.top_k + 1)
                full.append(time.perf_counter() - t0)
        images = [r for r in ix.all_records() if os.path.isfile(r.path)]
        ix.close()

        # ---- the server
        port = free_port()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        log = open(work / "server.log", "wb")
        t_start = time.perf_counter()
        server = subprocess.Popen([sys.executable, "-m", "zslretrieval", "serve", "--index", str(folder),
                                   "--port", str(port), "--cache-dir", str(work / "thumbs"),
                                   "--reload-interval", "0.5"], stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/api/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None:
                print((work / "server.log").read_text()[-2000:], file=sys.stderr)
                return 1
            time.sleep(0.2)
        startup = time.perf_counter() - t_start
        rss_start = rss_mib(server.pid)

        phases = []
        one = Phase("1 client, sequential", 1)
        timed(min(args.seconds, 5.0), one, port, queries, args.top_k, server.pid)
        phases.append(one)
        steady = Phase(f"{args.clients} clients", args.clients)
        timed(args.seconds, steady, port, queries, args.top_k, server.pid)
        phases.append(steady)

        # ---- while `zslr index` adds images: every answer is the old or the new state of its query
        before = [ranking(port, q, args.top_k) for q in queries]
        gen0 = before[0]["generation"]
        extra = work / "extra"
        from PIL import Image, ImageOps

        rng = random.Random(args.seed)
        for i, rec in enumerate(rng.sample(images, k=min(args.add, len(images)))):
            out = extra / (rec.label or "unlabelled") / f"mirror-{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(rec.path) as im:
                ImageOps.mirror(im.convert("RGB")).save(out)
        after: list[dict | None] = [None] * len(queries)

        def check(qi: int, data: dict) -> str | None:
            if data["generation"] == gen0:
                ok = ids_of(data) == ids_of(before[qi]) and data["entries"] == before[qi]["entries"]
            else:
                ref = after[qi]
                ok = ref is None or (ids_of(data) == ids_of(ref) and data["entries"] == ref["entries"])
                if ref is None:   # checked once the new state is known (below)
                    pending.append((qi, data["generation"], data["entries"], ids_of(data)))
            return None if ok else f"query {qi}: generation {data['generation']} answer is neither old nor new"

        pending: list[tuple] = []
        writing = Phase(f"{args.clients} clients + zslr index", args.clients)
        stop = threading.Event()
        writer_log = open(work / "writer.log", "wb")
        t_w = time.perf_counter()
        writer = subprocess.Popen([sys.executable, "-m", "zslretrieval", "index", str(extra), "--name", src.name,
                                   "--index-root", str(work / "indexes"), "--workers", "0"],
                                  stdout=writer_log, stderr=subprocess.STDOUT, env=env)

        def stop_when_done() -> None:
            try:
                writer.wait(timeout=args.max_index_seconds)
            except subprocess.TimeoutExpired:
                writer.kill()
            time.sleep(max(2.0, args.seconds - (time.perf_counter() - t_w)))   # and the reload after it
            stop.set()

        threading.Thread(target=stop_when_done, daemon=True).start()
        run_clients(port, queries, writing, args.top_k, stop, check, server.pid)
        writer_seconds = None if writer.returncode is None else time.perf_counter() - t_w
        phases.append(writing)
        if writer.returncode != 0:
            print(f"bench: zslr index failed (exit {writer.returncode}):\n"
                  f"{(work / 'writer.log').read_text()[-2000:]}", file=sys.stderr)
        deadline = time.time() + 30
        while ranking(port, queries[0], args.top_k)["generation"] == gen0 and time.time() < deadline:
            time.sleep(0.2)
        for i, q in enumerate(queries):
            after[i] = ranking(port, q, args.top_k)
        for qi, gen, entries, ids in pending:
            if ids != ids_of(after[qi]) or entries != after[qi]["entries"]:
                writing.mixed += 1
                writing.first_error = writing.first_error or f"query {qi}: generation {gen} answer is neither old nor new"
        new_entries = after[0]["entries"]
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)

    # ---- report
    ms = 1000.0
    print(f"\nzslr serve benchmark: index {src} ({n_entries} entries -> {new_entries} after adding {args.add}), "
          f"top_k {args.top_k}, {len(queries)} attribute queries (seed {args.seed}), {os.cpu_count()} CPUs")
    print(f"server start to first answer {startup:.1f} s; RSS {rss_start:.0f} MiB after start\n")
    print("search latency of one query, same index            p50 ms    p99 ms")
    print(f"  raw index search (OpenIndex.search)            {pct(raw, 50) * ms:8.3f}  {pct(raw, 99) * ms:8.3f}")
    print(f"  query engine (resolve+embed+search+records)    {pct(full, 50) * ms:8.3f}  {pct(full, 99) * ms:8.3f}")
    s1 = phases[0]
    print(f"  server, inside the request (took_ms)           {pct(s1.server_ms, 50):8.3f}  {pct(s1.server_ms, 99):8.3f}")
    print(f"  server, HTTP round trip (1 client)             {pct(s1.latencies, 50) * ms:8.3f}  {pct(s1.latencies, 99) * ms:8.3f}")
    print()
    print(f"{'phase':<30} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'mixed':>5} {'peak RSS MiB':>12}")
    for p in phases:
        rate = len(p.latencies) / p.seconds if p.seconds else 0.0
        print(f"{p.name:<30} {p.requests:>8} {rate:>8.1f} {pct(p.latencies, 50) * ms:>8.2f} "
              f"{pct(p.latencies, 95) * ms:>8.2f} {pct(p.latencies, 99) * ms:>8.2f} {p.errors:>6} {p.mixed:>5} "
              f"{p.peak_rss:>12.0f}")
    print(f"\nwhile indexing: zslr index took {writer_seconds:.1f} s" if writer_seconds else "\nwhile indexing:",
          f"answers from the new state: {len(pending)}; entries {n_entries} -> {new_entries}")
    failed = [p for p in phases if p.errors or p.mixed]
    for p in failed:
        print(f"FAILED {p.name}: {p.errors} errors, {p.mixed} mixed; first: {p.first_error}")
    return 1 if failed or new_entries == n_entries else 0


if __name__ == "__main__":
    sys.exit(main())
