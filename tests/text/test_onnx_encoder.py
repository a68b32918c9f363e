"""The lean ONNX text encoder against sentence-transformers, the reference it replaces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError
from zslretrieval.text import encoder as enc
from zslretrieval.text import onnx_encoder as oe

ROOT = Path(__file__).resolve().parents[2]

TEXTS = ["tiger", "zebra", "a small bird with a red crown, black wings and a short pointed beak",
         "stripes", "a striped animal in the water", "Black-footed Albatross", "x " * 400]  # the last truncates


@pytest.fixture(scope="module")
def reference():
    return enc.SentenceTransformerBackend(enc.model_path()).encode(TEXTS)


def test_onnx_matches_sentence_transformers(reference):
    e = enc.get_encoder()
    assert e.backend == "onnx"
    lean = e.encode(TEXTS)
    cos = (lean * reference).sum(1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(lean, reference, atol=1e-5)
    # batches mix lengths (padding) and singletons: the same vector either way
    np.testing.assert_allclose(e.encode(TEXTS[:1]), lean[:1], atol=1e-6)
    np.testing.assert_allclose(e.encode(TEXTS, batch_size=2), lean, atol=1e-6)


def test_truncation_length_is_the_models(reference):
    assert oe.max_seq_length(enc.model_path()) == 256
    long_a = "bird " * 300
    long_b = long_a + "with a completely different ending about cars"
    a, b = enc.get_encoder().encode([long_a, long_b])
    np.testing.assert_allclose(a, b, atol=1e-6)   # everything past 256 pieces is cut, as sentence-transformers does


def test_graph_key_follows_the_weights(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights one")
    k1 = oe.graph_key(model)
    (model / "model.safetensors").write_bytes(b"weights two")
    assert oe.graph_key(model) != k1
    with pytest.raises(Exception) as info:
        oe.max_seq_length(model)
    assert "sentence_bert_config.json" in str(info.value)


def test_unknown_backend_is_refused(monkeypatch):
    monkeypatch.setenv("ZSLR_TEXT_ENCODER", "tensorflow")
    with pytest.raises(InvalidInputError) as info:
        enc.backend_name()
    assert "tensorflow" in str(info.value) and "onnx" in str(info.value)


def test_lean_process_imports_no_torch(tmp_path):
    """With the graph cached, encoding in a fresh interpreter loads none of the heavy libraries."""
    enc.get_encoder()  # the session's cache now holds the graph
    script = textwrap.dedent("""
        import json, sys
        from zslretrieval.text.encoder import encode_texts
        e = encode_texts(["tiger"])
        heavy = [m for m in ("torch", "transformers", "sentence_transformers", "sklearn", "timm") if m in sys.modules]
        print(json.dumps({"heavy": heavy, "shape": list(e.shape)}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ}, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"heavy": [], "shape": [1, 384]}
