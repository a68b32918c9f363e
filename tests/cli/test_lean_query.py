"""#29: a text, class or attribute query on a raw index runs on the lean path.

- the process imports the ONNX sentence encoder, the general model's arrays, FAISS, the catalog
  and numpy, and none of torch, transformers, sentence-transformers, scikit-learn, timm, torchvision;
- ``zslr serve`` is warm before its ready line: encoder, general model, terms and records loaded.

Processes are real subprocesses (what a user starts): a module imported once by the test runner
would hide an import the CLI makes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "timm", "torchvision")

# Runs `zslr ARGS...` in this process and reports which heavy packages it imported (stderr's last line).
_PROBE = """
import json, sys
from zslretrieval.cli import main
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
else:
    code = 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print(json.dumps({"exit": code, "heavy": heavy}), file=sys.stderr)
""" % (HEAVY,)

def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


def warm_caches() -> None:
    """What a first query of the session's data/cache folders would build once (the sentence encoder's
    ONNX export, which imports torch by design; the general model), so the probes see later queries."""
    from zslretrieval.text import encode_texts
    from zslretrieval.text.general import load_general_model
    encode_texts(["warm"])
    load_general_model("efficientnet-lite0")


@pytest.fixture(scope="module")
def generated_index(tmp_path_factory):
    """A raw-feature index (efficientnet-lite0) of four generated photos."""
    from PIL import Image

    from zslretrieval.ingest import IndexConfig, index_images
    tmp = tmp_path_factory.mktemp("lean")
    rng = np.random.default_rng(0)
    for i, name in enumerate(["red", "red", "green", "blue"]):
        folder = tmp / "imgs" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((96, 128, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    index_images(IndexConfig(inputs=[tmp / "imgs"], name="lean", root=tmp / "ix", device="cpu", workers=0))
    warm_caches()
    return tmp / "ix"


def _probe(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, env=_env(), timeout=300)
    out = json.loads(r.stderr.strip().splitlines()[-1])
    assert out["exit"] in (0, None), r.stdout + r.stderr
    return {**out, "stdout": r.stdout}


def test_text_class_and_attribute_queries_import_no_heavy_package(generated_index, tmp_path):
    base = ["query", "--index", "lean", "--index-root", str(generated_index)]
    one = _probe(*base, "--text", "tiger")
    assert "general efficientnet-lite0" in one["stdout"]
    assert one["heavy"] == [], one["heavy"]
    batch = tmp_path / "queries.txt"
    batch.write_text("text: a striped animal in the water\nclass: okapi\nattributes: stripes, water=0.5, -domestic\n")
    many = _probe(*base, "--batch", str(batch), "--json", "--top-k", "100")   # k > n: the exact full ranking
    assert len(json.loads(many["stdout"])["queries"]) == 3
    assert many["heavy"] == [], many["heavy"]


def test_image_query_after_indexing_runs_without_torch(generated_index):
    # indexing exported the backbone's graph and its sidecar: a query by example reads both, no torch
    photo = next((generated_index.parent / "imgs" / "green").glob("*.png"))
    out = _probe("query", "--index", "lean", "--index-root", str(generated_index), "--image", str(photo), "--json")
    first = json.loads(out["stdout"])["results"][0]
    assert first["path"] == str(photo) and first["score"] == pytest.approx(1.0, abs=1e-5)   # its own stored vector
    assert out["heavy"] == [], out["heavy"]


def test_probe_sees_torch_when_a_query_needs_it(generated_index, monkeypatch):
    # the probe itself must be able to fail: an image query through the eager torch forward imports torch
    monkeypatch.setenv("ZSLR_CPU_FORWARD", "eager")
    photo = next((generated_index.parent / "imgs" / "red").glob("*.png"))
    out = _probe("query", "--index", "lean", "--index-root", str(generated_index), "--image", str(photo))
    assert "torch" in out["heavy"] and "torchvision" in out["heavy"]


def test_serve_is_warm_before_it_is_ready(generated_index):
    """What the first search after the ready line would otherwise load is loaded by the service itself."""
    from zslretrieval.serve import SearchService, ServeConfig

    svc = SearchService(ServeConfig(index="lean", index_root=str(generated_index), reload_interval=0))
    try:
        eng = svc.snapshot.engine
        assert eng._general is not None and eng.terms is not None          # general model and its terms
        assert eng.records_table.by_id is not None                        # catalog records read once
        assert eng._backbone is not None                                  # image queries: backbone loaded
        out = svc.search(svc.make_specs([("text", "tiger")]), top_k=3)
        assert len(out["queries"][0]["results"]) == 3
    finally:
        svc.close()
