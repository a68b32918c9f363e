"""The batched DataLoader pipeline equals one-image-at-a-time decoding + encoding."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import tests.index.fakes  # noqa: F401  (registers the tiny-test backbone)
from tests.index.fakes import write_images
from zslretrieval.errors import InvalidInputError
from zslretrieval.features import extract_features, iter_feature_batches, load_backbone, load_image, resolve_device


@pytest.fixture()
def files(tmp_path):
    paths = write_images(tmp_path, 11, seed=1)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = paths[3].read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 3])
    mixed = paths[:4] + [tmp_path / "empty.jpg"] + paths[4:8] + [tmp_path / "text.jpg", tmp_path / "trunc.jpg",
                                                                  tmp_path / "gone.jpg"] + paths[8:]
    return [str(p) for p in mixed], [str(p) for p in paths]


def _reference(paths, bb):
    return np.stack([bb.forward(bb.transform(load_image(p))[None]).numpy()[0] for p in paths])


@pytest.mark.parametrize("workers,batch_size", [(0, 4), (1, 3)])
def test_batched_equals_sequential(files, workers, batch_size):
    mixed, good = files
    bb = load_backbone("tiny-test")
    x, ok, failures = extract_features(mixed, bb, batch_size=batch_size, device="cpu", workers=workers)
    assert ok == good  # input order kept, bad files dropped
    np.testing.assert_allclose(x, _reference(good, bb), rtol=1e-5, atol=1e-6)
    reasons = {p.rsplit("/", 1)[1]: why for p, why in failures}
    assert set(reasons) == {"empty.jpg", "text.jpg", "trunc.jpg", "gone.jpg"}
    assert reasons["empty.jpg"].startswith("empty file") and reasons["text.jpg"].startswith("not an image")
    assert reasons["trunc.jpg"].startswith("truncated") and reasons["gone.jpg"].startswith("file not found")


def test_batches_carry_content_hashes(files):
    mixed, _ = files
    bb = load_backbone("tiny-test")
    metas = {}
    for fb in iter_feature_batches(mixed, bb, batch_size=5, device="cpu", workers=0):
        assert len(fb.positions) == len(fb.features)
        metas.update(fb.meta)
    for i, p in enumerate(mixed):
        if p.endswith("gone.jpg"):
            assert i not in metas  # never read
            continue
        data = open(p, "rb").read()
        assert metas[i].sha256 == hashlib.sha256(data).hexdigest() and metas[i].size == len(data)


class _HalfDecoder:
    """Stands in for the GPU JPEG decoder: decodes even positions, refuses odd ones."""

    def __init__(self, bb):
        self.bb, self.calls = bb, 0

    def decode(self, items):
        from zslretrieval.features.images import ImageDecodeError, decode_image
        self.calls += 1
        tensors, ok, failed = [], [], []
        for i, b in items:
            try:
                if i % 2:
                    raise ImageDecodeError("refused")
                tensors.append(self.bb.transform(decode_image(b)))
                ok.append(i)
            except ImageDecodeError as e:
                failed.append((i, str(e)))
        return (torch.stack(tensors) if tensors else torch.zeros(0, 3, 32, 32)), ok, failed


def test_pluggable_jpeg_decoder_with_pil_fallback(files):
    mixed, good = files
    bb = load_backbone("tiny-test")
    dec = _HalfDecoder(bb)
    feats, pos, fails = [], [], []
    for fb in iter_feature_batches(mixed, bb, batch_size=4, device="cpu", workers=0, jpeg_decoder=dec):
        feats.append(fb.features)
        pos += fb.positions.tolist()
        fails += fb.failures
    assert dec.calls > 0
    assert [mixed[i] for i in pos] == good
    np.testing.assert_allclose(np.concatenate(feats), _reference(good, bb), rtol=1e-5, atol=1e-6)
    assert sorted(mixed[i].rsplit("/", 1)[1] for i, _ in fails) == ["empty.jpg", "gone.jpg", "text.jpg", "trunc.jpg"]


def test_exif_rotated_jpegs_bypass_the_jpeg_decoder(tmp_path):
    from PIL import Image
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255
    src = Image.fromarray(arr)
    exif = src.getexif()
    exif[0x0112] = 6
    src.save(tmp_path / "rot.jpg", exif=exif)
    src.save(tmp_path / "plain.jpg")
    bb = load_backbone("tiny-test")
    seen = []

    class Spy(_HalfDecoder):
        def decode(self, items):
            seen.extend(i for i, _ in items)
            return super().decode(items)

    paths = [str(tmp_path / "plain.jpg"), str(tmp_path / "rot.jpg")]
    (fb,) = iter_feature_batches(paths, bb, batch_size=2, device="cpu", workers=0, jpeg_decoder=Spy(bb))
    assert seen == [0] and fb.positions.tolist() == [0, 1]
    np.testing.assert_allclose(fb.features, _reference(paths, bb), rtol=1e-5, atol=1e-6)


def test_device_and_argument_errors(files):
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(InvalidInputError, match="tpu"):
        resolve_device("tpu")
    with pytest.raises(InvalidInputError, match="batch-size"):
        extract_features(files[1], "tiny-test", batch_size=0, device="cpu")


@pytest.mark.gpu
def test_cuda_path_matches_cpu(files):
    _, good = files
    bb = load_backbone("tiny-test")
    x_cpu, _, _ = extract_features(good, bb, device="cpu", workers=0)
    x_gpu, ok, _ = extract_features(good, load_backbone("tiny-test"), device="cuda", workers=0)
    assert ok == good
    np.testing.assert_allclose(x_gpu, x_cpu, rtol=5e-2, atol=5e-2)  # bf16/fp16 autocast


def test_default_workers_fit_the_cores(monkeypatch):
    from zslretrieval.features import pipeline

    # CPU: one decode+encode thread per core; CUDA: decoder processes on all cores but one
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _pid: set(range(2)), raising=False)
    assert pipeline.default_workers("cpu") == 2 and pipeline.default_workers("cuda") == 1
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _pid: set(range(32)), raising=False)
    assert pipeline.default_workers("cpu") == 8 and pipeline.default_workers("cuda") == 8
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda _pid: set(range(1)), raising=False)
    assert pipeline.default_workers("cpu") == 1 and pipeline.default_workers("cuda:0") == 0


@pytest.mark.parametrize("workers", [1, 3])
def test_cpu_threads_keep_order_and_failures(files, workers):
    mixed, good = files
    bb = load_backbone("tiny-test")
    batches = list(iter_feature_batches(mixed, bb, batch_size=6, device="cpu", workers=workers))
    assert [len(b.positions) + len(b.failures) for b in batches] == [6, 6, 3]
    pos = np.concatenate([b.positions for b in batches])
    assert list(pos) == sorted(pos) and [mixed[i] for i in pos] == good
    np.testing.assert_allclose(np.concatenate([b.features for b in batches]), _reference(good, bb), rtol=1e-5, atol=1e-6)
