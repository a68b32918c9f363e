"""Query by example image on real indexes built by ``index_images`` with the offline EfficientNet-Lite0."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.index import open_index
from zslretrieval.index.searchers import exact_scores
from zslretrieval.metrics.ranking import rank_by_scores
from zslretrieval.query import QueryEngine, QuerySpec


def test_image_query_on_real_photos(shared_data, tmp_path):
    from zslretrieval.ingest import IndexConfig, index_images

    photos = shared_data / "photos" / "awa2" / "JPEGImages"
    # every third photo keeps the test quick on 2 CPU cores; labels come from the class folders
    chosen = sorted(photos.rglob("*.jpg"))[::3]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\t{p.parent.name}\n" for p in chosen))
    rep = index_images(IndexConfig(file_list=listing, name="photos", root=tmp_path, device="cpu",
                                   workers=0))
    assert rep.n_ok == len(chosen) == 10
    probe = chosen[4]
    with open_index("photos", tmp_path) as ix:
        engine = QueryEngine(ix)
        spec = QuerySpec("image", str(probe))
        res = engine.run([spec], k=30)[0]   # k above the gallery size: everything, ranked
        xq = engine.embed([engine.prepare(spec)])
        ids, x = ix.vectors()
    assert res.hits[0].path == str(probe) and res.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert res.hits[0].label == probe.parent.name
    # the query image is decoded and embedded exactly like the indexed copy of the same file
    np.testing.assert_allclose(xq[0], x[list(ids).index(res.hits[0].id)], atol=1e-5)
    order = rank_by_scores(exact_scores(xq, x, "ip"))[0]
    assert [h.id for h in res.hits] == list(ids[order])


def test_image_query_generated_images_and_bad_file(tmp_path):
    from PIL import Image

    from zslretrieval.ingest import IndexConfig, index_images

    folder = tmp_path / "imgs" / "red"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        arr = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
    index_images(IndexConfig(inputs=[tmp_path / "imgs"], name="gen", root=tmp_path / "ix", device="cpu", workers=0))
    runner = CliRunner()
    base = ["query", "--index", "gen", "--index-root", str(tmp_path / "ix")]
    r = runner.invoke(cli, base + ["--image", str(folder / "2.png"), "--json", "--top-k", "4"])
    assert r.exit_code == 0, r.output
    hits = json.loads(r.stdout)["results"]
    assert hits[0]["path"] == str(folder / "2.png") and hits[0]["label"] == "red" and len(hits) == 4
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    r = runner.invoke(cli, base + ["--image", str(bad)])
    assert r.exit_code == 2 and "cannot be decoded" in r.output
    vec = tmp_path / "v.txt"
    vec.write_text("1 0 1")
    r = runner.invoke(cli, base + ["--attribute-file", str(vec)])
    assert r.exit_code == 2 and "need an index built with a model" in r.output
