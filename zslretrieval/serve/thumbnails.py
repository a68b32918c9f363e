"""Thumbnails of ``zslr serve``: made once with Pillow, cached outside the index by content hash.

The cache (``--cache-dir``, default ``$XDG_CACHE_HOME/zslretrieval/thumbs``) never lives in the
index folder: an index may be read-only, shared, or owned by a running ``zslr index`` that holds
its write lock, and a cache is disposable while the index is not. Keyed by the content sha256 the
catalog stores, it is shared by indexes of the same photos and never serves stale pixels. The
file is checked (:func:`files.open_checked`) on every request, cached or not: gone files are 404.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from .files import NotFoundError, open_checked, servable_row

log = logging.getLogger("zslretrieval.serve")

THUMB_PX = 256


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "zslretrieval" / "thumbs"


def make_thumbnail(data: bytes, px: int = THUMB_PX) -> bytes:
    """Encoded image -> JPEG no larger than ``px`` x ``px``, decoded with the ingestion guards."""
    from ..features.images import ImageDecodeError, decode_image

    try:
        img = decode_image(data)
    except ImageDecodeError as e:
        raise NotFoundError(f"the image file cannot be decoded any more ({e})") from None
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return buf.getvalue()


class ThumbnailCache:
    """Thumbnails of catalog images under ``folder`` (thread-safe: entries are written atomically)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._writable = True   # set False at the first failed write: serve uncached from then on

    def thumbnail(self, index: Any, roots: tuple[Path, ...], image_id: int, px: int = THUMB_PX) -> tuple[bytes, str]:
        """(JPEG bytes, etag) of a servable image of ``index`` (an OpenIndex) whose files lie under ``roots``."""
        row = servable_row(index, roots, image_id)
        fd, _ = open_checked(row, roots)
        with os.fdopen(fd, "rb") as f:
            key = row.sha256 or hashlib.sha256(f"{row.path}:{row.size}:{row.mtime_ns}".encode()).hexdigest()
            cached = self.folder / key[:2] / f"{key}-{px}.jpg"
            try:
                return cached.read_bytes(), key
            except OSError:
                pass
            data = f.read()
        if row.sha256 and hashlib.sha256(data).hexdigest() != row.sha256:
            raise NotFoundError(f"image {row.id}: the file's content changed since it was indexed; re-run `zslr index`")
        jpeg = make_thumbnail(data, px)
        self._put(cached, jpeg)
        return jpeg, key

    def _put(self, path: Path, data: bytes) -> None:
        if not self._writable:
            return
        from ..fileio import atomic_write

        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as e:  # read-only home, full disk: thumbnails still work, uncached
            self._writable = False
            log.warning("thumbnail cache %s not writable (%s); thumbnails will not be cached", self.folder, e)
