"""What a user asks for, before it is resolved against an index: one :class:`QuerySpec` per query.

Kinds (the same on the command line and in a ``--batch`` file, one query per line)::

    text: a striped animal in the water           # --text (free text, any words)
    attributes: stripes, water=0.7, -domestic     # --attributes
    class: zebra                                  # --class
    attribute-file: path/to/vector.txt            # --attribute-file
    vector: 0.1, 0, 0.3, ...                      # an inline descriptor
    image: path/to/photo.jpg                      # --image (query by example)

Blank lines and lines starting with ``#`` are ignored. Relative paths in a batch file are
looked up in the current directory first, then next to the batch file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataNotFoundError, InvalidInputError
from ..limits import MAX_BATCH_FILE_BYTES, MAX_BATCH_QUERIES, require_at_most, require_file_at_most

KINDS = ("text", "attributes", "class", "attribute-file", "vector", "image")
_ALIASES = {
    "text": "text", "t": "text", "description": "text",
    "attributes": "attributes", "attribute": "attributes", "attrs": "attributes", "a": "attributes",
    "class": "class", "c": "class",
    "attribute-file": "attribute-file", "attribute_file": "attribute-file", "file": "attribute-file",
    "vector": "vector", "v": "vector",
    "image": "image", "img": "image", "i": "image",
}


@dataclass(frozen=True)
class QuerySpec:
    """One query as typed: ``kind`` in :data:`KINDS`, ``text`` its argument, ``origin`` where it came from.

    ``data``: for an ``image`` query whose bytes are already in memory (an upload to ``zslr serve``),
    the encoded image; ``text`` then only names it and no file is read.
    """

    kind: str
    text: str
    origin: str = ""
    data: bytes | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInputError(f"unknown query kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.data is not None and self.kind != "image":
            raise InvalidInputError(f"{self.origin or self.kind}: only image queries carry bytes, not {self.kind}")
        if not self.text.strip():
            raise InvalidInputError(f"{self.origin or self.kind}: empty {self.kind} query")

    def __str__(self) -> str:
        return f"{self.kind}: {self.text}"


def parse_query_line(line: str, origin: str = "") -> QuerySpec:
    """``"class: zebra"`` -> QuerySpec("class", "zebra"); InvalidInputError naming the accepted kinds."""
    kind, sep, rest = line.partition(":")
    key = kind.strip().lower()
    if not sep or key not in _ALIASES:
        where = f"{origin}: " if origin else ""
        raise InvalidInputError(
            f"{where}cannot read query {line.strip()!r}; expected '<kind>: <value>' with kind one of "
            f"{', '.join(KINDS)} (e.g. 'attributes: stripes,water' or 'class: zebra')")
    return QuerySpec(_ALIASES[key], rest.strip(), origin)


def read_batch_file(path: str | os.PathLike) -> list[QuerySpec]:
    """Parse a batch file, one query per line; paths are made absolute so they survive a cwd change."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"batch file not found: {p}")
    require_file_at_most(p, MAX_BATCH_FILE_BYTES, "batch file")
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"batch file {p} is not readable text ({e})") from e
    specs: list[QuerySpec] = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec = parse_query_line(line, f"{p}:{n}")
        if spec.kind in ("image", "attribute-file"):
            spec = QuerySpec(spec.kind, str(_locate(spec.text, p.parent)), spec.origin)
        specs.append(spec)
        require_at_most(f"the number of queries in batch file {p}", len(specs), MAX_BATCH_QUERIES)
    if not specs:
        raise InvalidInputError(f"batch file {p} holds no queries; write one per line, e.g. 'class: zebra'")
    return specs


def _locate(text: str, base: Path) -> Path:
    given = Path(text).expanduser()
    if given.is_absolute() or given.exists():
        return given.resolve() if given.exists() else given
    beside = base / given
    return beside.resolve() if beside.exists() else given
