"""Reading image files and decoding them into RGB, whatever their format or mode; their date and size.

(Finding the files in folders is ``features.discovery``.)

Every decode problem becomes an :class:`ImageDecodeError` whose message is the short reason
recorded in the catalog (``"truncated image"``, ``"empty file (0 bytes)"``...), so a run over
a messy folder reports what was skipped instead of stopping.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


# Extensions picked up when walking folders (a file list may name anything).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
JPEG_MAGIC = b"\xff\xd8\xff"
# Largest image decoded at ingestion, width x height: a header may declare 65535 x 65535 in a few
# hundred bytes, and decoding allocates by the header. 89.5 Mpx (~270 MB as RGB) is Pillow's own
# default warning limit and well above any camera's frame; checked before Pillow allocates.
MAX_IMAGE_PIXELS = 89_478_485


class ImageDecodeError(Exception):
    """One file could not be turned into an image; ``str(e)`` is the recorded reason."""


@dataclass(frozen=True)
class FileBytes:
    """The bytes of one file read in one go, with the stat of the same open file descriptor."""

    data: bytes
    size: int
    mtime_ns: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_file(path: str | os.PathLike) -> FileBytes:
    """Read a whole file; size/mtime come from ``fstat`` of the same descriptor so they match the bytes."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        raise ImageDecodeError("file not found (vanished?)") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as e:
        raise ImageDecodeError(f"unreadable ({e.strerror or e})") from None
    return FileBytes(data, len(data), st.st_mtime_ns)


def _composite_on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: alpha composited on white, 16-bit/float scaled, CMYK/palette converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite_on_white(img)
    if mode in ("L", "P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    if mode.startswith("I") or mode == "F":
        # 16-bit (I;16*, and 16-bit PNGs which Pillow opens as "I") and float images: PIL's own
        # convert("L") clips at 255, which would turn most 16-bit photos white, so rescale.
        arr = np.asarray(img, dtype=np.float64)
        if mode == "F":
            hi = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            hi = 65535.0 if arr.size and arr.max() > 255 else 255.0
        arr = np.clip(np.nan_to_num(arr) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageDecodeError(f"unsupported image mode {mode!r} ({e})") from None


def decode_image(data: bytes, min_side: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Encoded bytes -> decoded RGB PIL image, EXIF orientation applied (first frame of GIF/TIFF).

    ``min_side``: the caller only needs the shorter side at >= this many pixels (a backbone's
    resize). A JPEG is then decoded straight to the smallest 1/2, 1/4 or 1/8 scale that keeps
    it (Pillow's draft mode: libjpeg scales in the DCT domain, so a 12 MP phone photo costs
    ~1/8 of the work); other formats and small JPEGs decode in full. The feature difference
    against full decoding is measured in tests/features/test_draft_decode.py.

    Raises ImageDecodeError with a short reason. An image whose header declares more than
    ``max_pixels`` pixels is refused before it is decoded (Pillow's decompression-bomb limit
    backs this up, its warning treated as an error too).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # corrupt files make Pillow warn (bad EXIF, skipped TIFF tags): the failure, if any,
            # is reported as the reason; the warnings would only flood the terminal
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.seek(0)
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageDecodeError(f"image of {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                                           f"pixels per image")
                if min_side and img.format == "JPEG":
                    # a square request keeps the shorter side >= min_side whatever the orientation
                    img.draft("RGB", (int(min_side), int(min_side)))
                img.load()  # decode now: truncated data raises here, not later in a worker
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"decompression bomb refused ({e})") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except ImageDecodeError:
        raise
    except OSError as e:
        msg = str(e)
        if "truncated" in msg.lower():
            raise ImageDecodeError(f"truncated image ({msg})") from None
        raise ImageDecodeError(f"corrupt image ({msg})") from None
    except (ValueError, SyntaxError, EOFError, IndexError, TypeError, MemoryError) as e:
        # Pillow's plugins raise these on malformed headers
        raise ImageDecodeError(f"corrupt image ({type(e).__name__}: {e})") from None


def load_image(path: str | os.PathLike, min_side: int | None = None) -> Image.Image:
    """Read and decode one file: ``decode_image(read_file(path).data, min_side)``."""
    return decode_image(read_file(path).data, min_side)


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


def exif_rotated(data: bytes) -> bool:
    """True when an image's EXIF orientation asks for a flip/rotation (header parse only, no decode)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.getexif().get(0x0112, 1) not in (0, 1)
    except Exception:  # unreadable header: the full decode will report why
        return False


# ----------------------------------------------------------------------------- when taken, how big

EXIF_IFD = 0x8769              # the Exif sub-IFD of IFD0, where DateTimeOriginal lives
DATETIME_ORIGINAL = 36867      # "YYYY:MM:DD HH:MM:SS", the camera's local time
OFFSET_TIME_ORIGINAL = 36881   # "+02:00": that local time's offset (EXIF 2.31; many cameras omit it)
ORIENTATION = 0x0112
TAKEN_AT_SOURCES = ("exif", "mtime")


@dataclass(frozen=True)
class ImageInfo:
    """What the catalog stores beside an image's features for filtering (``index.catalog.ImageRow``).

    ``taken_at``: naive UTC datetime; ``taken_at_source``: "exif" (DateTimeOriginal) or "mtime"
    (the file's modification time, when the file has no usable DateTimeOriginal). ``width`` /
    ``height``: pixels as displayed (EXIF orientation applied, so a portrait photo is taller than
    wide), None when the header cannot be read.
    """

    taken_at: _dt.datetime
    taken_at_source: str
    width: int | None = None
    height: int | None = None


def _mtime_utc(mtime_ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(mtime_ns / 1e9, _dt.timezone.utc).replace(tzinfo=None)


def parse_exif_datetime(value, offset=None) -> _dt.datetime | None:
    """An EXIF date string (+ optional "+HH:MM" offset) -> naive UTC datetime, or None if unusable.

    Without an offset the time is the camera's local time, which EXIF does not record: it is read
    as the indexing machine's local time (the best guess for one's own photos; exact when the
    machine runs in UTC). Blank, zeroed ("0000:00:00 00:00:00") and malformed values give None.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text = value.strip("\x00 ").replace("-", ":", 2)
    try:
        t = _dt.datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if isinstance(offset, bytes):
        offset = offset.decode("ascii", "replace")
    tz = None
    if isinstance(offset, str) and len(offset.strip("\x00 ")) >= 6:
        o = offset.strip("\x00 ")
        try:
            sign = -1 if o[0] == "-" else 1
            tz = _dt.timezone(sign * _dt.timedelta(hours=int(o[1:3]), minutes=int(o[4:6])))
        except (ValueError, IndexError):
            tz = None
    try:
        # naive -> astimezone() reads it as local time
        return (t.replace(tzinfo=tz) if tz else t).astimezone(_dt.timezone.utc).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None


def image_info(path: str | os.PathLike, mtime_ns: int | None = None) -> ImageInfo:
    """Date taken and displayed size of one image file, from its header only (no pixel decoding).

    ``mtime_ns``: the modification time recorded with the file's features (the fallback date);
    None: stat the file now. Never raises: an unreadable header gives the mtime and no size.
    """
    if mtime_ns is None:
        try:
            mtime_ns = os.stat(path).st_mtime_ns
        except OSError:
            mtime_ns = 0
    fallback = ImageInfo(_mtime_utc(mtime_ns), "mtime")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt EXIF makes Pillow warn; the fallback covers it
            with Image.open(path) as img:   # lazy: reads the header, decodes no pixels
                w, h = img.size
                exif = img.getexif()
                if exif.get(ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees when displayed
                    w, h = h, w
                sub = exif.get_ifd(EXIF_IFD)
                taken = parse_exif_datetime(sub.get(DATETIME_ORIGINAL), sub.get(OFFSET_TIME_ORIGINAL))
    except Exception:  # not an image, truncated header, odd EXIF: the date falls back to the file time
        return fallback
    if taken is None:
        return ImageInfo(fallback.taken_at, "mtime", int(w), int(h))
    return ImageInfo(taken, "exif", int(w), int(h))
