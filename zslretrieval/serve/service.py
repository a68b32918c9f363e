"""What ``zslr serve`` does, without HTTP: one long-lived, read-only view of an index.

:class:`SearchService` opens the index once (its model, the backbone for example-image queries)
and answers searches through the same :class:`~zslretrieval.query.QueryEngine` as ``zslr query``;
it adds only what a server needs on top: bounds on every request-sized input, pagination,
catalog-id-only access to image files, a thumbnail cache, and picking up new index states.

Never writing the index
    The index is opened with ``repair=False`` (a reader that finds a stale FAISS file would
    otherwise re-sync it) and nothing is written under its folder. Thumbnails go to a cache
    outside it (``--cache-dir``, default ``$XDG_CACHE_HOME/zslretrieval/thumbs``): an index may
    be read-only, shared, or owned by a running ``zslr index`` that holds its write lock, and a
    cache is disposable while the index is not. The cache is keyed by the content hash the
    catalog stores, so it is shared by indexes of the same photos and never serves stale pixels.

Old or new state, never a mix
    A watcher polls the catalog manifest and the FAISS files' stat every ``reload_interval``
    seconds. A changed index is opened as a new snapshot and swapped in only when its FAISS
    file holds exactly its catalog entries (``OpenIndex.in_sync``): while ``zslr index`` is
    between its catalog commits and its final FAISS write, requests keep the previous snapshot.
    A request holds one snapshot from start to end.
"""
from __future__ import annotations

import hashlib
import io
import logging
import mimetypes
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError, ZslrError

log = logging.getLogger("zslretrieval.serve")

# Bounds on what a request may ask for: every allocation a request causes is sized by these.
MAX_TOP_K = 100
MAX_OFFSET = 10_000
MAX_QUERIES = 16                 # queries in one request (each is its own ranking)
MAX_QUERY_CHARS = 65_536         # one query's text (an inline vector of a few thousand numbers fits)
DEFAULT_TOP_K = 24
DEFAULT_MAX_UPLOAD = 10 << 20    # bytes of an uploaded example image
IMAGE_QUERY_SLOTS = 2            # concurrent image decodes + backbone passes (each can take ~300 MB)
THUMB_PX = 256
READ_CHUNK = 256 << 10

# Query kinds a client may send. "attribute-file" and path-based "image" read files named by the
# request, which a server must not do; uploads arrive as bytes instead.
CLIENT_KINDS = ("attributes", "text", "class", "vector")


class NotFoundError(DataNotFoundError):
    """An image id that is not (or no longer) a servable catalog image; the HTTP layer answers 404."""


@dataclass(frozen=True)
class ServeConfig:
    """Options of ``zslr serve``."""

    index: str = "default"
    index_root: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None                  # required on every request when set
    weights: str | None = None                # backbone weight file, as for `zslr query --weights`
    images_roots: tuple[str, ...] = ()        # image files are served only from under these
    cache_dir: str | None = None              # thumbnail cache; default under $XDG_CACHE_HOME
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    reload_interval: float = 1.0              # seconds between checks for a new index state; 0 = never
    threads: int = 1                          # torch/FAISS threads per request (requests run concurrently)
    preload: bool = True                      # load the backbone at start, not on the first image query


@dataclass
class Snapshot:
    """One consistent state of the index, with the engine that answers queries on it."""

    index: Any                                # zslretrieval.index.OpenIndex
    engine: Any                               # zslretrieval.query.QueryEngine
    signature: tuple
    generation: int
    in_sync: bool
    roots: tuple[Path, ...]                   # resolved folders image files may be served from
    capabilities: dict[str, bool] | None = None
    opened: float = field(default_factory=time.time)


def default_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "zslretrieval" / "thumbs"


def index_signature(index: Any) -> tuple:
    """What changes when a writer commits: the manifest's clock and counts, the FAISS files' stat."""
    from ..index.layout import INDEX_FILE_GLOB

    m = index.catalog.manifest()
    files = []
    for p in sorted(Path(index.folder).glob(INDEX_FILE_GLOB)):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        files.append((p.name, st.st_ino, st.st_mtime_ns, st.st_size))
    return (m.updated, m.n_entries, m.n_images, m.model_sha256, m.index_type, tuple(files)) if m else (None,)


class SearchService:
    """Read-only searches, image and thumbnail access for one index (thread-safe)."""

    def __init__(self, cfg: ServeConfig):
        if cfg.max_upload_bytes < 1:
            raise InvalidInputError(f"--max-upload-mb must be positive, got {cfg.max_upload_bytes} bytes")
        self.cfg = cfg
        self.cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
        self._cache_ok = True
        self._swap = threading.Lock()
        self._image_slots = threading.BoundedSemaphore(IMAGE_QUERY_SLOTS)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._rejected: tuple | None = None
        self.snapshot = self._open(generation=1, previous=None)
        if not self.snapshot.in_sync:
            log.warning("index %s: the FAISS file does not hold exactly the catalog's entries (a writer is "
                        "running, or one crashed; `zslr index --name %s` repairs it); serving it as it is",
                        self.snapshot.index.name, self.snapshot.index.name)
        if cfg.preload:
            self._preload_backbone(self.snapshot)
        self.capabilities(self.snapshot)   # loads what answering needs (e.g. a text encoder) now, once

    # ------------------------------------------------------------------ snapshots
    def _open(self, generation: int, previous: Snapshot | None) -> Snapshot | None:
        """A snapshot of the index as it is now; None when replacing ``previous`` and not in sync."""
        from ..index import open_index
        from ..query import QueryEngine

        ix = open_index(self.cfg.index, self.cfg.index_root, repair=False)
        try:
            sig = index_signature(ix)
            if previous is not None and not ix.in_sync():
                # a writer is between its catalog commit and its FAISS write: keep the old state
                # (checked before the model is loaded: this happens on every tick of a long write)
                ix.close()
                return None
            engine = QueryEngine(ix, backbone_weights=self.cfg.weights)
            if previous is not None and _same_backbone(previous.index.manifest, ix.manifest):
                # the backbone is the heavy part (weights, ~1 s); a new index state does not change it
                engine._backbone = previous.engine._backbone
            roots = self._roots(ix)
            return Snapshot(ix, engine, sig, generation, ix.in_sync(), roots)
        except BaseException:
            ix.close()
            raise

    def _roots(self, ix: Any) -> tuple[Path, ...]:
        """Folders whose files may be served: --images-root, else the common folder of the catalog's images."""
        if ix.manifest.source != "images":
            return ()   # benchmark features: catalog paths name dataset rows, not files
        if self.cfg.images_roots:
            return tuple(Path(os.path.realpath(Path(r).expanduser())) for r in self.cfg.images_roots)
        paths = [r.path for r in ix.all_records(status="ok") if os.path.isabs(r.path)]
        if not paths:
            return ()
        common = os.path.commonpath([os.path.dirname(p) for p in paths])
        return (Path(os.path.realpath(common)),)

    def _preload_backbone(self, snap: Snapshot) -> None:
        try:
            snap.engine._load_backbone()
        except ZslrError as e:   # e.g. an index of benchmark features: no backbone, no image queries
            log.info("image queries unavailable: %s", e)

    def refresh(self) -> bool:
        """Swap in the index's current state if it changed and is consistent; True when swapped."""
        with self._swap:
            cur = self.snapshot
            try:
                sig = index_signature(cur.index)
            except Exception as e:  # catalog busy or being replaced: try again next tick
                log.debug("index signature unavailable: %s", e)
                return False
            if sig == cur.signature or sig == self._rejected:
                return False
            try:
                new = self._open(cur.generation + 1, cur)
            except Exception as e:
                log.info("index changed but cannot be opened yet (%s); keeping generation %d", e, cur.generation)
                return False
            if new is None:
                self._rejected = sig   # retried when the index changes again (the writer's FAISS write)
                return False
            self.capabilities(new)
            self.snapshot = new
            log.info("index %s: now generation %d (%d entries)", new.index.name, new.generation, new.index.ntotal)
            # `cur` is not closed: requests that started on it may still be reading its catalog;
            # its engine and connections go when the last of them drops the reference.
            return True

    def start_watcher(self) -> None:
        if self.cfg.reload_interval <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.cfg.reload_interval):
                try:
                    self.refresh()
                except Exception:  # never let the watcher die silently mid-serve
                    log.exception("index refresh failed")

        self._watcher = threading.Thread(target=loop, name="zslr-serve-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self.snapshot.index.close()

    # ------------------------------------------------------------------ description
    def capabilities(self, snap: Snapshot | None = None) -> dict[str, bool]:
        """Which query kinds this index can answer (the page shows only those inputs).

        Asked of the engine itself (``QueryEngine.supports``: the library's rule, loading nothing
        heavy), so a general text model for raw-feature indexes shows up here with no second copy
        of its rules. Once per snapshot.
        """
        snap = snap or self.snapshot
        if snap.capabilities is None:
            from ..query import KINDS

            e = snap.engine
            if self.cfg.preload:   # the backbone was loaded at start, or there is none to load
                image = e._backbone is not None
            else:
                image = snap.index.manifest.source == "images"
            attrs = bool(e.supports("attributes"))
            snap.capabilities = {
                "attributes": attrs, "vector": attrs and e.model is not None and bool(e.vocabulary),
                "class": bool(e.supports("class")), "text": "text" in KINDS and bool(e.supports("text")),
                "image": image}
        return snap.capabilities

    def info(self) -> dict[str, Any]:
        snap = self.snapshot
        m = snap.index.manifest
        card = m.model_card
        return {
            "index": m.name, "generation": snap.generation, "in_sync": snap.in_sync,
            "source": m.source, "backbone": m.backbone, "metric": m.metric, "dim": m.dim,
            "index_type": m.index_type, "entries": snap.index.ntotal,
            "images": {"ok": m.n_ok, "failed": m.n_failed, "removed": m.n_removed},
            "model": getattr(card, "model", None), "dataset": getattr(card, "dataset", None),
            "capabilities": self.capabilities(snap),
            "limits": {"max_top_k": MAX_TOP_K, "max_offset": MAX_OFFSET, "max_queries": MAX_QUERIES,
                       "max_upload_bytes": self.cfg.max_upload_bytes},
            "updated": m.updated.isoformat() if m.updated else None,
        }

    def vocabulary(self) -> dict[str, list[str]]:
        e = self.snapshot.engine
        card = e.card
        return {"attributes": list(e.vocabulary.names) if e.vocabulary else [],
                "classes": list(e.classes.names) if e.classes else [],
                "unseen_classes": list(getattr(card, "unseen_classes", None) or [])}

    # ------------------------------------------------------------------ search
    def make_specs(self, pairs: list[tuple[str, str]], image: tuple[str, bytes] | None = None) -> list:
        """(kind, value) pairs from a request (+ an uploaded image) -> QuerySpecs, every bound checked."""
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
            if len(data) > self.cfg.max_upload_bytes:
                raise InvalidInputError(f"uploaded image of {len(data)} bytes; at most {self.cfg.max_upload_bytes}")
            specs.append(QuerySpec("image", name or "uploaded image", "upload", data=data))
        return specs

    def search(self, specs: list, top_k: int = DEFAULT_TOP_K, offset: int = 0,
               general_weight: float | None = None) -> dict[str, Any]:
        """Rank the index for each spec and return results ``offset .. offset + top_k`` of each."""
        if not 1 <= int(top_k) <= MAX_TOP_K:
            raise InvalidInputError(f"top_k must be between 1 and {MAX_TOP_K}, got {top_k}")
        if not 0 <= int(offset) <= MAX_OFFSET:
            raise InvalidInputError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
        snap = self.snapshot
        # one more than the page, to know whether there is a next page; never more than the index holds
        k = max(1, min(offset + top_k + 1, snap.index.ntotal))
        t0 = time.perf_counter()
        if any(s.kind == "image" for s in specs):
            with self._image_slots:
                results = snap.engine.run(specs, k, general_weight=general_weight)
        else:
            results = snap.engine.run(specs, k, general_weight=general_weight)
        took = time.perf_counter() - t0
        queries = []
        for r in results:
            page = r.hits[offset:offset + top_k]
            queries.append({
                "query": {"kind": r.query.kind, "text": r.query.text}, "resolved": r.resolved,
                "results": [self._hit(snap, h) for h in page],
                "more": len(r.hits) > offset + top_k})
        return {"index": snap.index.name, "metric": snap.engine.metric, "generation": snap.generation,
                "entries": snap.index.ntotal, "top_k": top_k, "offset": offset,
                "took_ms": round(took * 1000, 3), "queries": queries}

    def _hit(self, snap: Snapshot, h) -> dict[str, Any]:
        return {"rank": h.rank, "id": h.id, "score": h.score, "label": h.label,
                "name": _display_path(h.path, snap.roots),
                "image": f"/api/images/{h.id}", "thumb": f"/api/images/{h.id}/thumb"}

    # ------------------------------------------------------------------ images
    def _row(self, snap: Snapshot, image_id: int):
        """The catalog row of a servable image, else NotFoundError saying why."""
        from ..index.catalog import ImageRow

        with snap.index.catalog.session() as s:
            row = s.get(ImageRow, int(image_id))
            if row is not None:
                s.expunge(row)
        if row is None:
            raise NotFoundError(f"image {image_id} is not in the catalog of index {snap.index.name!r}")
        if row.status != "ok":
            raise NotFoundError(f"image {image_id} is {row.status} in the catalog of index {snap.index.name!r}")
        if not snap.roots:
            raise NotFoundError(f"index {snap.index.name!r} holds precomputed features, not image files")
        return row

    def _open_file(self, snap: Snapshot, row) -> tuple[int, os.stat_result]:
        """Open a catalog image read-only: inside the collection, a regular file, unchanged since indexing.

        The path is resolved (symlinks included) and must lie under one of the collection roots;
        the final open refuses a symlink (O_NOFOLLOW), so a link swapped in after the check fails.
        """
        real = Path(os.path.realpath(row.path))
        if not any(real == r or r in real.parents for r in snap.roots):
            raise NotFoundError(f"image {row.id}: its file lies outside the collection")
        try:
            fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
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

    def image_file(self, image_id: int) -> tuple[Iterator[bytes], int, str]:
        """(chunks, size, media type) of a catalog image's original file."""
        snap = self.snapshot
        row = self._row(snap, image_id)
        fd, st = self._open_file(snap, row)
        media = mimetypes.guess_type(row.path)[0] or ""
        if not media.startswith("image/"):
            media = "application/octet-stream"

        def chunks() -> Iterator[bytes]:
            with os.fdopen(fd, "rb") as f:
                while block := f.read(READ_CHUNK):
                    yield block
        return chunks(), int(st.st_size), media

    def thumbnail(self, image_id: int, px: int = THUMB_PX) -> tuple[bytes, str]:
        """(JPEG bytes, etag) of a catalog image, made once with Pillow and cached by content hash."""
        snap = self.snapshot
        row = self._row(snap, image_id)
        fd, _ = self._open_file(snap, row)   # checked every time, cached or not: gone files are 404
        with os.fdopen(fd, "rb") as f:
            key = row.sha256 or hashlib.sha256(f"{row.path}:{row.size}:{row.mtime_ns}".encode()).hexdigest()
            cached = self.cache_dir / key[:2] / f"{key}-{px}.jpg"
            try:
                return cached.read_bytes(), key
            except OSError:
                pass
            data = f.read()
        if row.sha256 and hashlib.sha256(data).hexdigest() != row.sha256:
            raise NotFoundError(f"image {row.id}: the file's content changed since it was indexed; re-run `zslr index`")
        jpeg = make_thumbnail(data, px)
        self._cache_put(cached, jpeg)
        return jpeg, key

    def _cache_put(self, path: Path, data: bytes) -> None:
        if not self._cache_ok:
            return
        from ..fileio import atomic_write

        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as e:  # read-only home, full disk: thumbnails still work, uncached
            self._cache_ok = False
            log.warning("thumbnail cache %s not writable (%s); thumbnails will not be cached", self.cache_dir, e)


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


def _display_path(path: str, roots: tuple[Path, ...]) -> str:
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


def _same_backbone(a: Any, b: Any) -> bool:
    return (a.backbone, a.backbone_weights) == (b.backbone, b.backbone_weights)
