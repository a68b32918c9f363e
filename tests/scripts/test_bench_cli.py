"""scripts/bench_cli.py must run end to end (quick mode) and report every row against its baseline."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_cli.py"
ROWS = ("baseline", "index", "text, first run", "text, later runs", "class", "attributes", "image, cold",
        "serve ready", "serve first search")


def test_bench_cli_quick_run_prints_the_table_against_its_baseline(tmp_path):
    rng = np.random.default_rng(0)
    for i, label in enumerate(["red", "green", "blue"]):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.fromarray((rng.random((80, 100, 3)) * 255).astype(np.uint8)).save(tmp_path / "imgs" / label / f"{i}.jpg")
    # the session's data and cache folders (conftest): exports and the general model are built once per session
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--images", str(tmp_path / "imgs"),
                        "--data", os.environ["ZSLR_DATA"], "--cache", os.environ["ZSLR_CACHE"],
                        "--workdir", str(tmp_path / "work"), "--timeout", "600"],
                       capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "load average" in r.stdout
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 9 and cells[0] in ROWS:
            rows[cells[0]] = cells
    assert set(rows) == set(ROWS), r.stdout
    assert rows["baseline"][2] == "1.0" and rows["baseline"][3] == "+0.00"
    base_wall = float(rows["baseline"][1])
    for name, cells in rows.items():
        wall, ratio = float(cells[1]), float(cells[2])
        # both walls are printed to 0.01 s: at sub-second walls that rounding, not the script, bounds the ratio
        slack = 0.051 + 0.01 * ratio + 0.005 * (1 + ratio) / base_wall
        assert wall > 0 and abs(ratio - wall / base_wall) <= slack, (name, cells)
        assert re.fullmatch(r"[+-]\d+\.\d\d", cells[3]), cells
    for name in ("text, first run", "text, later runs", "serve first search", "image, cold"):
        assert rows[name][7].endswith(("ok", "MISSED")), rows[name]   # the bound, judged
    assert float(rows["text, later runs"][4]) > float(rows["baseline"][4])   # peak RSS of the process itself
