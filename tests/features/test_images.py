"""Every supported format and pixel mode decodes to the right RGB; broken files give a reason."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from zslretrieval.features.images import ImageDecodeError, decode_image, image_info, load_image, parse_exif_datetime


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _rgb(img: Image.Image, xy=(5, 5)) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return img.getpixel(xy)


def test_png_alpha_is_composited_on_white():
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[:, :10] = (255, 0, 0, 255)      # opaque red
    arr[:, 10:] = (255, 0, 0, 0)        # fully transparent red -> white
    img = decode_image(_bytes(Image.fromarray(arr, "RGBA"), "PNG"))
    assert _rgb(img, (2, 2)) == (255, 0, 0)
    assert _rgb(img, (15, 2)) == (255, 255, 255)
    half = np.full((4, 4, 4), (0, 0, 0, 128), np.uint8)  # 50 % black over white -> mid grey
    assert abs(_rgb(decode_image(_bytes(Image.fromarray(half, "RGBA"), "PNG")), (1, 1))[0] - 127) <= 1


def test_grey_alpha_and_palette_transparency():
    la = Image.fromarray(np.dstack([np.full((8, 8), 0, np.uint8), np.zeros((8, 8), np.uint8)]), "LA")
    assert _rgb(decode_image(_bytes(la, "PNG")), (1, 1)) == (255, 255, 255)
    p = Image.new("P", (8, 8), 1)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    img = decode_image(_bytes(p, "PNG", transparency=0))
    assert _rgb(img, (1, 1)) == (0, 255, 0)


def test_palette_gif_first_frame():
    frames = []
    for color in ((255, 0, 0), (0, 0, 255)):
        frames.append(Image.new("RGB", (12, 12), color).convert("P", palette=Image.Palette.ADAPTIVE))
    data = _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    r, g, b = _rgb(decode_image(data), (3, 3))
    assert r > 200 and g < 50 and b < 50


def test_cmyk_jpeg():
    img = decode_image(_bytes(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    r, g, b = _rgb(img, (8, 8))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_is_rescaled_not_clipped(fmt):
    arr = np.zeros((6, 6), np.uint16)
    arr[:, :3] = 65535
    arr[:, 3:] = 32896  # 128 * 257
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    img = decode_image(_bytes(src, fmt))
    assert _rgb(img, (1, 1)) == (255, 255, 255)
    assert _rgb(img, (4, 1)) == (128, 128, 128)


def test_exif_orientation_applied():
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)   # left half red
    arr[:, 20:] = (0, 0, 255)   # right half blue
    src = Image.fromarray(arr)
    exif = src.getexif()
    exif[0x0112] = 6            # "rotate 90 CW to display"
    img = decode_image(_bytes(src, "JPEG", exif=exif, quality=95))
    assert img.size == (20, 40)  # width and height swapped
    top, bottom = _rgb(img, (10, 5)), _rgb(img, (10, 35))
    assert top[0] > 200 and top[2] < 60        # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("fmt,kw", [("WEBP", {"lossless": True}), ("BMP", {}), ("PNG", {}), ("TIFF", {})])
def test_rgb_formats_roundtrip(fmt, kw):
    arr = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    img = decode_image(_bytes(Image.fromarray(arr), fmt, **kw))
    np.testing.assert_array_equal(np.asarray(img), arr)


def test_grayscale_and_bilevel():
    g = decode_image(_bytes(Image.new("L", (5, 5), 77), "JPEG", quality=100))
    assert _rgb(g, (2, 2)) == (77, 77, 77)
    one = decode_image(_bytes(Image.new("1", (5, 5), 1), "BMP"))
    assert _rgb(one, (2, 2)) == (255, 255, 255)


def test_broken_files_give_reasons(tmp_path):
    good = _bytes(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")
    cases = {
        "empty file": b"",
        "not an image": b"hello, I am text\n",
        "truncated": good[: len(good) // 2],
    }
    for reason, data in cases.items():
        with pytest.raises(ImageDecodeError, match=reason):
            decode_image(data)
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "gone.jpg")
    with pytest.raises(ImageDecodeError, match="directory"):
        load_image(tmp_path)


def test_decompression_bomb_refused(monkeypatch):
    data = _bytes(Image.new("RGB", (40, 40)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)    # 1600 px: over the limit -> warning
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)     # over twice the limit -> error
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_image(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    assert decode_image(data).size == (40, 40)


def _exif_jpeg(path, size=(40, 30), when=None, offset=None, orientation=None):
    img = Image.new("RGB", size, (10, 200, 30))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if when:
        sub[36867] = when
    if offset:
        sub[36881] = offset
    img.save(path, "JPEG", exif=exif)
    return path


def test_image_info_reads_exif_date_else_mtime(tmp_path, monkeypatch):
    import datetime as dt
    import os
    import time

    p = _exif_jpeg(tmp_path / "a.jpg", when="2019:07:14 16:05:09", offset="+02:00")
    info = image_info(p)
    assert (info.taken_at, info.taken_at_source, info.width, info.height) == (dt.datetime(2019, 7, 14, 14, 5, 9), "exif", 40, 30)
    # no offset: the camera's local time, read as this machine's local time
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        p = _exif_jpeg(tmp_path / "b.jpg", when="2019:01:02 03:04:05", orientation=6)
        info = image_info(p)
        assert info.taken_at == dt.datetime(2019, 1, 2, 8, 4, 5) and info.taken_at_source == "exif"
        assert (info.width, info.height) == (30, 40)  # rotated by 90 degrees when shown
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    # zeroed / absent DateTimeOriginal, PNG without EXIF, non-image: the file's mtime (UTC)
    for name, make in [("z.jpg", lambda q: _exif_jpeg(q, when="0000:00:00 00:00:00")), ("n.jpg", _exif_jpeg),
                       ("p.png", lambda q: Image.new("L", (7, 5)).save(q)), ("x.jpg", lambda q: q.write_bytes(b"junk"))]:
        q = tmp_path / name
        make(q)
        os.utime(q, ns=(0, 1_600_000_000 * 10**9))
        info = image_info(q)
        assert (info.taken_at, info.taken_at_source) == (dt.datetime(2020, 9, 13, 12, 26, 40), "mtime"), name
        assert (info.width, info.height) == ((None, None) if name == "x.jpg" else (7, 5) if name == "p.png" else (40, 30))
    assert parse_exif_datetime("2020-01-02 03:04:05", "-05:30") == dt.datetime(2020, 1, 2, 8, 34, 5)
    assert parse_exif_datetime(b"2020:01:02 03:04:05\x00", "+00:00") == dt.datetime(2020, 1, 2, 3, 4, 5)
    assert parse_exif_datetime("    :  :     :  :  ") is None and parse_exif_datetime(None) is None
