"""The HTTP layer of ``zslr serve``: FastAPI routes over :class:`~zslretrieval.serve.service.SearchService`.

FastAPI (on Starlette, run by uvicorn) because it gives typed request validation, an OpenAPI
description (``/api/openapi.json``) and per-route request-body limits without hand-written
parsing; the interactive ``/docs`` pages are off because they load their scripts from a CDN and
this server works offline.

Every error is JSON ``{"error": message, "status": code}``: 400 malformed or out-of-range input
(unknown names come with ``suggestions``), 401 missing token, 404 anything that is not a
servable catalog id (including paths and ``..`` tricks: no route takes a path), 413 body over
its limit, 415 wrong upload type, 422 a query this index cannot answer.
"""
from __future__ import annotations

import hmac
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, Strict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError, ZslrError
from .bounds import (DEFAULT_TOP_K, MAX_OFFSET, MAX_QUERIES, MAX_TOP_K, QuerySlots, ServerBusyError,
                     HEAVY_WEIGHT, IMAGE_WEIGHT, WORK_THREADS, limit_malloc_arenas, parse_image_id,
                     release_memory, work_weight)
from .files import NotFoundError
from .service import SearchService

log = logging.getLogger("zslretrieval.serve")

MAX_JSON_BODY = 2 << 20        # a JSON search: MAX_QUERIES queries of up to 64 KiB each, and some slack
TOKEN_COOKIE = "zslr_token"
LOOPBACK_HOSTS = (b"127.0.0.1", b"localhost", b"[::1]")
# The page loads nothing from elsewhere and runs no inline script.
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
UPLOAD_TYPES = ("image/", "application/octet-stream")


# Query-string parameters (module level: FastAPI resolves these annotations by name).
Repeated = Annotated[list[str] | None, Query(max_length=MAX_QUERIES)]
Classes = Annotated[list[str] | None, Query(alias="class", max_length=MAX_QUERIES)]
TopK = Annotated[int, Query(ge=1, le=MAX_TOP_K)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
GeneralWeight = Annotated[float | None, Query(gt=0, le=1, description="fuse the general model's text score: "
                                              "(1-w) z(model) + w z(general); index with a model of its own")]
UploadName = Annotated[str, Query(max_length=200)]
# JSON numbers of the body: strict, so `true` is refused instead of read as 1 (bool is an int subclass)
JsonInt = Annotated[int, Strict()]
JsonFloat = Annotated[float, Strict()]
Threshold = Annotated[float | None, Query(gt=0, le=1, description="near-duplicate cosine threshold (default: zslr duplicates')")]


Ids = Annotated[str | None, Query(max_length=20_000, description="catalog ids, comma-separated: 12,40,7")]
Pattern = Annotated[str | None, Query(max_length=4096)]
Day = Annotated[str | None, Query(max_length=40, description="ISO date, e.g. 2024-05-01")]


def refine_options(more_like: Ids = None, less_like: Ids = None, path_glob: Pattern = None, folder: Pattern = None,
                   min_bytes: Annotated[str | None, Query(max_length=20, description="bytes: 50000, 200k, 1.5M")] = None,
                   min_side: Annotated[int | None, Query(ge=0, le=1_000_000)] = None, after: Day = None,
                   before: Day = None, min_score: Annotated[float | None, Query(ge=0, le=1)] = None):
    """Relevance feedback (ids marked right / wrong), filters and the relevance cut-off of a search
    (``query.refined.search_options``); every hit carries its calibrated ``relevance``."""
    from ..query.refined import search_options
    return search_options(more_like=more_like, less_like=less_like, path_glob=path_glob, folder=folder,
                          min_bytes=min_bytes, min_side=min_side, after=after, before=before, min_score=min_score,
                          relevance=True)


class QueryItem(BaseModel):
    kind: Literal["attributes", "text", "class", "vector"] = Field(
        description="attributes: 'stripes, water=0.7, -domestic'; text: free text; class: a class name; "
                    "vector: one number per attribute")
    value: str = Field(min_length=1, max_length=65_536)


class SearchBody(BaseModel):
    queries: list[QueryItem] = Field(min_length=1, max_length=MAX_QUERIES)
    top_k: JsonInt = Field(DEFAULT_TOP_K, ge=1, le=MAX_TOP_K)
    offset: JsonInt = Field(0, ge=0, le=MAX_OFFSET)
    general_weight: JsonFloat | None = Field(None, gt=0, le=1, description="fuse the general model's text score "
                                         "(index with a model of its own): (1-w) z(model) + w z(general)")
    more_like: list[JsonInt] = Field([], max_length=1000, description="relevance feedback: ids marked right")
    less_like: list[JsonInt] = Field([], max_length=1000, description="relevance feedback: ids marked wrong")
    path_glob: str | None = Field(None, max_length=4096)
    folder: str | None = Field(None, max_length=4096)
    min_bytes: JsonInt | None = Field(None, ge=0)
    min_side: JsonInt | None = Field(None, ge=0, le=1_000_000)
    after: str | None = Field(None, max_length=40)
    before: str | None = Field(None, max_length=40)
    min_score: JsonFloat | None = Field(None, ge=0, le=1)


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, "status": status, **extra}, status_code=status)


def _status_of(e: ZslrError) -> int:
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, ServerBusyError):
        return 503
    if isinstance(e, IncompatibleError):
        return 422
    if isinstance(e, (InvalidInputError, DataNotFoundError)):
        return 400
    return 500


def _static(name: str) -> bytes:
    return resources.files("zslretrieval.serve").joinpath("static", name).read_bytes()


def _image_id(text: str) -> int:
    # ids are catalog integers in ASCII digits; anything else can only be a probe for a path, and is
    # 404 like an unknown id (never 500: '²'.isdigit() is True but int('²') fails)
    image_id = parse_image_id(text)
    if image_id is None:
        raise NotFoundError(f"no image {text[:40]!r}: images are addressed by catalog id (ASCII digits 0-9)")
    return image_id


def _pairs(attributes, text, class_, vector) -> list[tuple[str, str]]:
    out = []
    for kind, values in (("attributes", attributes), ("text", text), ("class", class_), ("vector", vector)):
        out.extend((kind, v) for v in values or [] if v.strip())
    return out


def _host_name(host: bytes) -> bytes:
    """The name part of a Host header: ``[v6]`` or a name, without a port of ASCII digits; anything
    else (text after ``]``, a non-numeric port) is returned whole, so it matches no allowed name."""
    if host.startswith(b"["):
        end = host.find(b"]")
        rest = host[end + 1:]
        if end < 0 or (rest and not (rest[:1] == b":" and rest[1:].isdigit())):
            return host
        return host[:end + 1]
    name, sep, port = host.partition(b":")
    return name if sep and port.isdigit() else host


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413)


class Guard:
    """Pure ASGI middleware: Host check (loopback binds), the access token (when set), request body
    limits (the upload limit on the image route, ``MAX_JSON_BODY`` elsewhere), and security headers
    on every response.

    ``loopback_only`` accepts only Host headers naming this machine, which defeats DNS rebinding: a
    page on another site cannot make a browser read the local server through the site's own name.
    """

    def __init__(self, app, token: str | None = None, loopback_only: bool = True,
                 limits: dict[str, int] | None = None):
        self.app, self.token, self.loopback_only = app, token, loopback_only
        self.limits = limits or {}

    def _authorised(self, scope) -> tuple[bool, bool]:
        """(ok, set_cookie): Bearer header, the cookie, or ?token= (which then sets the cookie)."""
        if not self.token:
            return True, False
        headers = dict(scope.get("headers") or [])
        want = self.token.encode()
        auth = headers.get(b"authorization", b"")
        if auth.startswith(b"Bearer ") and hmac.compare_digest(auth[7:].strip(), want):
            return True, False
        for part in headers.get(b"cookie", b"").split(b";"):
            k, _, v = part.strip().partition(b"=")
            if k == TOKEN_COOKIE.encode() and hmac.compare_digest(v, want):
                return True, False
        from urllib.parse import parse_qs

        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[-1]
        if given and hmac.compare_digest(given.encode(), want):
            return True, True
        return False, False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        set_cookie, token = False, self.token
        head = scope.get("method") == "HEAD"
        if head:
            # HEAD is GET without the body, wherever GET works (RFC 9110 9.3.2); the routes declare GET only
            scope = {**scope, "method": "GET", "zslr.head": True}

        async def send_with_headers(message):
            # every answer carries the security headers, the early refusals below included
            if message["type"] == "http.response.start":
                h = list(message.get("headers", []))
                h += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                      (b"x-frame-options", b"DENY"), (b"content-security-policy", CSP.encode())]
                if set_cookie:
                    h.append((b"set-cookie", f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict".encode()))
                message = {**message, "headers": h}
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return     # the body of a HEAD answer is dropped; Content-Length stays that of GET
                message = {**message, "body": b""}
            await send(message)

        if self.loopback_only:
            host = _host_name(dict(scope.get("headers") or []).get(b"host", b"").lower())
            if host not in LOOPBACK_HOSTS:
                resp = _error(400, f"Host {host.decode('latin-1')[:80]!r} refused: this server is bound to loopback "
                                   "and answers only to 127.0.0.1 or localhost")
                return await resp(scope, receive, send_with_headers)
        ok, set_cookie = self._authorised(scope)
        if not ok:
            resp = _error(401, "this server needs its access token: open /?token=TOKEN once, or send "
                               "'Authorization: Bearer TOKEN'")
            return await resp(scope, receive, send_with_headers)
        limit = self.limits.get(scope.get("path", ""), MAX_JSON_BODY)
        try:
            declared = int(dict(scope.get("headers") or []).get(b"content-length", b"0") or 0)
        except ValueError:
            return await _error(400, "malformed Content-Length header")(scope, receive, send_with_headers)
        if declared < 0:
            return await _error(400, f"Content-Length {declared}: must be >= 0")(scope, receive, send_with_headers)
        if declared > limit:
            return await _error(413, f"request body of {declared} bytes; at most {limit} bytes here")(
                scope, receive, send_with_headers)
        received = 0

        async def limited_receive():
            # chunked bodies have no Content-Length: count what arrives and stop at the limit
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited_receive, send_with_headers)


def create_app(service: SearchService, *, token: str | None = None, loopback_only: bool = True,
               watch: bool = True) -> FastAPI:
    """The ASGI app. ``loopback_only``: accept only Host headers naming this machine (refuses DNS
    rebinding: a web page elsewhere cannot make a browser read a local server through its own name)."""

    @asynccontextmanager
    async def lifespan(_app):
        if watch:
            service.start_watcher()
        try:
            yield
        finally:
            workers.shutdown(wait=False, cancel_futures=True)
            service.close()

    app = FastAPI(title="zslretrieval", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Zero-shot image search: describe what you want by attributes, text, a class "
                              "or an example image.")
    app.state.service = service
    limit_malloc_arenas()   # before the request threads exist: their memory stays within the slots' bound
    slots = QuerySlots()
    workers = ThreadPoolExecutor(WORK_THREADS, thread_name_prefix="zslr-search")

    def _work(specs, *args):
        # every search holds its share of the work budget while it works: the memory of concurrent
        # requests stays that of one request at the per-request bounds (bounds.py), however many arrive
        weight = work_weight(specs)
        with slots.hold(weight):
            try:
                return service.search(specs, *args)
            finally:
                if weight >= HEAVY_WEIGHT:
                    release_memory()

    def _run_work(fn):
        # a swapped-in snapshot's warm-up: on the work threads, holding the whole budget like an image query
        def held():
            with slots.hold(IMAGE_WEIGHT):
                return fn()
        return workers.submit(held).result()

    service.run_work = _run_work

    def _search(specs, *args):
        # the work runs on WORK_THREADS threads of its own, never on the web server's many pool threads
        return workers.submit(_work, specs, *args).result()
    page = _static("index.html")
    static = {name: _static(name) for name in _STATIC}

    # ---------------------------------------------------------------- errors
    @app.exception_handler(ZslrError)
    async def zslr_error(_request: Request, e: ZslrError):
        status = _status_of(e)
        if status == 500:
            log.error("engine error: %s", e)
        extra = {"suggestions": e.suggestions} if getattr(e, "suggestions", None) else {}
        return _error(status, str(e), **extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, e: RequestValidationError):
        parts = []
        for err in e.errors():
            if err.get("type") == "json_invalid":
                parts.append(f"body is not valid JSON ({err.get('ctx', {}).get('error', 'decode error')} at "
                             f"character {err.get('loc', ('', '?'))[-1]})")
                continue
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body"))
            parts.append(f"{where or 'request'}: {err.get('msg')}" + (f" (got {err['input']!r})"
                         if isinstance(err.get("input"), (int, float, str)) and len(str(err["input"])) < 60 else ""))
        return _error(400, "; ".join(parts) or "malformed request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        if e.status_code == 404:
            return _error(404, f"not found: {request.url.path[:200]}")
        if e.status_code == 405:
            method = "HEAD" if request.scope.get("zslr.head") else request.method
            return _error(405, f"method {method} not allowed on {request.url.path[:200]}")
        if e.status_code == 413:
            return _error(413, "request body too large: an example image may be at most "
                               f"{service.cfg.max_upload_bytes} bytes, a JSON search {MAX_JSON_BODY} bytes")
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, e: Exception):
        log.exception("internal error")
        return _error(500, f"internal error ({type(e).__name__}); see the server log")

    # ---------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    def index_page() -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static_file(name: str) -> Response:
        if name not in static:   # a fixed list: no file system path is ever built from the request
            raise NotFoundError(f"no static file {name[:40]!r}")
        return Response(static[name], media_type=_STATIC[name], headers={"cache-control": "no-cache"})

    # ---------------------------------------------------------------- API
    @app.get("/api/health", summary="Liveness and the index generation being served")
    def health() -> dict:
        snap = service.snapshot
        return {"status": "ok", "index": snap.index.name, "generation": snap.generation, "in_sync": snap.in_sync}

    @app.get("/api/info", summary="What the index holds and which query kinds it answers")
    def info() -> dict:
        return service.info()

    @app.get("/api/vocabulary", summary="Attribute and class names, for autocomplete")
    def vocabulary() -> dict:
        return service.vocabulary()

    @app.get("/api/search", summary="Search by attributes, text, class or a descriptor vector")
    def search_get(attributes: Repeated = None, text: Repeated = None,
                   class_: Classes = None,
                   vector: Repeated = None,
                   top_k: TopK = DEFAULT_TOP_K,
                   offset: Offset = 0,
                   general_weight: GeneralWeight = None, options=Depends(refine_options)) -> dict:
        """Each given query (``attributes=stripes,water``, ``class=zebra``, ...; repeat a parameter for
        several) is its own ranking; results ``offset .. offset+top_k`` of each, ``more`` if there are more."""
        return _search(service.make_specs(_pairs(attributes, text, class_, vector)), top_k, offset,
                       general_weight, None if general_weight is not None and not options.active_refine
                       else options)

    @app.post("/api/search", summary="Search, queries in a JSON body")
    def search_post(body: SearchBody) -> dict:
        specs = service.make_specs([(q.kind, q.value) for q in body.queries])
        options = refine_options(",".join(map(str, body.more_like)), ",".join(map(str, body.less_like)), body.path_glob,
                                 body.folder, body.min_bytes, body.min_side, body.after, body.before, body.min_score)
        return _search(specs, body.top_k, body.offset, body.general_weight,
                       None if body.general_weight is not None and not options.active_refine else options)

    @app.post("/api/search/image", summary="Search by an example image (the raw image bytes as the body)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/*": {"schema": {"type": "string", "format": "binary"}}}}})
    async def search_image(request: Request, attributes: Repeated = None, text: Repeated = None,
                           class_: Classes = None,
                           vector: Repeated = None,
                           top_k: TopK = DEFAULT_TOP_K,
                           offset: Offset = 0,
                           name: UploadName = "uploaded image", options=Depends(refine_options)) -> dict:
        """The body is one encoded image (JPEG, PNG, WebP...; at most the server's upload limit), decoded
        with the same guards as indexing. Other query parameters add more queries, as for GET."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not ctype.startswith(UPLOAD_TYPES):
            return _error(415, f"upload content-type {ctype or '(none)'!r}; send the image bytes as image/* "
                               "or application/octet-stream")
        data = await request.body()   # bounded by Guard: 413 past the upload limit
        specs = service.make_specs(_pairs(attributes, text, class_, vector), image=(name, data))
        return await run_in_threadpool(_search, specs, top_k, offset, None, options)

    @app.get("/api/duplicates", summary="Groups of near-duplicate images (cosine of the raw backbone features)")
    def duplicates(threshold: Threshold = None) -> dict:
        """Exact search over the stored features (``index.duplicates``); each member carries its catalog id
        (thumbnails: ``/api/images/{id}/thumb``) and its name relative to the collection."""
        from ..index.duplicates import DEFAULT_THRESHOLD, find_duplicates
        from .files import display_path

        snap = service.snapshot
        with slots.hold(IMAGE_WEIGHT):   # an exact pass over every stored vector: work like an image search's
            out = find_duplicates(snap.index, threshold=DEFAULT_THRESHOLD if threshold is None else threshold).to_dict()
        for g in out["groups"]:
            for m in g["members"]:
                m["name"] = display_path(m.pop("path"), snap.roots)
        return out

    @app.get("/api/images/{image_id}", summary="The original image file of a catalog id")
    def image(image_id: str) -> Response:
        chunks, size, media = service.image_file(_image_id(image_id))
        return StreamingResponse(chunks, media_type=media, headers={
            "content-length": str(size), "cache-control": "private, max-age=300",
            **({} if media.startswith("image/") else {"content-disposition": "attachment"})})

    @app.get("/api/images/{image_id}/thumb", summary="A JPEG thumbnail of a catalog id (made once, cached)")
    def thumbnail(image_id: str, request: Request) -> Response:
        jpeg, etag = service.thumbnail(_image_id(image_id))
        tag = f'"{etag[:32]}"'
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"etag": tag})
        return Response(jpeg, media_type="image/jpeg", headers={"etag": tag, "cache-control": "private, max-age=3600"})

    app.add_middleware(Guard, token=token, loopback_only=loopback_only,
                       limits={"/api/search/image": service.cfg.max_upload_bytes})
    return app
