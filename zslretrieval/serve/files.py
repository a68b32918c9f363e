"""Image files of ``zslr serve``, addressed by catalog id only.

A client names an image by its catalog id, never by a path. The file is served only when its row
is ``ok``, its real path (symlinks resolved) lies under one of the collection roots, the final
open refuses a symlink (``O_NOFOLLOW``, so a link swapped in after the check fails), it is a
regular file, and its size and mtime are those the catalog recorded at indexing. Anything else is
:class:`NotFoundError` (404), with no hint of the server's folder layout.
"""
from __future__ import annotations

import mimetypes
import os
import stat
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError

READ_CHUNK = 256 << 10

# Flags of the final open. Windows has neither flag (nor the symlink swap they guard against in
# the same form); everywhere else both are declared by ``os``.
_OPEN_FLAGS = os.O_RDONLY | (os.O_NOFOLLOW | os.O_CLOEXEC if os.name == "posix" else 0)


class NotFoundError(DataNotFoundError):
    """An image id that is not (or no longer) a servable catalog image; the HTTP layer answers 404."""


def collection_roots(ix: Any, images_roots: tuple[str, ...]) -> tuple[Path, ...]:
    """Folders whose files ``ix`` (an OpenIndex) may serve: ``images_roots`` (--images-root), else the
    common folder of the catalog's images; none for an index of benchmark features."""
    if ix.manifest.source != "images":
        return ()   # benchmark features: catalog paths name dataset rows, not files
    if images_roots:
        return tuple(Path(os.path.realpath(Path(r).expanduser())) for r in images_roots)
    # folders, not paths: a collection has far fewer folders than photos (one Core select, no ORM rows)
    dirs = {os.path.dirname(p) for _, p, _, _ in ix.record_tuples("ok") if os.path.isabs(p)}
    if not dirs:
        return ()
    return (Path(os.path.realpath(os.path.commonpath(sorted(dirs)))),)


_HIDDEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HIDDEN_LOCK = threading.Lock()


def _inside(real: str, roots: tuple[Path, ...]) -> bool:
    return any(real == str(r) or real.startswith(str(r).rstrip(os.sep) + os.sep) for r in roots)


def outside_ids(index: Any, roots: tuple[Path, ...]) -> frozenset[int]:
    """Ids of ``ok`` catalog images whose file resolves outside ``roots`` (a link out of the collection).

    Such a photo is never served (:func:`open_checked` refuses it), so the server keeps it out of
    results too rather than list a hit whose image answers 404. Serving it instead would let one
    symlink placed in a photo folder publish any file the server can read that happens to decode.

    Cheap at a million photos: each distinct folder is resolved once and listed once with
    ``os.scandir`` (whose entries know a symlink without a ``stat``); only the symlinked files are
    resolved one by one. Computed once per opened index (the server's snapshot) and cached.
    """
    if not roots:
        return frozenset()
    with _HIDDEN_LOCK:
        cached = _HIDDEN.get(index)
    if cached is not None and cached[0] == roots:
        return cached[1]
    from sqlalchemy import select

    from ..index.catalog import ImageRow

    by_dir: dict[str, list[tuple[int, str]]] = {}
    with index.catalog.session() as s:
        for image_id, path in s.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.status == "ok")):
            d, name = os.path.split(path)
            by_dir.setdefault(d, []).append((int(image_id), name))
    hidden: set[int] = set()
    for d, rows in by_dir.items():
        real_dir = os.path.realpath(d)
        try:
            links = {e.name for e in os.scandir(d) if e.is_symlink()}
        except OSError:     # folder gone or unreadable: nothing in it can be served or tested here
            links = set()
        dir_inside = _inside(real_dir, roots)
        for image_id, name in rows:
            if name in links:
                inside = _inside(os.path.realpath(os.path.join(real_dir, name)), roots)
            else:
                inside = dir_inside
            if not inside:
                hidden.add(image_id)
    out = frozenset(hidden)
    with _HIDDEN_LOCK:
        _HIDDEN[index] = (roots, out)
    return out


def without_ids(hits: list, ids: frozenset[int]) -> list:
    """``hits`` (ranked ``query.Hit``) less those in ``ids``, ranked again 1, 2, ... (as if never indexed)."""
    if not ids:
        return hits
    from dataclasses import replace

    return [replace(h, rank=i) for i, h in enumerate((h for h in hits if h.id not in ids), 1)]


def servable_row(index: Any, roots: tuple[Path, ...], image_id: int):
    """The catalog row (``ImageRow``, detached) of a servable image of ``index``, else NotFoundError saying why."""
    from ..index.catalog import ImageRow

    with index.catalog.session() as s:
        row = s.get(ImageRow, int(image_id))
        if row is not None:
            s.expunge(row)
    if row is None:
        raise NotFoundError(f"image {image_id} is not in the catalog of index {index.name!r}")
    if row.status != "ok":
        raise NotFoundError(f"image {image_id} is {row.status} in the catalog of index {index.name!r}")
    if not roots:
        raise NotFoundError(f"index {index.name!r} holds precomputed features, not image files")
    return row


def open_checked(row: Any, roots: tuple[Path, ...]) -> tuple[int, os.stat_result]:
    """Open a catalog image read-only: inside the collection, a regular file, unchanged since indexing.

    Returns (file descriptor, its stat); the caller closes the descriptor.
    """
    real = Path(os.path.realpath(row.path))
    if not any(real == r or r in real.parents for r in roots):
        raise NotFoundError(f"image {row.id}: its file lies outside the collection")
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError:
        raise NotFoundError(f"image {row.id}: its file is gone or unreadable") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"image {row.id}: not a regular file")
        if row.size is not None and (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise NotFoundError(f"image {row.id}: the file changed since it was indexed; re-run `zslr index`")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def image_file(index: Any, roots: tuple[Path, ...], image_id: int) -> tuple[Iterator[bytes], int, str]:
    """(chunks, size, media type) of a catalog image's original file."""
    row = servable_row(index, roots, image_id)
    fd, st = open_checked(row, roots)
    media = mimetypes.guess_type(row.path)[0] or ""
    if not media.startswith("image/"):
        media = "application/octet-stream"

    def chunks() -> Iterator[bytes]:
        with os.fdopen(fd, "rb") as f:
            while block := f.read(READ_CHUNK):
                yield block
    return chunks(), int(st.st_size), media


def display_path(path: str, roots: tuple[Path, ...]) -> str:
    """A hit's path relative to the collection (clients never see the server's folder layout)."""
    p = Path(path)
    for r in roots:
        try:
            return str(p.relative_to(r))
        except ValueError:
            try:
                return str(Path(os.path.realpath(p)).relative_to(r))
            except ValueError:
                continue
    return p.name if p.is_absolute() else str(p)
