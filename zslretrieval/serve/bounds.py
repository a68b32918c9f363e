"""Bounds on what one request of ``zslr serve`` may ask for, and the checks that enforce them.

Every allocation a request causes is sized by these numbers: how many queries, how long each
one's text, how large an upload, how deep a page. Clients may send attribute / text / class /
vector queries and uploaded image bytes, never a path the server would read.
"""
from __future__ import annotations

from ..errors import IncompatibleError, InvalidInputError

MAX_TOP_K = 100
MAX_OFFSET = 10_000
MAX_QUERIES = 16                 # queries in one request (each is its own ranking)
MAX_QUERY_CHARS = 65_536         # one query's text (an inline vector of a few thousand numbers fits)
DEFAULT_TOP_K = 24
DEFAULT_MAX_UPLOAD = 10 << 20    # bytes of an uploaded example image
IMAGE_QUERY_SLOTS = 2            # concurrent image decodes + backbone passes (each can take ~300 MB)

# Query kinds a client may send. "attribute-file" and path-based "image" read files named by the
# request, which a server must not do; uploads arrive as bytes instead.
CLIENT_KINDS = ("attributes", "text", "class", "vector")


def check_upload_limit(max_upload_bytes: int) -> None:
    """Refuse a non-positive upload limit (``--max-upload-mb``)."""
    if max_upload_bytes < 1:
        raise InvalidInputError(f"--max-upload-mb must be positive, got {max_upload_bytes} bytes")


def check_page(top_k: int, offset: int) -> None:
    """Refuse a page outside ``1 <= top_k <= MAX_TOP_K``, ``0 <= offset <= MAX_OFFSET``."""
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if not 0 <= int(offset) <= MAX_OFFSET:
        raise InvalidInputError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")


def make_specs(pairs: list[tuple[str, str]], image: tuple[str, bytes] | None, max_upload_bytes: int) -> list:
    """(kind, value) pairs from a request (+ an uploaded (name, bytes) image) -> QuerySpecs, every bound checked."""
    from ..query import KINDS, QuerySpec

    n = len(pairs) + (image is not None)
    if n == 0:
        raise InvalidInputError("no query given; use attributes=, text=, class= or vector= (or upload an image)")
    if n > MAX_QUERIES:
        raise InvalidInputError(f"{n} queries in one request; at most {MAX_QUERIES}")
    specs = []
    for kind, value in pairs:
        if kind not in CLIENT_KINDS:
            raise InvalidInputError(f"unknown query kind {kind!r}; valid: {', '.join(CLIENT_KINDS)} "
                                    "(example images are uploaded, not named)")
        if len(value) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"{kind} query of {len(value)} characters; at most {MAX_QUERY_CHARS}")
        if kind == "text" and "text" not in KINDS:
            raise IncompatibleError("text queries are not available: this zslretrieval has no text encoder; "
                                    "use attributes= or class=")
        specs.append(QuerySpec(kind, value, kind))
    if image is not None:
        name, data = image
        if not data:
            raise InvalidInputError("the uploaded image is empty (0 bytes)")
        if len(data) > max_upload_bytes:
            raise InvalidInputError(f"uploaded image of {len(data)} bytes; at most {max_upload_bytes}")
        specs.append(QuerySpec("image", name or "uploaded image", "upload", data=data))
    return specs
