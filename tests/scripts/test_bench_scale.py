"""scripts/bench_scale.py: the synthetic CUB-like draw, and a tiny end-to-end run (quick mode)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bench_scale.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = mod        # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_synthetic_rows_are_reproducible_non_negative_and_near_their_centre():
    m = _module()
    gen = m.SyntheticCub(noise=0.5, seed=1)          # the seeded stand-in: no cache file read
    (a, ca), = list(gen.draw(500))
    (b, cb), = list(gen.draw(500))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ca, cb)
    assert a.dtype == np.float32 and a.shape == (500, gen.dim) and a.min() >= 0
    own = np.linalg.norm(a - gen.centres[ca], axis=1)
    other = np.linalg.norm(a - gen.centres[np.roll(ca, 1)], axis=1)
    assert np.median(own) < np.median(other)         # each row sits by the real row it was drawn from


def test_growth_flags_a_step_whose_cost_per_image_grows():
    m = _module()
    small, big = m.Row(1000, {"commit_chunk": 1.0, "sync_index": 1.0}), m.Row(10000, {"commit_chunk": 10.0,
                                                                                       "sync_index": 40.0})
    g = m.growth([small, big])
    assert g["commit_chunk"] == 1.0 and g["sync_index"] == 4.0


def test_quick_run_ingests_every_row_and_measures_each_step(tmp_path):
    out = tmp_path / "scale.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--n", "300", "--n", "900", "--queries", "8", "--no-serve",
                        "--no-text", "--work", str(tmp_path / "w"), "--json", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [x["n"] for x in rows] == [300, 900]
    for x in rows:
        assert x["index_type"] == "Flat"                      # auto keeps Flat below 50k vectors: exact
        assert x["recall@10"] == 1.0
        assert x["disk_per_image"] > 1280 * 4                 # the float32 features are stored
        assert all(len(v) == 8 for v in x["latency"].values())
        for step in ("commit_chunk", "sync_index", "choose_index_type", "ingest (index_features_file)"):
            assert x["seconds"][step] > 0
    assert "ingest rate, images/s" in r.stdout and "growth from 300 to 900 images" in r.stdout
