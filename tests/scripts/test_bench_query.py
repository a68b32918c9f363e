"""scripts/bench_query.py must run end to end and break one query down into the stages run() takes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_query.py"


def test_bench_query_small_run_times_the_lean_single_query_stages():
    # ~5 s of CPU; generous timeout: CI cores are shared
    r = subprocess.run([sys.executable, str(SCRIPT), "--n-gallery", "500", "--single", "20", "--batch", "20",
                        "--repeats", "1"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "== staged single-query results on 20 queries: True" in r.stdout, r.stdout
    line = next(l for l in r.stdout.splitlines() if l.startswith("Single-query breakdown"))
    for stage in ("_attribute_descriptors", "_attribute_embed", "search_unchecked", "collect"):
        assert stage in line, line
