#!/usr/bin/env python
"""``zslr serve`` under load: N concurrent clients on loopback for a bounded time, then the same
while ``zslr index`` adds images to the served index; baselines measured in the same run.

    zslr demo                                   # once: builds zslr-demo/indexes/demo
    python scripts/bench_serve.py               # 16 clients, 60 s per phase, 40 images added
    python scripts/bench_serve.py --index zslr-demo/indexes/demo --clients 16 --seconds 20 --add 100
    # a CUB index of 500 photos built here (with a CUB model), 200 more real photos added under load:
    python scripts/bench_serve.py --build-from ../data/CUB_200_2011/images --build 500 --add 200 \
        --model cub-dem.pt --clients 4 --seconds 15

Clients mix the query kinds the index answers (``/api/info`` capabilities, narrowed by ``--kinds``):
attributes, text, class and image (an indexed photo's bytes uploaded to /api/search/image); each
client keeps one connection and picks a kind at random per request. The server's RSS is sampled
every ``--rss-interval`` s; the report gives it over time and its spread after the first quarter
of each load phase (warm-up). Loopback only; each phase stops by itself after ``--seconds`` (the
writer phase: when ``zslr index`` ends, at most ``--max-index-seconds``).

What it does
1. Copies the index folder to a temp dir (phase 3 writes to the copy; the images stay where they are),
   or with ``--build-from DIR`` builds one there: ``--build`` photos spread over DIR's classes
   (``zslr index --file-list``, ``--model`` if given), and phase 3 adds ``--add`` other photos of DIR.
2. Baselines in this process on the copy: ``OpenIndex.search`` of one precomputed query vector
   (the raw index search), and ``QueryEngine.run`` of one attribute query (resolve + embed +
   search + catalog records: what the server calls per query).
3. Starts ``zslr serve`` on a free loopback port and measures, for a fixed set of attribute queries
   (GET /api/search, top_k 24): one sequential client, then N clients for ``--seconds`` (requests/s,
   p50/p95/p99 latency, errors, the server's peak RSS), then N clients while ``zslr index`` adds
   ``--add`` new images (mirrored copies of indexed ones, or other photos of ``--build-from``) to the
   served index. Every attribute response of that phase must equal the old or the new ranking of
   its query (never a mix) and name the old or the new entry count; anything else counts as an error.
Exit status 1 when any request failed or saw a mixed state.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from _procs import free_port, rss_mib, stop  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))]


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
    by_kind: dict = field(default_factory=dict)          # kind -> latencies (s)
    rss: list = field(default_factory=list)              # (seconds into the phase, RSS MiB)

    def rss_spread(self) -> float:
        """(max - min) / min of the RSS samples after the first quarter of the phase (warm-up)."""
        xs = [r for t, r in self.rss if t >= self.seconds / 4 and r == r]
        return (max(xs) - min(xs)) / min(xs) if len(xs) > 1 else float("nan")

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


WORDS = ["red", "blue", "yellow", "black", "white", "brown", "grey", "striped", "spotted", "long wings",
         "short beak", "hooked beak", "long tail", "crested", "water", "perching"]
TEXTS = ["a small red bird with a short thick beak", "a large white seabird with long wings",
         "a yellow bird with black wings", "a brown bird with a striped breast", "a blue bird perched on a branch",
         "an animal with stripes near water"]


@dataclass
class Mix:
    """What clients may ask: attribute queries (by index, for the old/new check), and the other kinds."""
    queries: list[str]
    kinds: list[str]
    classes: list[str] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    check: str = "attributes"   # the kind of ``queries`` (class names when the model takes no attribute-only query)

    def request(self, rng: random.Random, top_k: int):
        """(kind, method, path, body, headers, attribute query index or None)."""
        kind = rng.choice(self.kinds)
        if kind == self.check:
            qi = rng.randrange(len(self.queries))
            return kind, "GET", "/api/search?" + urlencode({kind: self.queries[qi], "top_k": top_k}), None, {}, qi
        if kind == "text":
            return kind, "GET", "/api/search?" + urlencode({"text": rng.choice(TEXTS), "top_k": top_k}), None, {}, None
        if kind == "class":
            return kind, "GET", "/api/search?" + urlencode({"class": rng.choice(self.classes), "top_k": top_k}), None, \
                {}, None
        return kind, "POST", "/api/search/image?" + urlencode({"top_k": top_k}), rng.choice(self.uploads), \
            {"Content-Type": "image/jpeg"}, None


def run_clients(port: int, mix: "Mix | list[str]", phase: Phase, top_k: int, stop: threading.Event,
                check=None, pid: int | None = None, rss_interval: float = 1.0) -> None:
    """``phase.clients`` threads, each on one keep-alive connection, until ``stop`` is set."""
    lock = threading.Lock()
    if not isinstance(mix, Mix):
        mix = Mix(list(mix), ["attributes"])

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            kind, method, path, body, headers, qi = mix.request(rng, top_k)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t0
                if resp.status != 200:
                    raise RuntimeError(f"{kind}: HTTP {resp.status}: {data[:200]!r}")
                data = json.loads(data)
                bad = check(qi, data) if check and qi is not None else None
                with lock:
                    phase.latencies.append(dt)
                    phase.by_kind.setdefault(kind, []).append(dt)
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
    next_sample = t0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if pid:
            now = time.perf_counter()
            r = rss_mib(pid)
            phase.peak_rss = max(phase.peak_rss, r)
            if now >= next_sample:
                phase.rss.append((now - t0, r))
                next_sample += rss_interval
        time.sleep(0.2)
        if stop.is_set():
            for t in threads:
                t.join(timeout=65)
    phase.seconds = time.perf_counter() - t0


def timed(stop_after: float, phase: Phase, port: int, queries, top_k, pid, check=None, rss_interval=1.0) -> None:
    stop = threading.Event()
    timer = threading.Timer(stop_after, stop.set)
    timer.start()
    run_clients(port, queries, phase, top_k, stop, check, pid, rss_interval)


def ranking(port: int, query: str, top_k: int, kind: str = "attributes") -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/search?" + urlencode({kind: query, "top_k": top_k}))
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
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each load phase")
    ap.add_argument("--kinds", default="attributes,text,class,image",
                    help="query kinds the clients mix (those the index cannot answer are left out, reported)")
    ap.add_argument("--build-from", type=Path, help="build the served index here from photos of this folder")
    ap.add_argument("--build", type=int, default=500, help="with --build-from: photos in the first index")
    ap.add_argument("--model", type=Path, help="with --build-from: embedding model checkpoint for the index")
    ap.add_argument("--rss-interval", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--top-k", type=int, default=24)
    ap.add_argument("--queries", type=int, default=32, help="distinct attribute queries the clients cycle through")
    ap.add_argument("--add", type=int, default=40, help="images `zslr index` adds in the last phase (0: no such phase)")
    ap.add_argument("--in-place", action="store_true",
                    help="serve --index itself, not a copy (a large index; only with --add 0: nothing is written)")
    ap.add_argument("--uploads", type=Path, help="photos uploaded by image queries when the index's own paths are "
                                                 "not files (a synthetic index) [default: the index's photos]")
    ap.add_argument("--max-index-seconds", type=float, default=600.0, help="give up on the writer after this")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 3600 or not 1 <= args.top_k <= 100 or args.add < 0:
        ap.error("--clients in 1..64, --seconds in (0, 3600], --top-k in 1..100, --add >= 0")
    if args.in_place and (args.add or args.build_from is not None):
        ap.error("--in-place serves the index as it is: give --add 0 and no --build-from")
    kinds_asked = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds_asked or set(kinds_asked) - {"attributes", "text", "class", "image"}:
        ap.error("--kinds: a comma list of attributes, text, class, image")
    src = Path(args.index) if args.build_from is None else Path("cub")
    if args.build_from is None and not (src / "zslr-index.json").is_file():
        print(f"bench: no index at {src}; run `zslr demo` first (it writes zslr-demo/indexes/demo)", file=sys.stderr)
        return 2

    import torch

    from zslretrieval.errors import IncompatibleError
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
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        add_list = None
        if args.build_from is not None:
            every = sorted(str(p) for p in args.build_from.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            if len(every) < args.build + args.add:
                ap.error(f"--build-from {args.build_from}: {len(every)} photos, fewer than --build + --add")
            picked = [every[int(i)] for i in np.linspace(0, len(every) - 1, args.build + args.add)]
            first, later = picked[0::2][:args.build], picked[1::2][:args.add]   # both spread over every class
            first += [p for p in picked if p not in set(first) | set(later)][:args.build - len(first)]
            later += [p for p in picked if p not in set(first) | set(later)][:args.add - len(later)]
            (work / "build.txt").write_text("".join(p + "\n" for p in first))
            add_list = work / "add.txt"
            add_list.write_text("".join(p + "\n" for p in later))
            t_b = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "zslretrieval", "index", "--file-list", str(work / "build.txt"),
                                "--name", src.name, "--index-root", str(work / "indexes"), "-q",
                                *(["--model", str(args.model)] if args.model else [])],
                               capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"bench: building the index failed:\n{r.stdout[-1500:]}{r.stderr[-1500:]}", file=sys.stderr)
                return 1
            print(f"bench: built {len(first)} photos into {folder} in {time.perf_counter() - t_b:.1f} s",
                  file=sys.stderr)
        elif args.in_place:
            folder = src.resolve()
        else:
            shutil.copytree(src, folder, ignore=shutil.ignore_patterns(".lock"))

        # ---- baselines, in this process, on the same index copy
        ix = open_index(folder, repair=False)
        engine = QueryEngine(ix)
        # the model's attribute names; a raw-feature index's general model embeds any attribute word
        queries = make_queries(list(engine.vocabulary.names) if engine.vocabulary else WORDS, args.queries, args.seed)
        check_kind = "attributes"
        try:
            engine.prepare(QuerySpec("attributes", queries[0]))
        except IncompatibleError as e:   # e.g. a model fusing attributes with descriptions: class queries instead
            print(f"bench: no attribute-only queries on this index ({e}); the old/new check uses class queries",
                  file=sys.stderr)
            check_kind = "class"
            kinds_asked = [k for k in kinds_asked if k != "attributes"]
            names = list(engine.classes.names)
            queries = [names[i] for i in random.Random(args.seed).sample(range(len(names)), k=min(args.queries, len(names)))]
        n_entries = ix.ntotal
        specs = [QuerySpec(check_kind, q) for q in queries]
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
        if args.uploads is not None:   # a synthetic index has no files: upload real photos from here instead
            images = [SimpleNamespace(path=str(p), label=None) for p in sorted(args.uploads.rglob("*"))
                      if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        else:
            images = [r for r in (ix.all_records() if ix.ntotal <= 200_000 else ix.records(ix.entry_ids()[1][:2000]))
                      if os.path.isfile(r.path)]
        classes = list(engine.classes.names) if getattr(engine, "classes", None) else []
        uploads = [Path(r.path).read_bytes() for r in random.Random(args.seed).sample(images, k=min(16, len(images)))]
        ix.close()

        # ---- the server
        port = free_port()
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
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("GET", "/api/info")
        caps = json.loads(c.getresponse().read()).get("capabilities", {})
        c.close()
        kinds = [k for k in kinds_asked if caps.get(k) and (k != "class" or classes) and (k != "image" or uploads)]
        skipped = [k for k in kinds_asked if k not in kinds]
        if check_kind not in kinds:
            print(f"bench: the index answers no {check_kind} query (capabilities {caps}); the old/new check needs them",
                  file=sys.stderr)
            return 1
        mix = Mix(queries, kinds, classes, uploads, check_kind)

        phases = []
        one = Phase("1 client, sequential", 1)
        timed(min(args.seconds, 5.0), one, port, mix, args.top_k, server.pid, rss_interval=args.rss_interval)
        phases.append(one)
        steady = Phase(f"{args.clients} clients", args.clients)
        timed(args.seconds, steady, port, mix, args.top_k, server.pid, rss_interval=args.rss_interval)
        phases.append(steady)

        new_entries, writer_seconds, pending = n_entries, None, []
        if args.add == 0:
            raise _NoWriterPhase
        # ---- while `zslr index` adds images: every answer is the old or the new state of its query
        before = [ranking(port, q, args.top_k, check_kind) for q in queries]
        gen0 = before[0]["generation"]
        extra = work / "extra"
        from PIL import Image, ImageOps

        rng = random.Random(args.seed)
        for i, rec in enumerate([] if add_list else rng.sample(images, k=min(args.add, len(images)))):
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
        what = ["--file-list", str(add_list)] if add_list else [str(extra)]
        writer = subprocess.Popen([sys.executable, "-m", "zslretrieval", "index", *what, "--name", src.name,
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
        run_clients(port, mix, writing, args.top_k, stop, check, server.pid, args.rss_interval)
        writer_seconds = None if writer.returncode is None else time.perf_counter() - t_w
        phases.append(writing)
        if writer.returncode != 0:
            print(f"bench: zslr index failed (exit {writer.returncode}):\n"
                  f"{(work / 'writer.log').read_text()[-2000:]}", file=sys.stderr)
        deadline = time.time() + 30
        while ranking(port, queries[0], args.top_k, check_kind)["generation"] == gen0 and time.time() < deadline:
            time.sleep(0.2)
        for i, q in enumerate(queries):
            after[i] = ranking(port, q, args.top_k, check_kind)
        for qi, gen, entries, ids in pending:
            if ids != ids_of(after[qi]) or entries != after[qi]["entries"]:
                writing.mixed += 1
                writing.first_error = writing.first_error or f"query {qi}: generation {gen} answer is neither old nor new"
        new_entries = after[0]["entries"]
    except _NoWriterPhase:
        pass
    finally:
        if server is not None:
            stop(server)
        shutil.rmtree(work, ignore_errors=True)   # never the --in-place index: it is not under work

    # ---- report
    ms = 1000.0
    print(f"\nzslr serve benchmark: index {src if args.build_from is None else folder} ({n_entries} entries -> {new_entries} after adding {args.add}), "
          f"top_k {args.top_k}, {len(queries)} {check_kind} queries checked old/new (seed {args.seed}), {os.cpu_count()} CPUs")
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
    load = os.getloadavg()
    print(f"query kinds mixed: {', '.join(kinds)}" + (f" (not answered by this index: {', '.join(skipped)})"
                                                     if skipped else "")
          + f"; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"\n{'phase / kind':<38} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8}")
    for p in phases[1:]:
        for kind, xs in sorted(p.by_kind.items()):
            print(f"{p.name + ' / ' + kind:<38} {len(xs):>8} {pct(xs, 50) * ms:>8.1f} {pct(xs, 99) * ms:>8.1f} "
                  f"{pct(xs, 99) / pct(xs, 50):>8.1f}")
    print(f"\nserver RSS, MiB, every {args.rss_interval:g} s (spread after the first quarter: (max - min) / min)")
    for p in phases:
        series = " ".join(f"{r:.0f}" for _, r in p.rss)
        print(f"  {p.name:<30} spread {p.rss_spread() * 100:5.1f} %: {series}")
    failed = [p for p in phases if p.errors or p.mixed]
    for p in failed:
        print(f"FAILED {p.name}: {p.errors} errors, {p.mixed} mixed; first: {p.first_error}")
    return 1 if failed or (args.add and new_entries == n_entries) else 0


class _NoWriterPhase(Exception):
    """--add 0: the load phases only."""


if __name__ == "__main__":
    sys.exit(main())
