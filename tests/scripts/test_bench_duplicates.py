"""scripts/bench_duplicates.py: the planted copies and the recall / precision it prints are what they say."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_duplicates", ROOT / "scripts" / "bench_duplicates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plant_and_score(tmp_path):
    b = _bench()
    srcs = []
    for k in range(3):
        p = tmp_path / f"src{k}.jpg"
        Image.fromarray((np.random.default_rng(k).random((40, 60, 3)) * 255).astype(np.uint8)).save(p)
        srcs.append(p)
    (tmp_path / "out").mkdir()
    truth = b.plant(srcs, tmp_path / "out")
    assert len(truth) == 12 and sorted({v for _, v in truth.values()}) == ["cropped", "original", "recompressed", "resized"]
    by = {(k, v): p for p, (k, v) in truth.items()}
    with Image.open(by[(0, "resized")]) as a, Image.open(by[(0, "cropped")]) as c:
        assert a.size == (30, 20) and c.size == (51, 34)
    perfect = [[p for p, (k, _) in truth.items() if k == s] for s in range(3)]
    r = b.score(perfect, truth)
    assert (r["recall"], r["precision"], r["pairs"]) == (1.0, 1.0, 18)
    merged = [perfect[0] + perfect[1], perfect[2][:2]]   # two photos merged; photo 2 keeps one copy
    r = b.score(merged, truth)
    assert r["pairs"] == 28 + 1 and r["precision"] == (6 + 6 + 1) / 29
    assert r["recall"] == 7 / 9 and r["resized"] == 1.0 and r["recompressed"] == 2 / 3
    assert b.score([], truth)["recall"] == 0.0
