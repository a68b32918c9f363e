#!/usr/bin/env python
"""``zslr index --executor ray`` on a two-node local Ray cluster, the second node killed mid-run;
the index it builds is checked against a local-executor run over the same photos.

    python scripts/bench_ray_faults.py --n 300                       # 300 CUB photos (the small check)
    python scripts/bench_ray_faults.py --n 11788 --chunk-size 256    # the whole CUB collection

1. Lists ``--n`` photos spread evenly over ``--images`` (default the CUB-200-2011 photos; a list
   file in ``--work``, nothing is copied).
2. Local baseline: ``zslr index --file-list L --executor local`` (timed, img/s from its summary).
3. A Ray cluster of two nodes, each a separate ``ray start`` process group with its own temp dir
   under ``--work`` and ``--num-cpus 1``: the head (``--head --port``) and a second node
   (``--address``). One actor per CPU, so one encoder on each node.
4. ``zslr index --file-list L --executor ray --ray-address HEAD`` (``RAY_ADDRESS`` set too). Once
   the run said its actors are ready and one of them is a child of the second node's raylet (each
   actor then has partitions in flight) and at least two partitions are left, the second node's raylet (found by its temp dir in
   ``/proc/*/cmdline``) gets SIGKILL. Ray's token authentication (on by default since Ray 2.5x) gets
   a token made for the run, in the environment of the nodes and the driver.
5. Checks: exit 0; ``zslr check`` clean; catalog rows = files listed, unique paths, one vector each;
   features by path equal the local run's (max |diff| <= ``--atol``, default 1e-4); the retry was
   reported (the executor's ``ray: worker ... lost ...; partition P retried`` lines and the
   ``N lost, M partition(s) retried`` of the summary). Prints throughput of both runs.
Every process this script started is ended by its pid at the end (never ``ray stop``, which would
end every Ray on the machine). Exit 1 when a check fails.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from _procs import free_port  # noqa: E402
CUB = REPO.parent / "data" / "CUB_200_2011" / "images"
ENCODED = re.compile(r"encoded (\d+) image\(s\) in ([\d.]+) s \(([\d.]+) img/s, (.*)\)( after ([\d.]+) s start-up)?")


def list_photos(folder: Path, n: int, out: Path) -> list[str]:
    every = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(every) < n:
        raise SystemExit(f"bench: {folder} holds {len(every)} photos, fewer than --n {n}")
    picked = [every[int(i)] for i in np.linspace(0, len(every) - 1, n)]   # every class, not the first few
    out.write_text("".join(p + "\n" for p in picked))
    return picked


def pids_under(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (our temp dirs): the ones this script started."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def raylet_pid(temp_dir: Path) -> int | None:
    for pid in pids_under(str(temp_dir)):
        try:
            exe = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if exe.endswith(b"/raylet") or exe.endswith(b"raylet"):
            return pid
    return None


def actors_under(raylet: int) -> int:
    """Encoder actors running on the node of ``raylet`` (Ray's workers are the raylet's children)."""
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == raylet and b"EncoderWorker" in (d / "cmdline").read_bytes():
                    n += 1
            except (OSError, ValueError, IndexError):
                pass
    return n


def end_processes(marker: str) -> int:
    """SIGTERM, then SIGKILL, every process under our temp dir ``marker``, by pid."""
    mine, pid = set(), os.getpid()
    while pid > 1:   # this script and its ancestors (a `timeout` wrapper naming --work) are not Ray's
        mine.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    pids = [p for p in pids_under(marker) if p not in mine]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if Path(f"/proc/{p}").exists()]
    return len(pids)


def committed(db: Path) -> int | None:
    """Images committed so far; None while the catalog cannot be read (not created yet, or locked)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute("select count(*) from images").fetchone()[0]
    except sqlite3.Error:
        return None


def zslr(*args: str) -> list[str]:
    return [sys.executable, "-m", "zslretrieval", *args]


def run_index(args_: list[str], log: Path, env: dict, timeout: float) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        rc = subprocess.run(args_, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
    return rc, time.perf_counter() - t0, log.read_text(errors="replace")


def features_by_path(folder: Path) -> dict[str, np.ndarray]:
    from zslretrieval.index import open_index

    with open_index(folder, repair=False) as ix:
        paths = {r.id: r.path for r in ix.all_records()}
        ids, x = ix.raw_features()
    return {paths[int(i)]: row for i, row in zip(ids, x)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=CUB, help="photo folder [default: the CUB-200-2011 photos]")
    ap.add_argument("--n", type=int, default=300, help="photos to index")
    ap.add_argument("--chunk-size", type=int, default=16, help="paths per partition (and per local commit)")
    ap.add_argument("--batch-size", type=int, default=8, help="must divide --chunk-size (same commits as local)")
    ap.add_argument("--work", type=Path, help="scratch folder (short path: Ray's socket names are limited)")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--timeout", type=float, default=3000.0, help="give up on one zslr index run after this")
    ap.add_argument("--no-kill", action="store_true", help="the same Ray run without a fault (a baseline)")
    args = ap.parse_args(argv)
    if args.n < 2 * args.chunk_size or args.chunk_size % args.batch_size:
        ap.error("--n >= 2 x --chunk-size (a partition before and after the kill); --batch-size divides --chunk-size")
    work = args.work or Path(tempfile.mkdtemp(prefix="zrf-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    head_dir, node_dir = work / "rh", work / "rn"
    ray_bin = str(Path(sys.executable).with_name("ray"))
    # Ray >= 2.5x starts a head with token authentication: every node and the driver need the token.
    # One made here for this cluster, passed by environment (never written to ~/.ray).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)}
    roots = work / "indexes"
    shutil.rmtree(roots, ignore_errors=True)
    common = ["--index-root", str(roots), "--chunk-size", str(args.chunk_size), "--batch-size", str(args.batch_size),
              "--device", "cpu"]
    failures: list[str] = []
    try:
        listed = list_photos(args.images, args.n, work / "photos.txt")
        print(f"bench: {len(listed)} photos from {args.images}; local run ...", file=sys.stderr, flush=True)
        rc, local_s, local_out = run_index(zslr("index", "--file-list", str(work / "photos.txt"), "--name", "local",
                                                "--executor", "local", "--workers", "0", *common),
                                           work / "local.log", env, args.timeout)
        if rc != 0:
            raise SystemExit(f"bench: local run failed ({rc}):\n{local_out[-2000:]}")

        port = free_port()
        print(f"bench: starting a 2-node Ray cluster on 127.0.0.1:{port} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        for cmd in ([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "1", "--temp-dir", str(head_dir),
                     "--node-ip-address", "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats"],
                    [ray_bin, "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1", "--temp-dir",
                     str(node_dir), "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]):
            # own session: Ray's daemons (and any signal Ray sends their group) stay apart from this script
            # output to a file, not a pipe: Ray's daemons inherit it and would hold a pipe open
            with open(work / "ray-start.log", "ab") as out:
                rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=300,
                                    start_new_session=True).returncode
            if rc != 0:
                raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{(work / 'ray-start.log').read_text()[-2000:]}")
        cluster_s = time.perf_counter() - t0
        victim = raylet_pid(node_dir)
        if victim is None:
            raise SystemExit(f"bench: no raylet found under {node_dir}")

        renv = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        log = work / "ray.log"
        db = roots / "ray" / "catalog.sqlite"
        killed_at = None
        t0 = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen(zslr("index", "--file-list", str(work / "photos.txt"), "--name", "ray", "--executor",
                                         "ray", "--ray-address", f"127.0.0.1:{port}", *common),
                                    stdout=out, stderr=subprocess.STDOUT, env=renv)
            while proc.poll() is None:
                if time.perf_counter() - t0 > args.timeout:
                    proc.kill()
                    failures.append(f"ray run did not finish in {args.timeout:.0f} s")
                    break
                if killed_at is None and not args.no_kill and actors_under(victim) \
                        and " ready in " in log.read_text(errors="replace"):
                    done = committed(db)   # an actor is up on the second node, with partitions in flight
                    if done is not None and done <= len(listed) - 2 * args.chunk_size:
                        os.kill(victim, signal.SIGKILL)
                        killed_at = (time.perf_counter() - t0, done)
                        print(f"bench: SIGKILL raylet {victim} of the second node at {killed_at[0]:.1f} s, "
                              f"{done} images committed", file=sys.stderr, flush=True)
                time.sleep(0.05)
        ray_s = time.perf_counter() - t0
        ray_out = log.read_text(errors="replace")
        if proc.returncode != 0:
            failures.append(f"ray run exit {proc.returncode}: {ray_out[-1500:]}")
        if not args.no_kill and killed_at is None:
            failures.append("the second node was never killed (no actor was placed on it, or the run ended "
                            "first); try a larger --n")

        # ---- checks
        chk = subprocess.run(zslr("check", "--name", "ray", "--index-root", str(roots)), capture_output=True,
                             text=True, env=env)
        if chk.returncode != 0:
            failures.append(f"zslr check: {chk.stdout[-800:]}")
        with sqlite3.connect(db) as c:
            n_rows, n_unique = c.execute("select count(*), count(distinct path) from images").fetchone()
            n_ok = c.execute("select count(*) from images where status = 'ok'").fetchone()[0]
            n_vec, n_vec_unique = c.execute("select count(*), count(distinct image_id) from index_entries").fetchone()
        if not (n_rows == n_unique == len(listed) and n_vec == n_vec_unique == n_ok):
            failures.append(f"catalog: {n_rows} rows, {n_unique} unique paths, {n_ok} ok, {n_vec} vectors "
                            f"({n_vec_unique} distinct images) for {len(listed)} files")
        fa, fb = features_by_path(roots / "local"), features_by_path(roots / "ray")
        if fa.keys() != fb.keys():
            failures.append(f"paths differ: {len(fa.keys() - fb.keys())} only local, {len(fb.keys() - fa.keys())} only ray")
        common_paths = sorted(fa.keys() & fb.keys())
        diff = float(np.max(np.abs(np.stack([fa[p] for p in common_paths]) - np.stack([fb[p] for p in common_paths]))))
        if not diff <= args.atol:
            failures.append(f"features: max |diff| {diff:.3g} > {args.atol:g}")
        retry_lines = [ln for ln in ray_out.splitlines() if ln.startswith("ray: ")]
        m_local, m_ray = ENCODED.search(local_out), ENCODED.search(ray_out)
        reported = m_ray.group(4) if m_ray else "?"
        if not args.no_kill and "retried" not in reported:
            failures.append(f"no retry reported (executor summary: {reported!r})")
    finally:
        left = end_processes(str(work))
        if left:
            print(f"bench: {left} process(es) under {work} did not end", file=sys.stderr)

    load = os.getloadavg()
    print(f"\nRay with a node lost: {len(listed)} photos of {args.images}, chunk {args.chunk_size}, batch "
          f"{args.batch_size}, {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"cluster: head + 1 node, 1 CPU each, up in {cluster_s:.1f} s; "
          + (f"second node's raylet SIGKILLed {killed_at[0]:.1f} s into the run, {killed_at[1]} images committed"
             if killed_at else "no fault injected"))
    print(f"\n{'executor':<44}{'wall s':>9}{'encode s':>10}{'img/s':>8}{'start-up s':>12}")
    for name, m, wall in (("local, 1 process, 1 thread (baseline)", m_local, local_s),
                          ("ray, 2 nodes x 1 actor" + (", node 2 killed" if killed_at else ""), m_ray, ray_s)):
        if m:
            print(f"{name:<44}{wall:>9.1f}{float(m.group(2)):>10.1f}{float(m.group(3)):>8.1f}"
                  f"{float(m.group(6) or 0):>12.1f}")
        else:
            print(f"{name:<44}{wall:>9.1f}  (no summary line)")
    print(f"\nexecutor summary: {reported}")
    for ln in retry_lines:
        print(f"  {ln}")
    print(f"catalog: {n_rows} rows / {n_unique} unique paths / {n_ok} ok / {n_vec} vectors for {len(listed)} files; "
          f"features vs local: max |diff| {diff:.3g} (tolerance {args.atol:g}); zslr check exit {chk.returncode}")
    for f in failures:
        print(f"FAILED: {f}")
    if not failures:
        print("OK: the job completed, nothing lost or duplicated, features equal the local run's, retry reported")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
