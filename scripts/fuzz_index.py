#!/usr/bin/env python
"""Fuzz ingestion: N malformed JPEG/PNG/WebP/GIF/TIFF files through the decoder and `zslr index`.

The files come from tests/index/fuzz.py (truncations, bit flips, bad headers, huge declared
dimensions, splices, shuffled blocks, garbage after a magic number; seeded). Two passes:
1. in process: ``decode_image`` on every file may only return an RGB image or raise
   ImageDecodeError with a reason; any other exception is a crash (printed with its traceback);
2. a real ``zslr index`` subprocess over the folder: exit 0, no traceback in its output, every
   file in the catalog as ok or failed-with-a-reason, ``zslr check`` consistent.
Prints a table per format x mutation and exits 1 on any crash.

    python scripts/fuzz_index.py                       # 1,000 files, efficientnet-lite0
    python scripts/fuzz_index.py --n 100 --backbone tiny-test
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.index.fuzz import FORMATS, MUTATIONS, generate  # noqa: E402
from zslretrieval.features.images import ImageDecodeError, decode_image  # noqa: E402
from zslretrieval.index import check_index, open_index  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", default="efficientnet-lite0", help="tiny-test: the tests' fast stand-in")
    ap.add_argument("--workers", type=int, default=0, help="decoder processes of zslr index")
    ap.add_argument("--keep", type=Path, help="write files and index here instead of a temp folder")
    a = ap.parse_args(argv)
    if a.n < 1 or a.n > 100_000:
        ap.error(f"--n {a.n}; expected 1..100000")
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        files = generate(work / "fuzz", a.n, seed=a.seed)
        print(f"{a.n} malformed files (seed {a.seed}) in {work / 'fuzz'}")

        # 1. the decoder alone
        crashes, decoded = [], {}
        for f in files:
            try:
                img = decode_image(f.path.read_bytes())
                decoded[f.path] = "ok" if img.mode == "RGB" else f"mode {img.mode}"
            except ImageDecodeError as e:
                decoded[f.path] = "failed" if str(e).strip() else "failed without reason"
            except BaseException:  # noqa: BLE001  (that is what we look for)
                crashes.append((f.path.name, traceback.format_exc()))

        # 2. zslr index in a subprocess
        root = work / "ix"
        module = "tests.index.run_zslr" if a.backbone == "tiny-test" else "zslretrieval"
        cmd = [sys.executable, "-m", module, "index", str(work / "fuzz"), "--name", "fuzz", "--index-root", str(root),
               "--backbone", a.backbone, "--device", "cpu", "--workers", str(a.workers), "-q"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
        secs = time.perf_counter() - t0
        out = res.stdout + res.stderr
        tracebacks = out.count("Traceback (most recent call last)")
        status, reasons, unexplained = {}, Counter(), 0
        if res.returncode == 0:
            with open_index("fuzz", root) as ix:
                for r in ix.all_records(status=None):
                    status[Path(r.path)] = r.status
                    if r.status == "failed":
                        if not (r.error or "").strip():
                            unexplained += 1
                        reasons[(r.error or "").split(" (")[0]] += 1
            rep = check_index("fuzz", root)
            consistent = rep.current
        else:
            consistent = False

    print(f"\n| format | mutation | files | decoder ok | decoder failed | index ok | index failed |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for fmt in FORMATS:
        for mut in MUTATIONS:
            sel = [f.path for f in files if f.fmt == fmt and f.mutation == mut]
            if not sel:
                continue
            dec = Counter(decoded.get(p, "crash") for p in sel)
            ind = Counter(status.get(p, "missing") for p in sel)
            print(f"| {fmt} | {mut} | {len(sel)} | {dec['ok']} | {dec['failed']} | {ind['ok']} | {ind['failed']} |")
    total_dec = Counter(decoded.values())
    total_ix = Counter(status.values())
    print(f"\ndecoder: {total_dec['ok']} ok, {total_dec['failed']} failed with a reason, {len(crashes)} crash(es)")
    print(f"zslr index: exit {res.returncode} in {secs:.1f} s, {total_ix['ok']} ok, {total_ix['failed']} failed, "
          f"{a.n - len(status)} file(s) missing from the catalog, {unexplained} failure(s) without a reason, "
          f"{tracebacks} traceback(s) in its output; zslr check: {'consistent' if consistent else 'NOT consistent'}")
    print("failure reasons: " + "; ".join(f"{k} x{v}" for k, v in reasons.most_common()))
    for name, tb in crashes[:5]:
        print(f"\nCRASH decoding {name}:\n{tb}")
    if res.returncode != 0 or tracebacks:
        print(f"\nzslr index output (tail):\n{out[-4000:]}")
    bad = crashes or res.returncode != 0 or tracebacks or unexplained or len(status) != a.n or not consistent
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
