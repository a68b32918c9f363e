"""Filters applied inside a search: which catalog images a query may return at all.

A :class:`SearchFilter` (path glob, folder, minimum file size in bytes or pixels, date range) is turned into
the set of allowed image ids from the catalog (:func:`allowed_ids`); the search then scores exactly
those images (``query.refined``), so a filtered query returns every matching image in rank order
and never fewer than exist -- unlike cutting a filter out of a top-k afterwards.
"""
from __future__ import annotations

import datetime as _dt
import fnmatch
import os
from dataclasses import dataclass

import numpy as np

from ..errors import IncompatibleError, InvalidInputError
from .protocols import SearchableIndex

# The catalog columns (schema 3) of when a photo was taken (naive UTC: EXIF DateTimeOriginal, else the
# file's mtime) and of its displayed size in pixels, set by `zslr index`; a catalog without them
# refuses a date or pixel filter by name. Rows where they are NULL (benchmark feature rows, rows not
# re-indexed since schema 2) match no filter on them.
DATE_COLUMN = "taken_at"
PIXEL_COLUMNS = ("width", "height")


@dataclass(frozen=True)
class SearchFilter:
    """What a result must satisfy. Every field is optional; all given ones must hold.

    ``path_glob``: an ``fnmatch`` pattern on the image's full path (``*`` also crosses ``/``), e.g.
    ``*/holiday/*.jpg``; ``folder``: the image lies under this folder (any depth); ``min_bytes``: the
    file's size in bytes, as indexed; ``min_side``: the image's shorter side in pixels (as displayed,
    EXIF orientation applied), at least this; ``taken_after`` / ``taken_before``: when the photo was
    taken (EXIF DateTimeOriginal, else the file time; naive UTC), both ends inclusive.
    """

    path_glob: str | None = None
    folder: str | None = None
    min_bytes: int | None = None
    min_side: int | None = None
    taken_after: _dt.datetime | None = None
    taken_before: _dt.datetime | None = None

    def __post_init__(self) -> None:
        for name, unit in (("min_bytes", "bytes"), ("min_side", "pixels")):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise InvalidInputError(f"{name} {v!r}: expected a number of {unit} >= 0")
        for name in ("path_glob", "folder"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip() or len(v) > 4096):
                raise InvalidInputError(f"{name} {v!r}: expected a non-empty pattern or path of at most 4096 characters")
        for name in ("taken_after", "taken_before"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, _dt.datetime):
                object.__setattr__(self, name, parse_date(v, name, end=name == "taken_before"))
        if self.taken_after and self.taken_before and self.taken_after > self.taken_before:
            raise InvalidInputError(f"date range {self.taken_after.isoformat()} .. {self.taken_before.isoformat()} "
                                    "is empty: the start is after the end")

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.path_glob, self.folder, self.min_bytes, self.min_side,
                                          self.taken_after, self.taken_before))

    def describe(self) -> dict:
        out: dict = {}
        for name in ("path_glob", "folder", "min_bytes", "min_side"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        for name in ("taken_after", "taken_before"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).isoformat()
        return out


def parse_date(text, what: str = "date", *, end: bool = False) -> _dt.datetime:
    """``2024-05-01`` or ``2024-05-01T12:30`` -> datetime; a bare day as the end of a range means its
    last moment (so ``--before 2024-05-01`` keeps that day)."""
    if isinstance(text, _dt.datetime):
        return text
    if isinstance(text, _dt.date):
        text = text.isoformat()
    s = str(text).strip()
    try:
        d = _dt.datetime.fromisoformat(s)
    except ValueError:
        raise InvalidInputError(f"{what} {text!r}: expected an ISO date like 2024-05-01 or 2024-05-01T12:30") from None
    if end and len(s) == 10:
        d = d + _dt.timedelta(days=1) - _dt.timedelta(microseconds=1)
    return d.replace(tzinfo=None) if d.tzinfo is None else d.astimezone(_dt.timezone.utc).replace(tzinfo=None)


def parse_size(text) -> int | None:
    """``"200k"``, ``"1.5M"``, ``"3000"`` -> bytes (k/M/G are powers of 1024)."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    num = s[:-1] if s[-1:] in "KMG" else s
    try:
        v = float(num)
    except ValueError:
        raise InvalidInputError(f"minimum size {text!r}: expected bytes like 50000, 200k or 1.5M") from None
    if not np.isfinite(v) or v < 0:
        raise InvalidInputError(f"minimum size {text!r}: expected a size >= 0")
    return int(v * mult)


def _bases(folder: str) -> tuple[str, ...]:
    """The folder as the catalog may hold its paths: as given (absolute) and with links resolved
    (files found through a linked folder may be stored either way)."""
    given = os.path.normpath(os.path.abspath(os.path.expanduser(folder)))
    return tuple({given, os.path.realpath(given)})


def _under(path: str, bases: tuple[str, ...]) -> bool:
    p = os.path.normpath(path)
    return any(p == b or p.startswith(b.rstrip(os.sep) + os.sep) for b in bases)


def allowed_ids(index: SearchableIndex, f: SearchFilter) -> np.ndarray:
    """Catalog ids (ascending int64) of the "ok" images that satisfy ``f``, read from the catalog in one query.

    Path conditions are tested here on each path (``fnmatch`` and a folder prefix: the same rule
    on SQLite and PostgreSQL); size and date conditions go into the SQL ``WHERE``.
    """
    catalog = getattr(index, "catalog", None)
    if catalog is None:
        raise IncompatibleError(f"index {index.manifest.name!r} has no catalog to filter by path, size or date")
    from sqlalchemy import select

    from ..index.catalog import ImageRow

    cols = [ImageRow.id, ImageRow.path]
    q = select(*cols).where(ImageRow.status == "ok")
    if f.min_bytes is not None:
        q = q.where(ImageRow.size >= f.min_bytes)
    if f.min_side is not None:
        w, h = (getattr(ImageRow, c, None) for c in PIXEL_COLUMNS)
        if w is None or h is None:
            raise IncompatibleError("this catalog records no image sizes in pixels; filter by --min-bytes instead")
        q = q.where(w >= f.min_side, h >= f.min_side)
    if f.taken_after is not None or f.taken_before is not None:
        col = getattr(ImageRow, DATE_COLUMN, None)
        if col is None:
            raise IncompatibleError(f"this catalog records no photo dates (no {DATE_COLUMN!r} column); "
                                    "re-index with a version of `zslr index` that stores them, or drop the date filter")
        if f.taken_after is not None:
            q = q.where(col >= f.taken_after)
        if f.taken_before is not None:
            q = q.where(col <= f.taken_before)
    with catalog.session() as s:
        rows = s.execute(q).all()
    bases = _bases(f.folder) if f.folder is not None else ()
    keep = []
    for i, path in rows:
        if f.folder is not None and not _under(path, bases):
            continue
        if f.path_glob is not None and not fnmatch.fnmatchcase(path, f.path_glob):
            continue
        keep.append(int(i))
    return np.array(sorted(keep), np.int64)

