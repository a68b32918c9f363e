"""features/gpu_decode.py: the on-device decode path must equal the PIL + torchvision transform."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T1
from torchvision.transforms import v2 as T2

from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.features.gpu_decode import (GpuJpegDecoder, PreprocessSpec, apply_cuda_fast_paths, jpeg_problem,
                                              prefetch_to_device)

SPEC = PreprocessSpec(resize=72, crop=64)


def jpeg(w, h, seed=0, mode="RGB", **save):
    """A smooth random image (JPEG-friendly, like a photo) encoded as JPEG bytes."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize((w, h), Image.BILINEAR).convert(mode)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def pil_reference(data: bytes, spec=SPEC) -> torch.Tensor:
    return spec.pil_transform()(Image.open(io.BytesIO(data)).convert("RGB"))


def assert_close_to_pil(batch, datas, spec=SPEC):
    ref = torch.stack([pil_reference(d, spec) for d in datas])
    diff = (batch.cpu() - ref).abs()
    # different IDCT / chroma upsampling implementations: ~1 uint8 level (1/255/0.225 = 0.017)
    assert diff.mean() < 2e-3, diff.mean()
    assert diff.max() < 0.08, diff.max()


def test_cpu_decode_matches_pil_transform():
    datas = [jpeg(500, 375, 0), jpeg(375, 500, 1), jpeg(500, 375, 2), jpeg(97, 131, 3), jpeg(200, 150, 4, mode="L"),
             jpeg(320, 240, 5, progressive=True), jpeg(321, 241, 6, subsampling=0)]
    batch, ok, failed = GpuJpegDecoder(SPEC, "cpu").decode(list(enumerate(datas, start=10)))
    assert failed == [] and ok == list(range(10, 17))
    assert batch.shape == (7, 3, 64, 64) and batch.dtype == torch.float32
    assert_close_to_pil(batch, datas)


def test_accepts_the_backbones_spec():
    from zslretrieval.features.backbones import PreprocessSpec as BackboneSpec

    theirs = BackboneSpec(72, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    datas = [jpeg(130, 100, 11), jpeg(100, 130, 12)]
    batch, ok, failed = GpuJpegDecoder(theirs, "cpu").decode(list(enumerate(datas)))
    ref = torch.stack([theirs.pil_transform()(Image.open(io.BytesIO(d)).convert("RGB")) for d in datas])
    assert ok == [0, 1] and (batch - ref).abs().mean() < 2e-3


def test_real_photos_match_pil(shared_data):
    files = sorted((shared_data / "photos" / "awa2").rglob("*.jpg"))[:6]
    if not files:
        pytest.skip("no AwA2 photos")
    spec = PreprocessSpec(256, 224)
    datas = [f.read_bytes() for f in files]
    batch, ok, failed = GpuJpegDecoder(spec, "cpu").decode(list(enumerate(datas)))
    assert failed == [] and ok == list(range(len(datas)))
    assert_close_to_pil(batch, datas, spec)


def cmyk_jpeg():
    buf = io.BytesIO()
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(buf, "JPEG")
    return buf.getvalue()


def test_bad_files_are_reported_for_pil_fallback():
    good = jpeg(120, 90, 7)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    corrupt = good[:200] + bytes(range(256)) * 4 + b"\xff\xd9"  # headers fine, entropy data garbage
    items = [(1, good), (2, png.getvalue()), (3, good[: len(good) // 2]), (4, cmyk_jpeg()), (5, b""),
             (6, jpeg(60, 80, 8)), (7, corrupt)]
    batch, ok, failed = GpuJpegDecoder(SPEC, "cpu").decode(items)
    reasons = dict(failed)
    assert ok[:2] == [1, 6] and set(reasons) | set(ok) == {1, 2, 3, 4, 5, 6, 7}
    assert "not a JPEG" in reasons[2] and "not a JPEG" in reasons[5]
    assert "truncated" in reasons[3]
    assert "CMYK" in reasons[4]
    assert batch.shape[0] == len(ok)
    assert_close_to_pil(batch[:2], [good, jpeg(60, 80, 8)])
    empty, ok, failed = GpuJpegDecoder(SPEC, "cpu").decode([(9, b"xx")])
    assert empty.shape == (0, 3, 64, 64) and ok == [] and failed[0][0] == 9


def test_jpeg_problem_header_parsing():
    assert jpeg_problem(jpeg(16, 16)) is None
    assert jpeg_problem(jpeg(16, 16, mode="L")) is None
    assert "CMYK" in jpeg_problem(cmyk_jpeg())
    assert "not a JPEG" in jpeg_problem(b"GIF89a....")


def test_spec_validation_and_from_transform():
    with pytest.raises(InvalidInputError, match="crop=300"):
        PreprocessSpec(256, 300)
    with pytest.raises(InvalidInputError, match="interpolation 'lanczos'"):
        PreprocessSpec(256, 224, interpolation="lanczos")
    v1 = T1.Compose([T1.Resize(256), T1.CenterCrop(224), T1.ToTensor(), T1.Normalize((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))])
    assert PreprocessSpec.from_transform(v1) == PreprocessSpec(256, 224, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    v2 = T2.Compose([T2.Resize([288], interpolation=T2.InterpolationMode.BICUBIC), T2.CenterCrop(256)])
    s = PreprocessSpec.from_transform(v2)
    assert (s.resize, s.crop, s.interpolation) == (288, 256, "bicubic")
    with pytest.raises(IncompatibleError, match="aspect ratio"):
        PreprocessSpec.from_transform(T1.Compose([T1.Resize((224, 224))]))
    with pytest.raises(IncompatibleError, match="CenterCrop"):
        PreprocessSpec.from_transform(T1.Compose([T1.Resize(224)]))


def test_prefetch_to_device_cpu_passes_batches_in_order():
    batches = [(torch.full((2, 3), float(i)), {"ids": [i, i + 1], "x": torch.tensor([i])}) for i in range(5)]
    got = list(prefetch_to_device(iter(batches), "cpu"))
    assert len(got) == 5
    for i, (a, b) in enumerate(got):
        assert torch.equal(a, batches[i][0]) and b["ids"] == [i, i + 1] and torch.equal(b["x"], batches[i][1]["x"])


def tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 5))


def test_fast_paths_match_plain_model_on_cpu():
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = tiny_net()(x)
    exact = apply_cuda_fast_paths(tiny_net(), "cpu", bf16=False)
    assert exact.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(exact(x), ref, rtol=1e-5, atol=1e-5)
    fast = apply_cuda_fast_paths(tiny_net(), "cpu", bf16=True)
    out = fast(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.02)  # bf16: ~3 significant digits


@pytest.mark.gpu
def test_nvjpeg_matches_cpu_decode():
    datas = [jpeg(500, 375, i) for i in range(6)] + [jpeg(97, 131, 9), jpeg(200, 150, 4, mode="L")]
    items = list(enumerate(datas)) + [(50, b"bad"), (51, cmyk_jpeg())]
    g, ok_g, failed_g = GpuJpegDecoder(SPEC, "cuda").decode(items)
    c, ok_c, failed_c = GpuJpegDecoder(SPEC, "cpu").decode(items)
    assert g.device.type == "cuda" and ok_g == ok_c and [i for i, _ in failed_g] == [50, 51]
    assert (g.cpu() - c).abs().mean() < 2e-3
    assert_close_to_pil(g, datas)


@pytest.mark.gpu
def test_prefetch_to_cuda():
    batches = [torch.full((64, 64), float(i)) for i in range(6)]
    out = [b.sum().item() for b in prefetch_to_device(batches, "cuda")]
    assert out == [64 * 64 * i for i in range(6)]
    fast = apply_cuda_fast_paths(tiny_net(), "cuda")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = tiny_net()(x)
    torch.testing.assert_close(fast(x).cpu(), ref, rtol=0.05, atol=0.02)
