"""100 malformed JPEG/PNG/WebP/GIF/TIFF files (tests/index/fuzz.py): no crash, every failure has a reason.

scripts/fuzz_index.py runs the same at 1,000 files.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.index.fuzz import FORMATS, MUTATIONS, generate
from zslretrieval.features.images import ImageDecodeError, decode_image
from zslretrieval.index import check_index, open_index

REPO = Path(__file__).resolve().parents[2]
N = 100


def test_generator_covers_formats_and_mutations(tmp_path):
    files = generate(tmp_path, 70, seed=1)
    assert {(f.fmt, f.mutation) for f in files} == {(a, b) for a in FORMATS for b in MUTATIONS}
    assert [f.path.read_bytes() for f in files] == [f.path.read_bytes() for f in generate(tmp_path / "again", 70, seed=1)]


def test_decoder_raises_only_decode_errors(tmp_path):
    outcomes = Counter()
    for f in generate(tmp_path, N, seed=0):
        try:
            img = decode_image(f.path.read_bytes())
            assert img.mode == "RGB" and img.size[0] * img.size[1] > 0
            outcomes["ok"] += 1
        except ImageDecodeError as e:
            assert str(e).strip(), f.path
            outcomes["failed"] += 1
    assert outcomes["failed"] >= N // 2 and sum(outcomes.values()) == N


def test_pixel_limit_names_size_and_limit():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, "PNG")
    with pytest.raises(ImageDecodeError, match="40x30 = 1,200 pixels exceeds the limit of 1,000 pixels"):
        decode_image(buf.getvalue(), max_pixels=1000)
    assert decode_image(buf.getvalue(), max_pixels=1200).size == (40, 30)


def test_zslr_index_over_malformed_files(tmp_path):
    files = generate(tmp_path / "fuzz", N, seed=0)
    root = tmp_path / "ix"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "tests.index.run_zslr", "index", str(tmp_path / "fuzz"), "--backbone", "tiny-test",
           "--index-root", str(root), "--device", "cpu", "--workers", "0", "--chunk-size", "32", "-q"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "Error" not in res.stderr, out[-3000:]
    with open_index("default", root) as ix:
        failed = ix.all_records(status="failed")
        ok = ix.all_records(status="ok")
        assert len(ok) + len(failed) == N and ix.ntotal == len(ok)
        assert all(r.error and r.error.strip() for r in failed)
        assert {r.path for r in ok} | {r.path for r in failed} == {str(f.path) for f in files}
    reasons = Counter(r.error.split(" (")[0] for r in failed)
    assert reasons["decompression bomb refused"] > 0 and reasons["not an image"] > 0, reasons
    assert f"{len(failed)} failed" in res.stdout
    assert check_index("default", root).current


def test_extreme_aspect_ratio_is_cropped_before_resize():
    """A 19 x 2,097,188 TIFF (a fuzzed header, within the pixel limit) made Resize allocate ~20 GB."""
    import torch

    from zslretrieval.features.backbones import MAX_ASPECT, PreprocessSpec, limit_aspect

    x = torch.zeros((3, 19, 2_097_188), dtype=torch.uint8)
    assert limit_aspect(x).shape == (3, 19, 19 * MAX_ASPECT)
    assert limit_aspect(x.transpose(1, 2)).shape == (3, 19 * MAX_ASPECT, 19)
    photo = torch.zeros((3, 480, 640), dtype=torch.uint8)
    assert limit_aspect(photo) is photo  # ordinary images pass unchanged
    t = PreprocessSpec(resize=36, crop=32).pil_transform()
    assert t(Image.new("RGB", (2_000_000, 3))).shape == (3, 32, 32)
