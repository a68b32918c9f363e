"""scripts/bench_gpu.py must run end to end; --quick --device cpu is the CPU smoke run."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gpu.py"


def test_bench_gpu_quick_runs_and_prints_tables():
    # generous timeout: the quick run needs ~15 s of CPU, but CI cores are shared
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--sizes", "4000x64",
                        "--queries", "1,16", "--images", "6"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    for label in ("torch fp16 scan + fp32 re-rank (exact)", "torch bf16 scan + fp32 re-rank (exact)",
                  "torch fp32 scan (exact; baseline)", "faiss-cpu Flat fp32",
                  "PIL decode+transform", "decode_jpeg", "resnet18"):
        assert label in out, label
    search_rows = [l for l in out.splitlines() if "| 4,000 x 64 |" in l]
    assert len(search_rows) == 4 * 2
    for row in search_rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        latency, qps, floor, ratio = (float(c.replace(",", "")) for c in cells[3:7])
        assert latency > 0 and qps > 0 and floor > 0 and ratio > 1  # a CPU cannot beat an H100's floor
    assert re.search(r"\| PIL workers -> resnet18 fp32 channels_last \(baseline\) \| [\d,.]+ \|", out)
