"""Near duplicates (issue 31): exact pairs against brute force, groups by union-find, planted copies
found through ``index_images`` -> ``find_duplicates``, the CLI formats and the API route."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tests.index.fakes  # noqa: F401  (tiny-test backbone)
from zslretrieval.cli import cli
from zslretrieval.cli import duplicates as dup_cli
from zslretrieval.errors import InvalidInputError
from zslretrieval.index import duplicates as dup
from zslretrieval.index.duplicates import duplicate_pairs, find_duplicates, group_pairs
from zslretrieval.ingest import IndexConfig, index_images


def _blocks(x, b):
    return (x[i:i + b] for i in range(0, len(x), b))


def test_pairs_equal_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 12)).astype(np.float32)
    x = np.concatenate([base, base[:10] + 0.05 * rng.standard_normal((10, 12)).astype(np.float32)])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    for t in (0.5, 0.9, 0.99):
        want = {(i, j) for i in range(len(x)) for j in range(i + 1, len(x)) if sims[i, j] >= t}
        for block in (7, 64):
            i, j, s = duplicate_pairs(_blocks(x, 13), len(x), 12, t, block=block)
            assert set(zip(i.tolist(), j.tolist())) == want, (t, block)
            np.testing.assert_allclose(s, sims[i, j], atol=1e-5)
    # exact copies pair at threshold 1.0 despite float32 rounding
    i, j, _ = duplicate_pairs([np.vstack([x[:3], x[:1]])], 4, 12, 1.0)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 3)]


def test_groups_are_connected_components_and_low_thresholds_refused():
    groups = group_pairs(7, np.array([0, 2, 5]), np.array([2, 4, 6]))
    assert [g.tolist() for g in groups] == [[0, 2, 4], [5, 6]]
    assert group_pairs(3, np.zeros(0, np.int64), np.zeros(0, np.int64)) == []
    x = np.ones((50, 4), np.float32)
    with pytest.raises(InvalidInputError, match="raise --threshold"):
        duplicate_pairs([x], 50, 4, 0.5, max_pairs=100)
    for bad in (0, -0.2, 1.5, float("nan")):
        with pytest.raises(InvalidInputError, match="--threshold"):
            dup.check_threshold(bad)
    assert dup_cli.DEFAULT_THRESHOLD == dup.DEFAULT_THRESHOLD   # the light CLI copy of the default


def _photo(path, seed):
    """A smooth, structured picture (random blobs of colour) that survives resizing like a photo."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:96, 0:128] / 96.0
    img = np.zeros((96, 128, 3))
    for _ in range(6):
        cy, cx, r = rng.random(3) * [1, 1.33, 0.4] + [0, 0, 0.1]
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r ** 2)[..., None] * rng.random(3) * 255
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)


@pytest.fixture()
def planted(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for k in range(10):
        _photo(folder / f"p{k}.jpg", seed=k)
    with Image.open(folder / "p1.jpg") as im:
        im.resize((64, 48), Image.LANCZOS).save(folder / "p1_small.jpg", quality=90)
        im.save(folder / "p1_q30.jpg", quality=30)
    with Image.open(folder / "p6.jpg") as im:
        im.crop((6, 5, 122, 91)).save(folder / "p6_crop.jpg", quality=90)
    index_images(IndexConfig(inputs=[folder], root=tmp_path / "ix", backbone="tiny-test", device="cpu", workers=0,
                             batch_size=4))
    return tmp_path


def _names(rep):
    return sorted(sorted(m.path.rsplit("/", 1)[1] for m in g.members) for g in rep.groups)


def test_planted_copies_grouped(planted):
    rep = find_duplicates("default", planted / "ix", threshold=0.97)
    assert _names(rep) == [["p1.jpg", "p1_q30.jpg", "p1_small.jpg"], ["p6.jpg", "p6_crop.jpg"]]
    assert rep.n_images == 13 and rep.n_duplicates == 3
    g = rep.groups[0]
    assert {m.id: m.path.rsplit("/", 1)[1] for m in g.members}[g.keep] in ("p1.jpg", "p1_q30.jpg")  # 128x96, not the small one
    assert all(0.97 <= m.similarity <= 1.0 for m in g.members)
    assert {(m.width, m.height) for m in g.members} == {(128, 96), (64, 48)}
    assert find_duplicates("default", planted / "ix", threshold=1.0).groups == []  # no byte-identical copies


def test_cli_formats(planted):
    def run(*args):
        res = CliRunner().invoke(cli, ["duplicates", "--index-root", str(planted / "ix"), "--threshold", "0.97", *args])
        assert res.exit_code == 0, res.output
        return res.output
    text = run()
    assert "group 1: 3 images" in text and "2 group(s) of near duplicates, 3 image(s) beyond the one to keep, among 13" in text
    doc = json.loads(run("--format", "json"))
    assert [g["size"] for g in doc["groups"]] == [3, 2] and doc["threshold"] == 0.97
    lines = [json.loads(x) for x in run("--format", "jsonl").splitlines()]
    assert [x["group"] for x in lines] == [1, 2] and lines[0]["members"] == doc["groups"][0]["members"]
    rows = list(csv.DictReader(io.StringIO(run("--format", "csv"))))
    assert len(rows) == 5 and sum(int(r["keep"]) for r in rows) == 2 and {r["group"] for r in rows} == {"1", "2"}
    res = CliRunner().invoke(cli, ["duplicates", "--index-root", str(planted / "ix"), "--threshold", "2"])
    assert res.exit_code == 2 and "--threshold 2.0" in res.output


def test_help_imports_no_library():
    from tests.cli.test_startup import _heavy_modules_after

    assert _heavy_modules_after("duplicates", "--help") == []
