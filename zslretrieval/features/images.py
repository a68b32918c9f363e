"""Finding image files and decoding them into RGB, whatever their format or mode.

Every decode problem becomes an :class:`ImageDecodeError` whose message is the short reason
recorded in the catalog (``"truncated image"``, ``"empty file (0 bytes)"``...), so a run over
a messy folder reports what was skipped instead of stopping.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataNotFoundError, InvalidInputError

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


# ----------------------------------------------------------------------------- discovery

@dataclass(frozen=True)
class ImageSource:
    """One file to index: absolute path, the folder it was found under, its known label (or None)."""

    path: str
    root: str | None
    label: str | None


def _label_for(path: Path, root: Path) -> str | None:
    # The parent folder name is the label ("JPEGImages/zebra/x.jpg" -> "zebra"); files
    # directly in the input folder have none.
    return path.parent.name if path.parent != root else None


def walk_images(root: str | os.PathLike) -> list[ImageSource]:
    """Every file with an image extension under ``root`` (recursive, sorted, symlinked dirs not followed)."""
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DataNotFoundError(f"input folder not found: {root}")
    if root.is_file():
        return [ImageSource(str(root), None, root.parent.name)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if fn.startswith(".") or Path(fn).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            p = Path(dirpath) / fn
            out.append(ImageSource(str(p), str(root), _label_for(p, root)))
    return out


def read_file_list(list_file: str | os.PathLike) -> list[ImageSource]:
    """A text file of image paths, one per line, optionally ``path<TAB>label``.

    Relative paths are relative to the list file's folder; blank lines and ``#`` comments are
    skipped. Without an explicit label, the parent folder name is used.
    """
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise DataNotFoundError(f"file list not found: {list_file}")
    base = list_file.absolute().parent
    out = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        raw, _, label = line.partition("\t")
        p = Path(raw.strip()).expanduser()
        p = p if p.is_absolute() else base / p
        out.append(ImageSource(os.path.abspath(p), None, label.strip() or p.parent.name or None))
    return out


def discover(inputs: Sequence[str | os.PathLike] = (), file_list: str | os.PathLike | None = None) -> list[ImageSource]:
    """Folders (recursive) and/or a file list -> unique sources, first occurrence wins."""
    if not inputs and file_list is None:
        raise InvalidInputError("no input given; expected one or more image folders or --file-list FILE")
    seen: dict[str, ImageSource] = {}
    for src in _chain(*(walk_images(i) for i in inputs), read_file_list(file_list) if file_list else []):
        seen.setdefault(src.path, src)
    return list(seen.values())


def _chain(*lists: Iterable[ImageSource]) -> Iterable[ImageSource]:
    for lst in lists:
        yield from lst
