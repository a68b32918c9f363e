"""Bounds on what one request of ``zslr serve`` may ask for, and the checks that enforce them.

Every allocation a request causes is sized by these numbers: how many queries, how long each
one's text, how large an upload, how deep a page. Clients may send attribute / text / class /
vector queries and uploaded image bytes, never a path the server would read.
"""
from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import IncompatibleError, InvalidInputError, ZslrError

MAX_TOP_K = 100
MAX_OFFSET = 10_000
MAX_QUERIES = 16                 # queries in one request (each is its own ranking)
MAX_QUERY_CHARS = 65_536         # one query's text (an inline vector of a few thousand numbers fits)
DEFAULT_TOP_K = 24
DEFAULT_MAX_UPLOAD = 10 << 20    # bytes of an uploaded example image
IMAGE_QUERY_SLOTS = 2            # concurrent image decodes + backbone passes (each can take ~300 MB)
# Names encoded as text (the general model embeds every attribute name and text with the sentence
# encoder: ~0.3 MB per name, 1,024 made-up names held +300 MB) in one query and in one request.
# The library accepts 4,096 per query (limits.MAX_ATTRIBUTE_TERMS); a page has no use for more
# than a few, and longer descriptors can be sent as one vector= query.
MAX_QUERY_TERMS = 64
MAX_REQUEST_TERMS = 64           # attribute names + text and class queries, over all queries of a request
MAX_TEXT_CHARS = 2_000           # one text or class query (the sentence encoder's own limit)
MAX_REQUEST_TEXT_CHARS = 4_000   # all text and class queries of a request (16 x 2,000 took 4 s of encoder time)
# glibc malloc gives each thread that contends for it an arena of its own (up to 8 per core) and
# never hands memory freed in one arena to another thread: the server's pool threads each kept
# their own ~35 MB of encoder buffers (8 requests: +270 MB however few ran at once). Two arenas
# keep it to what the slots allow (+67 MB, scripts/probe_serve.py).
MALLOC_ARENAS = 2
# The work in flight, server-wide, in units of names to encode (QuerySlots): a request takes one
# unit per attribute name, text and class query (at least 1), an example image IMAGE_WEIGHT. So at
# most one request at the per-request bound (or one image query) works at a time, while many small
# searches run side by side; others wait up to QUERY_WAIT_S, then get 503.
QUERY_BUDGET = MAX_REQUEST_TERMS
IMAGE_WEIGHT = QUERY_BUDGET     # one image decode + backbone pass at a time
# Threads that run search work. Each thread that ever runs BLAS, ONNX Runtime or malloc-heavy work
# keeps its own buffers for good (OpenBLAS's per-thread buffer, a malloc arena): run on the web
# server's pool of up to 40 threads, 8 hostile requests left +270 MB behind however few ran at once.
WORK_THREADS = 2
HEAVY_WEIGHT = 16                # a search this heavy hands its freed memory back when done (release_memory)
QUERY_WAIT_S = 30.0
_ASCII_ID = re.compile(r"[0-9]{1,18}")

# Query kinds a client may send. "attribute-file" and path-based "image" read files named by the
# request, which a server must not do; uploads arrive as bytes instead.
CLIENT_KINDS = ("attributes", "text", "class", "vector")


class ServerBusyError(ZslrError):
    """Every query slot stayed taken for ``QUERY_WAIT_S``; the HTTP layer answers 503."""


def parse_image_id(text: str) -> int | None:
    """A catalog id written in ASCII digits (at most 18, so it fits int64) -> int; None for anything else.

    ``str.isdigit`` also accepts superscripts, circled and other scripts' digits ('²', '①', '١',
    '１', '𝟏'), some of which ``int()`` refuses and some it reads as ordinary numbers: neither is an id.
    """
    return int(text) if _ASCII_ID.fullmatch(text) else None


class QuerySlots:
    """A weighted semaphore: searches whose weights sum to at most ``budget`` work at once; a caller
    waits up to ``wait_s`` for its share, then :class:`ServerBusyError`.

    Bounds the memory of concurrent requests by what one request at the per-request bounds needs,
    however many arrive at once. First come, first served: a caller waits until every earlier
    caller has its share, so a steady stream of small searches never starves a heavy one (an
    image query needs the whole budget; without the queue it waited until the small ones happened
    to leave none in flight, which under 16 clients was seconds: its p99 13x the median).
    Thread-safe; ``with slots.hold(weight): ...``.
    """

    def __init__(self, budget: int = QUERY_BUDGET, wait_s: float = QUERY_WAIT_S):
        if budget < 1:
            raise InvalidInputError(f"query budget must be >= 1, got {budget}")
        self.budget, self.wait_s = budget, wait_s
        self._free = budget
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()   # waiting callers' tickets, in arrival order

    @contextmanager
    def hold(self, weight: int = 1) -> Iterator[None]:
        w = min(self.budget, max(1, int(weight)))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                if not self._cond.wait_for(lambda: self._queue[0] is ticket and self._free >= w, timeout=self.wait_s):
                    raise ServerBusyError(f"the server's search capacity ({self.budget} names) stayed busy for "
                                          f"{self.wait_s:g} s; try again shortly")
                self._free -= w
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()   # the next in line may fit now
        try:
            yield
        finally:
            with self._cond:
                self._free += w
                self._cond.notify_all()


def work_weight(specs: list) -> int:
    """The share of :class:`QuerySlots` a request's specs take: names to encode, images at IMAGE_WEIGHT."""
    return sum(IMAGE_WEIGHT if s.kind == "image" else count_terms(s.kind, s.text) for s in specs)


def _libc():
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    Called after a heavy search: what its encoder buffers used is free but still resident, and the
    next burst of requests would otherwise stack its own peak on top of it (a few ms).
    """
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (``mallopt(M_ARENA_MAX)``; see ``MALLOC_ARENAS``).

    Takes effect for arenas made from now on: call before the server's threads start. True when set;
    False where the C library is not glibc or ``$MALLOC_ARENA_MAX`` already says what the user wants.
    """
    import os

    libc = _libc()   # None off glibc (musl and others have their own allocator)
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(-8, int(n)))   # -8: M_ARENA_MAX in glibc's malloc.h


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


def count_terms(kind: str, value: str) -> int:
    """Names a query asks to resolve: the non-empty comma-separated items of an attributes query, else 1."""
    if kind != "attributes":
        return 1 if kind in ("text", "class") else 0
    return sum(1 for item in value.split(",") if item.strip())


def make_specs(pairs: list[tuple[str, str]], image: tuple[str, bytes] | None, max_upload_bytes: int) -> list:
    """(kind, value) pairs from a request (+ an uploaded (name, bytes) image) -> QuerySpecs, every bound checked."""
    from ..query import KINDS, QuerySpec

    n = len(pairs) + (image is not None)
    if n == 0:
        raise InvalidInputError("no query given; use attributes=, text=, class= or vector= (or upload an image)")
    if n > MAX_QUERIES:
        raise InvalidInputError(f"{n} queries in one request; at most {MAX_QUERIES}")
    specs = []
    terms = text_chars = 0
    for kind, value in pairs:
        if kind not in CLIENT_KINDS:
            raise InvalidInputError(f"unknown query kind {kind!r}; valid: {', '.join(CLIENT_KINDS)} "
                                    "(example images are uploaded, not named)")
        if len(value) > MAX_QUERY_CHARS:
            raise InvalidInputError(f"{kind} query of {len(value)} characters; at most {MAX_QUERY_CHARS}")
        if kind in ("text", "class") and len(value) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"{kind} query of {len(value)} characters; at most {MAX_TEXT_CHARS}")
        if kind in ("text", "class"):
            text_chars += len(value)
            if text_chars > MAX_REQUEST_TEXT_CHARS:
                raise InvalidInputError(f"text and class queries of more than {MAX_REQUEST_TEXT_CHARS} characters "
                                        f"in all in one request; at most {MAX_REQUEST_TEXT_CHARS}")
        n_terms = count_terms(kind, value)
        if n_terms > MAX_QUERY_TERMS:
            raise InvalidInputError(f"attributes query of {n_terms} names; at most {MAX_QUERY_TERMS} per query "
                                    "(send a longer descriptor as one vector= query)")
        terms += n_terms
        if terms > MAX_REQUEST_TERMS:
            raise InvalidInputError(f"more than {MAX_REQUEST_TERMS} attribute names, texts and classes in one "
                                    f"request; at most {MAX_REQUEST_TERMS}")
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
