"""#29: the lean query path answers like the torch reference encoder (``ZSLR_TEXT_ENCODER=torch``).

Query vectors (cosine >= 0.9999) and top-10 rankings of text, class and attribute queries on a raw
index of the awa2 photos, each backend in its own process (the encoder is one per process).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from .test_lean_query import _env, warm_caches

# Prints, for the specs given as JSON in argv[1] on index argv[2] (root argv[3]), each query's vector in
# index space and its top-10 catalog ids: what the engine searches with, and what it answers.
_VECTORS = """
import json, sys
from zslretrieval.query import QuerySpec, open_engine
from zslretrieval.text import get_encoder
specs = [QuerySpec(k, v) for k, v in json.loads(sys.argv[1])]
eng = open_engine(sys.argv[2], sys.argv[3])
prepared, descriptors = eng.prepare_all(specs)
xq = eng.embed(prepared, descriptors)
res = eng.run(specs, 10)
print(json.dumps({"backend": get_encoder().backend, "vectors": xq.tolist(),
                  "top10": [[h.id for h in r.hits] for r in res]}))
"""


@pytest.fixture(scope="module")
def awa2_index(shared_data, tmp_path_factory):
    from zslretrieval.ingest import IndexConfig, index_images
    root = tmp_path_factory.mktemp("lean-awa2")
    index_images(IndexConfig(inputs=[shared_data / "photos" / "awa2" / "JPEGImages"], name="awa2", root=root,
                             device="cpu", workers=0))
    warm_caches()
    return root


def test_lean_query_vectors_and_rankings_equal_the_torch_encoders(awa2_index, tmp_path):
    specs = [["text", "tiger"], ["text", "a striped animal in the water"], ["class", "okapi"],
             ["class", "killer+whale"], ["attributes", "stripes, water=0.5, -domestic"]]
    runs = {}
    for backend in ("onnx", "torch"):
        # the torch run gets an empty cache: no text embedding the ONNX run cached can stand in for its own
        env = _env(ZSLR_TEXT_ENCODER=backend, **({"ZSLR_CACHE": str(tmp_path / "cache-torch")} if backend == "torch"
                                                 else {}))
        r = subprocess.run([sys.executable, "-c", _VECTORS, json.dumps(specs), "awa2", str(awa2_index)],
                           capture_output=True, text=True, env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[backend] = json.loads(r.stdout.strip().splitlines()[-1])
        assert runs[backend]["backend"] == backend
    lean, ref = np.asarray(runs["onnx"]["vectors"]), np.asarray(runs["torch"]["vectors"])
    cos = (lean * ref).sum(1) / np.linalg.norm(lean, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos
    assert runs["onnx"]["top10"] == runs["torch"]["top10"]
