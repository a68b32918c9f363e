"""Malformed image files for ingestion tests: small valid images of five formats, then mutated.

``generate(folder, n, seed)`` writes ``n`` files cycling through formats x mutations, seeded, and
returns what each is. Mutations:

  truncate     the file cut at a random point (header, middle or just before the end)
  bitflip      1..16 random bits flipped anywhere
  bad_header   random bytes over the first 8..48 bytes (magic number and header fields)
  huge_dims    declared width/height set to huge values (format-aware, checksums fixed up where
               the format has them, so the size reaches the decoder's pixel limit)
  splice       a random run of bytes inserted in the middle
  shuffle      two blocks of the file swapped
  garbage      random bytes with the format's magic number in front

Used by tests/index/test_fuzz.py (100 files) and scripts/fuzz_index.py (1,000 files).
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp"), "gif": ("GIF", ".gif"),
           "tiff": ("TIFF", ".tif")}
MUTATIONS = ("truncate", "bitflip", "bad_header", "huge_dims", "splice", "shuffle", "garbage")
MAGIC = {"jpeg": b"\xff\xd8\xff\xe0", "png": b"\x89PNG\r\n\x1a\n", "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ",
         "gif": b"GIF89a", "tiff": b"II*\x00"}


@dataclass(frozen=True)
class FuzzFile:
    path: Path
    fmt: str
    mutation: str


def valid_image(fmt: str, rng: np.random.Generator) -> bytes:
    """A small random image (odd sizes, a mode the format supports) encoded as ``fmt``."""
    w, h = int(rng.integers(8, 48)), int(rng.integers(8, 48))
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if fmt == "png" and rng.random() < 0.5:
        img = img.convert("RGBA")
    elif fmt == "gif" or (fmt == "tiff" and rng.random() < 0.3):
        img = img.convert("P")
    elif fmt == "jpeg" and rng.random() < 0.3:
        img = img.convert("L")
    buf = io.BytesIO()
    kw = {"quality": 80} if fmt in ("jpeg", "webp") else {}
    if fmt == "jpeg" and rng.random() < 0.3:
        kw["progressive"] = True
    img.save(buf, FORMATS[fmt][0], **kw)
    return buf.getvalue()


def _png_huge(data: bytearray, w: int, h: int, fix_crc: bool) -> None:
    # IHDR is the first chunk: length(4) "IHDR"(4) width(4) height(4) ... crc after 13 data bytes
    data[16:24] = struct.pack(">II", w, h)
    if fix_crc:
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)


def _jpeg_huge(data: bytearray, w: int, h: int) -> bool:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5:i + 9] = struct.pack(">HH", min(h, 65535), min(w, 65535))
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return False


def _gif_huge(data: bytearray, w: int, h: int) -> None:
    data[6:10] = struct.pack("<HH", min(w, 65535), min(h, 65535))          # logical screen
    j = data.find(b"\x2c", 13)                                              # first image descriptor
    if j > 0 and j + 9 <= len(data):
        data[j + 5:j + 9] = struct.pack("<HH", min(w, 65535), min(h, 65535))


def _webp_huge(data: bytearray, w: int, h: int) -> bool:
    j = data.find(b"\x9d\x01\x2a")  # VP8 key frame start code, then 14-bit width, 14-bit height
    if j < 0:
        return False
    data[j + 3:j + 7] = struct.pack("<HH", min(w, 16383), min(h, 16383))
    return True


def _tiff_huge(data: bytearray, w: int, h: int) -> bool:
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", data[4:8])
    if ifd + 2 > len(data):
        return False
    (n,) = struct.unpack(end + "H", data[ifd:ifd + 2])
    hit = False
    for k in range(n):
        e = ifd + 2 + 12 * k
        if e + 12 > len(data):
            break
        tag, typ = struct.unpack(end + "HH", data[e:e + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            val = w if tag == 256 else h
            data[e + 2:e + 12] = struct.pack(end + "HII", 4, 1, val)  # as LONG
            hit = True
    return hit


def mutate(data: bytes, fmt: str, kind: str, rng: np.random.Generator) -> bytes:
    d = bytearray(data)
    n = len(d)
    if kind == "truncate":
        cut = int(rng.choice([rng.integers(0, min(n, 32)), rng.integers(0, n), n - int(rng.integers(1, min(n, 16)))]))
        return bytes(d[:max(0, cut)])
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 17))):
            p = int(rng.integers(0, n))
            d[p] ^= 1 << int(rng.integers(0, 8))
        return bytes(d)
    if kind == "bad_header":
        k = int(rng.integers(8, min(n, 48)))
        d[:k] = rng.integers(0, 256, k, dtype=np.uint8).tobytes()
        return bytes(d)
    if kind == "huge_dims":
        w, h = (int(rng.choice([65535, 50_000, 100_000, 2**31 - 1])) for _ in range(2))
        if fmt == "png":
            _png_huge(d, w, h, fix_crc=rng.random() < 0.8)
        elif fmt == "jpeg":
            _jpeg_huge(d, w, h)
        elif fmt == "gif":
            _gif_huge(d, w, h)
        elif fmt == "webp":
            _webp_huge(d, w, h)
        elif fmt == "tiff":
            _tiff_huge(d, w, h)
        return bytes(d)
    if kind == "splice":
        p = int(rng.integers(0, n))
        return bytes(d[:p]) + rng.integers(0, 256, int(rng.integers(1, 256)), dtype=np.uint8).tobytes() + bytes(d[p:])
    if kind == "shuffle":
        k = max(1, n // 8)
        a, b = sorted(int(x) for x in rng.integers(0, max(1, n - k), 2))
        blk_a, blk_b = bytes(d[a:a + k]), bytes(d[b:b + k])
        d[b:b + k], d[a:a + k] = blk_a, blk_b
        return bytes(d)
    if kind == "garbage":
        return MAGIC[fmt] + rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    raise ValueError(f"unknown mutation {kind!r}; valid: {', '.join(MUTATIONS)}")


def generate(folder: str | Path, n: int, seed: int = 0) -> list[FuzzFile]:
    """Write ``n`` malformed files to ``folder`` (formats x mutations cycled, seeded); returns them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fmts = list(FORMATS)
    out = []
    for i in range(n):
        fmt = fmts[i % len(fmts)]
        kind = MUTATIONS[(i // len(fmts)) % len(MUTATIONS)]
        data = mutate(valid_image(fmt, rng), fmt, kind, rng)
        p = folder / f"{i:05d}-{fmt}-{kind}{FORMATS[fmt][1]}"
        p.write_bytes(data)
        out.append(FuzzFile(p, fmt, kind))
    return out
