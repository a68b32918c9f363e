#!/usr/bin/env python
"""The server's memory under hostile request bursts: N requests at once per family, the RSS of the
``zslr serve`` process sampled every few ms while they are in flight.

    zslr index ../shared/data/photos/awa2/JPEGImages --name awa2 --no-model   # raw features: the general
    python scripts/probe_serve.py --index indexes/awa2                        # model encodes every name

Families (each sent ``--requests`` times at once, loopback only):
- ``probe-4096-names``: the probe's attribute query of 4,096 made-up names (44 kB): refused (400) by the
  per-query bound before any work;
- ``max-names``: the largest request still answered: made-up names up to the per-query and per-request
  bounds (``serve.bounds``), each one encoded by the sentence encoder on an index without a model;
- ``max-texts``: text queries of the longest accepted text, as many as one request may hold;
- ``big-upload``: a noise JPEG just under the upload cap as an example image.

The baseline is the server's RSS after one warm-up request of each kind, measured in the same run;
the table shows each family's peak extra RSS over it, statuses and wall time. Exit status 1 when a
family goes over ``--max-extra-mb`` (200) or any answer is a 5xx.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from _procs import free_port, stop  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """Peak RSS of ``pid`` between start() and stop(), sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.003):
        self.pid, self.every, self.peak, self._stop = pid, every, 0.0, threading.Event()

    def __enter__(self):
        self.peak = rss_mb(self.pid)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb(self.pid))


def request(url: str, body: bytes | None = None, ctype: str = "application/json", timeout: float = 300) -> int:
    req = urllib.request.Request(url, data=body, headers={"content-type": ctype} if body is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def names(n: int, start: int = 0) -> str:
    return ", ".join(f"zq{i:05d}qx" for i in range(start, start + n))


def families(base: str, upload_cap: int) -> dict[str, tuple[str, bytes, str]]:
    from zslretrieval.serve.bounds import MAX_QUERY_TERMS, MAX_REQUEST_TERMS, MAX_REQUEST_TEXT_CHARS, MAX_TEXT_CHARS

    per = MAX_REQUEST_TERMS // MAX_QUERY_TERMS
    max_names = {"queries": [{"kind": "attributes", "value": names(MAX_QUERY_TERMS, q * MAX_QUERY_TERMS)}
                             for q in range(per)]}
    words = " ".join(f"zq{i:05d}qx" for i in range(MAX_TEXT_CHARS // 10))[:MAX_TEXT_CHARS]
    texts = {"queries": [{"kind": "text", "value": words}] * (MAX_REQUEST_TEXT_CHARS // MAX_TEXT_CHARS)}
    probe = {"queries": [{"kind": "attributes", "value": names(4096)}]}
    return {
        "probe-4096-names": (base + "/api/search", json.dumps(probe).encode(), "application/json"),
        "max-names": (base + "/api/search", json.dumps(max_names).encode(), "application/json"),
        "max-texts": (base + "/api/search", json.dumps(texts).encode(), "application/json"),
        "big-upload": (base + "/api/search/image?top_k=5", noise_jpeg(upload_cap), "image/jpeg"),
    }


def noise_jpeg(cap: int) -> bytes:
    """A JPEG of random pixels just under ``cap`` bytes (random pixels barely compress)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = 512
    best = b""
    while True:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=95)
        if buf.tell() > cap:
            return best
        best, side = buf.getvalue(), int(side * 1.2)


def burst(url: str, body: bytes, ctype: str, n: int) -> tuple[list[int], float]:
    statuses: list[int] = []
    lock = threading.Lock()

    def one():
        s = request(url, body, ctype)
        with lock:
            statuses.append(s)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(statuses), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, help="index folder or name to serve")
    ap.add_argument("--requests", type=int, default=8, help="requests in flight at once per family")
    ap.add_argument("--max-extra-mb", type=float, default=200.0)
    ap.add_argument("--families", default="", help="comma-separated subset of the families")
    args = ap.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "zslretrieval", "serve", "--index", args.index, "--port",
                                 str(port), "--cache-dir", str(Path(tmp) / "thumbs")], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.time() + 600
            while True:
                try:
                    info = json.load(urllib.request.urlopen(base + "/api/info", timeout=2))
                    break
                except OSError:
                    if proc.poll() is not None or time.time() > deadline:
                        print((Path(tmp) / "server.log").read_text()[-3000:])
                        return 1
                    time.sleep(0.5)
            caps = info["capabilities"]
            fams = families(base, info["limits"]["max_upload_bytes"])
            chosen = [f for f in (args.families.split(",") if args.families else fams)
                      if f != "big-upload" or caps.get("image")]
            # warm-up: one small request of each kind, so the baseline holds every model already loaded
            vocab = json.load(urllib.request.urlopen(base + "/api/vocabulary"))["attributes"]
            warm = [{"kind": "attributes", "value": ", ".join(vocab[:3]) if vocab else "stripes"}]
            if caps.get("text"):
                warm.append({"kind": "text", "value": "a striped animal in the water"})
            for _ in range(2):
                request(base + "/api/search", json.dumps({"queries": warm}).encode())
                if caps.get("image"):
                    request(*fams["big-upload"])
            baseline = rss_mb(proc.pid)
            print(f"zslr serve --index {args.index}: {info['entries']} entries, model {info['model'] or 'none'}; "
                  f"capabilities {', '.join(k for k, v in caps.items() if v)}; {os.cpu_count()} CPUs")
            print(f"baseline RSS after warm-up: {baseline:.0f} MB; {args.requests} requests in flight per family\n")
            print(f"{'family':<18} {'body':>9} {'statuses':<22} {'wall s':>7} {'peak RSS MB':>12} {'extra MB':>9}")
            worst, bad = 0.0, False
            for name in chosen:
                url, body, ctype = fams[name]
                with Sampler(proc.pid) as s:
                    statuses, wall = burst(url, body, ctype, args.requests)
                extra = s.peak - baseline
                worst = max(worst, extra)
                bad |= any(x >= 500 for x in statuses)
                summary = ", ".join(f"{statuses.count(x)}x{x}" for x in sorted(set(statuses)))
                print(f"{name:<18} {len(body):>9,} {summary:<22} {wall:>7.2f} {s.peak:>12.0f} {extra:>9.0f}")
            print(f"\nworst extra RSS over the baseline: {worst:.0f} MB (limit {args.max_extra_mb:.0f} MB)")
            return int(bad or worst > args.max_extra_mb)
        finally:
            stop(proc)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
