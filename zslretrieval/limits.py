"""Caps on user inputs that size an allocation, in one place so each is documented and tested.

A value over its cap is refused with :class:`InvalidInputError` (exit 2) naming the value and
the limit, before anything is read or allocated by it. Elsewhere: ``zslr query --top-k`` is
clamped to the index size (query library), images over ``features.images.MAX_IMAGE_PIXELS``
are recorded as failed at ingestion, uploads are capped by the server.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import InvalidInputError

MiB = 1 << 20
# --batch FILE: one query per line; 10,000 queries are 10,000 result lists and query vectors
MAX_BATCH_FILE_BYTES = 16 * MiB
MAX_BATCH_QUERIES = 10_000
# --attribute-file / "attribute-file:" lines: a descriptor as text; 16 MiB is ~1.5M numbers,
# far beyond any vocabulary (xlsa17's have 64 to 1,024 entries)
MAX_DESCRIPTOR_FILE_BYTES = 16 * MiB
# --attributes "a, b=0.5, -c": each unknown name costs a fuzzy match against the vocabulary
MAX_ATTRIBUTE_TERMS = 4096
# zslr index: decoder processes and images decoded per batch
MAX_WORKERS = 64
MAX_BATCH_SIZE = 4096


def require_at_most(what: str, value: int, limit: int, unit: str = "") -> None:
    """Refuse ``value`` above ``limit`` with a message naming both."""
    if value > limit:
        u = f" {unit}" if unit else ""
        raise InvalidInputError(f"{what} is {value:,}{u}; the limit is {limit:,}{u}")


def require_file_at_most(path: str | os.PathLike, limit: int, what: str) -> None:
    """Refuse a file larger than ``limit`` bytes before reading it."""
    size = Path(path).stat().st_size
    require_at_most(f"{what} {path}", size, limit, "bytes")
