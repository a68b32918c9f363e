"""JPEG draft decoding (DCT-domain downscaling) against full decoding: the feature difference is
measured on real photos and bounded here, and every image still finds itself first."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from zslretrieval.features import load_backbone
from zslretrieval.features.images import decode_image

# Measured with efficientnet-lite0 on the 30 AwA2 photos (1024x768: 1/2 scale): cosine min 0.991,
# mean 0.997; the same photos upscaled to 4032x3024 (1/8 scale): min 0.996, mean 0.998.
MIN_COSINE = 0.985
MEAN_COSINE = 0.995


def _features(bb, datas, min_side):
    with torch.inference_mode():
        return bb.forward(torch.stack([bb.transform(decode_image(d, min_side)) for d in datas])).numpy()


def _check(bb, datas):
    full, draft = _features(bb, datas, None), _features(bb, datas, bb.preprocess.resize)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    draft /= np.linalg.norm(draft, axis=1, keepdims=True)
    cos = (full * draft).sum(1)
    assert cos.min() >= MIN_COSINE and cos.mean() >= MEAN_COSINE, (cos.min(), cos.mean())
    # each draft-decoded photo's nearest fully decoded photo is itself
    assert list((draft @ full.T).argmax(1)) == list(range(len(datas)))


def test_draft_sizes():
    buf = io.BytesIO()
    Image.new("RGB", (4032, 3024), (90, 120, 30)).save(buf, "JPEG")
    assert decode_image(buf.getvalue(), 256).size == (504, 378)       # 1/8: shorter side still >= 256
    assert decode_image(buf.getvalue(), 400).size == (1008, 756)      # 1/4
    assert decode_image(buf.getvalue()).size == (4032, 3024)
    small = io.BytesIO()
    Image.new("RGB", (500, 375), (90, 120, 30)).save(small, "JPEG")
    assert decode_image(small.getvalue(), 256).size == (500, 375)     # 1/2 would be below 256
    png = io.BytesIO()
    Image.new("RGB", (1200, 900), (1, 2, 3)).save(png, "PNG")
    assert decode_image(png.getvalue(), 256).size == (1200, 900)      # only JPEG has a draft mode


@pytest.fixture(scope="module")
def efficientnet():
    torch.set_num_threads(1)
    return load_backbone("efficientnet-lite0")


def test_real_photos_half_scale(shared_data, efficientnet):
    paths = sorted((shared_data / "photos" / "awa2").rglob("*.jpg"))[::2]   # 15 photos keep the test short
    assert len(paths) >= 10
    _check(efficientnet, [p.read_bytes() for p in paths])


def test_phone_size_eighth_scale(shared_data, efficientnet):
    datas = []
    for p in sorted((shared_data / "photos" / "awa2").rglob("*.jpg"))[:3]:
        buf = io.BytesIO()
        Image.open(p).convert("RGB").resize((4032, 3024), Image.BICUBIC).save(buf, "JPEG", quality=90)
        datas.append(buf.getvalue())
    _check(efficientnet, datas)
