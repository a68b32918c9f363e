#!/usr/bin/env python
"""What a user waits for at the shell: wall time and peak memory of whole ``zslr`` processes.

Each row is one process started the way a user starts it (``python -m zslretrieval ...``), measured
from spawn to exit: wall seconds (``time.perf_counter``) and its peak resident set (``ru_maxrss`` of
that child, from ``os.wait4``). In order, on empty data, cache and index folders (``--workdir``;
``ZSLR_DATA``/``ZSLR_CACHE``/``ZSLR_INDEXES`` point there):

    baseline             python -c "import numpy, faiss": the floor of any process that searches
    index                zslr index IMAGES (exports the backbone's ONNX graph once)
    text, first run      zslr query --text tiger: the first query of a fresh data/cache folder
                         (exports the sentence encoder's graph; the general model ships as package data)
    text, later runs     the same query again (--repeats runs: median and worst)
    class / attributes   zslr query --class okapi / --attributes "stripes, water"
    image, cold          zslr query --image PHOTO, a new process (the backbone graph through ONNX Runtime)
    serve ready          zslr serve: spawn to its ready line (opened, loaded, warmed up)
    serve first search   the first HTTP search after the ready line (wall at the client)

Every figure is also given against the baseline of the same run (ratio and difference), since the
machine may be shared; the load average (``os.getloadavg``) is printed before and after. The
``target`` column holds issue #29's bounds (first text query <= 10 s; later ones <= 1.5 s and
<= 400 MB; serve first search <= 0.5 s; image query cold <= 2.5 s).

    python scripts/bench_cli.py                                   # awa2's 30 photos beside the repo
    python scripts/bench_cli.py --images DIR --repeats 5 --keep   # keep the work folder
    python scripts/bench_cli.py --quick --images DIR --data D --cache C   # the test's short run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "photos" / "awa2" / "JPEGImages"
TARGETS = {"text, first run": (10.0, None), "text, later runs": (1.5, 400.0), "serve first search": (0.5, None),
           "image, cold": (2.5, None)}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass
class Row:
    name: str
    wall: float                 # seconds
    rss_mb: float | None        # peak resident set of the process, MiB (None: not a process of its own)
    note: str = ""


def run_process(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[float, float, str, str]:
    """(wall s, peak RSS MiB, stdout, stderr) of ``cmd``; RuntimeError when it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = t0 + timeout
        while True:   # os.wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the max of all)
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode} after {wall:.1f} s:\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss / 1024, stdout, stderr


def zslr(*args: str) -> list[str]:
    return [sys.executable, "-m", "zslretrieval", *args]


def serve_rows(env: dict[str, str], index: str, query: str, timeout: float) -> list[Row]:
    """``zslr serve``: spawn -> ready line, then the first search's wall time at the client."""
    t0 = time.perf_counter()
    p = subprocess.Popen(zslr("serve", "--index", index, "--port", "0", "--reload-interval", "0"), env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, lines = None, []
    try:
        for line in p.stderr:
            lines.append(line)
            if "http://" in line:
                url = line.split("http://", 1)[1].split("/", 1)[0]
                break
            if time.perf_counter() - t0 > timeout:
                break
        ready = time.perf_counter() - t0
        if url is None:
            raise RuntimeError("zslr serve printed no ready line:\n" + "".join(lines)[-3000:])
        t1 = time.perf_counter()
        with urllib.request.urlopen(f"http://{url}/api/search?{query}", timeout=timeout) as r:
            body = json.load(r)
        first = time.perf_counter() - t1
        t2 = time.perf_counter()
        with urllib.request.urlopen(f"http://{url}/api/search?{query}", timeout=timeout) as r:
            json.load(r)
        second = time.perf_counter() - t2
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            rss = usage.ru_maxrss / 1024
        except ChildProcessError:
            rss = None
        p.stderr.close()
    return [Row("serve ready", ready, rss, "spawn -> ready line; RSS: the server's peak"),
            Row("serve first search", first, None, f"HTTP GET, server took {body['took_ms']:.0f} ms"),
            Row("serve second search", second, None, "")]


def first_image(folder: Path) -> Path:
    for p in sorted(folder.rglob("*")):
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            return p
    raise SystemExit(f"no image under {folder}")


def bench(args: argparse.Namespace) -> list[Row]:
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="zslr-bench-cli-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ,
           "ZSLR_DATA": str(Path(args.data) if args.data else work / "data"),
           "ZSLR_CACHE": str(Path(args.cache) if args.cache else work / "cache"),
           "ZSLR_INDEXES": str(work / "indexes"), "XDG_CACHE_HOME": str(work / "xdg-cache"),
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    t = args.timeout
    rows: list[Row] = []
    try:
        wall, rss, _, _ = run_process([sys.executable, "-c", "import numpy, faiss"], env, t)
        rows.append(Row("baseline", wall, rss, "python -c 'import numpy, faiss'"))
        wall, rss, _, _ = run_process(zslr("index", str(args.images), "--name", "bench"), env, t)
        rows.append(Row("index", wall, rss, f"zslr index ({sum(1 for _ in _images(args.images))} images)"))
        text = ["query", "--index", "bench", "--text", args.text]
        wall, rss, _, err = run_process(zslr(*text), env, t)
        rows.append(Row("text, first run", wall, rss, f"data folder {'given' if args.data else 'fresh'}, "
                                                       f"cache {'given' if args.cache else 'fresh'}"))
        later = [run_process(zslr(*text), env, t)[:2] for _ in range(args.repeats)]
        walls, rsss = [w for w, _ in later], [r for _, r in later]
        rows.append(Row("text, later runs", statistics.median(walls), max(rsss),
                        f"median of {len(walls)}, worst {max(walls):.2f} s; RSS: worst"))
        wall, rss, _, _ = run_process(zslr("query", "--index", "bench", "--class", args.class_name), env, t)
        rows.append(Row("class", wall, rss, f"--class {args.class_name}"))
        wall, rss, _, _ = run_process(zslr("query", "--index", "bench", "--attributes", args.attributes), env, t)
        rows.append(Row("attributes", wall, rss, f"--attributes {args.attributes!r}"))
        photo = first_image(Path(args.images))
        wall, rss, _, _ = run_process(zslr("query", "--index", "bench", "--image", str(photo)), env, t)
        rows.append(Row("image, cold", wall, rss, photo.name))
        rows.extend(serve_rows(env, "bench", f"text={urllib.request.quote(args.text)}", t))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def _images(folder: str | os.PathLike):
    return (p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTS)


def table(rows: list[Row]) -> str:
    base = next(r for r in rows if r.name == "baseline")
    head = ("| process | wall s | x baseline | - baseline s | peak RSS MiB | x baseline | - baseline MiB | target | note |\n"
            "|---|---:|---:|---:|---:|---:|---:|---|---|")
    lines = [head]
    for r in rows:
        rss = f"{r.rss_mb:.0f}" if r.rss_mb is not None else "-"
        rx = f"{r.rss_mb / base.rss_mb:.2f}" if r.rss_mb is not None else "-"
        rd = f"{r.rss_mb - base.rss_mb:+.0f}" if r.rss_mb is not None else "-"
        target = ""
        if r.name in TARGETS:
            tw, tm = TARGETS[r.name]
            ok = r.wall <= tw and (tm is None or (r.rss_mb is not None and r.rss_mb <= tm))
            target = f"<= {tw:g} s" + (f", <= {tm:g} MB" if tm else "") + (" ok" if ok else " MISSED")
        lines.append(f"| {r.name} | {r.wall:.2f} | {r.wall / base.wall:.1f} | {r.wall - base.wall:+.2f} | {rss} | "
                     f"{rx} | {rd} | {target} | {r.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default=str(DEFAULT_IMAGES), help="folder of photos to index (default: awa2's 30)")
    ap.add_argument("--text", default="tiger")
    ap.add_argument("--class", dest="class_name", default="okapi")
    ap.add_argument("--attributes", default="stripes, water")
    ap.add_argument("--repeats", type=int, default=3, help="later text queries to time")
    ap.add_argument("--workdir", default=None, help="work folder (default: a temp folder, removed after)")
    ap.add_argument("--data", default=None, help="use this data folder instead of a fresh one")
    ap.add_argument("--cache", default=None, help="use this cache folder instead of a fresh one")
    ap.add_argument("--keep", action="store_true", help="keep the temp work folder")
    ap.add_argument("--quick", action="store_true", help="one later text query (for the test)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if not Path(args.images).is_dir():
        raise SystemExit(f"--images {args.images}: not a folder")
    load0 = os.getloadavg()
    rows = bench(args)
    load1 = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores; load average (1, 5, 15 min) before "
          f"{' '.join(f'{x:.2f}' for x in load0)}, after {' '.join(f'{x:.2f}' for x in load1)}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
