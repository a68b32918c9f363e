"""What ``zslr serve`` does, without HTTP: one long-lived, read-only view of an index.

:class:`SearchService` opens the index once (its model, the backbone for example-image queries)
and answers searches through the same :class:`~zslretrieval.query.QueryEngine` as ``zslr query``;
it adds only what a server needs on top, each in its own module: bounds on every request-sized
input (``bounds.py``), pagination (here), catalog-id-only access to image files (``files.py``), a
thumbnail cache outside the index (``thumbnails.py``), and picking up new index states without
ever mixing old and new (``snapshot.py``).

Never writing the index: it is opened with ``repair=False`` and nothing is written under its folder.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ZslrError
from .bounds import (DEFAULT_MAX_UPLOAD, DEFAULT_TOP_K, IMAGE_QUERY_SLOTS, MAX_OFFSET, MAX_QUERIES, MAX_TOP_K,
                     check_page, check_upload_limit, make_specs)
from .files import display_path, image_file, outside_ids, without_ids
from .snapshot import Snapshot, SnapshotWatcher, open_snapshot, warm_up_specs
from .thumbnails import THUMB_PX, ThumbnailCache, default_cache_dir

log = logging.getLogger("zslretrieval.serve")


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
    warm_up: bool = True                      # one throw-away search per query kind before serving


class SearchService:
    """Read-only searches, image and thumbnail access for one index (thread-safe)."""

    def __init__(self, cfg: ServeConfig):
        check_upload_limit(cfg.max_upload_bytes)
        self.cfg = cfg
        self.thumbnails = ThumbnailCache(Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir())
        self._image_slots = threading.BoundedSemaphore(IMAGE_QUERY_SLOTS)
        first = self._open(generation=1, previous=None)
        self._snapshots = SnapshotWatcher(first, self._open, interval=cfg.reload_interval, prepare=self._prepare)
        if not first.in_sync:
            log.warning("index %s: the FAISS file does not hold exactly the catalog's entries (a writer is "
                        "running, or one crashed; `zslr index --name %s` repairs it); serving it as it is",
                        first.index.name, first.index.name)
        # the first search after the ready line finds everything loaded. The backbone (torch and its
        # weights where no cached graph exists yet: seconds) loads in a thread beside the warm-up of
        # the other kinds (FAISS, ONNX Runtime and BLAS run without the GIL)
        loader = None
        if cfg.preload:
            loader = threading.Thread(target=self._preload_backbone, args=(first,), name="zslr-backbone", daemon=True)
            loader.start()
        try:
            if cfg.warm_up:
                self.warm_up(first, kinds=("text", "class", "attributes"), capabilities=self._capabilities_of(first))
        finally:
            if loader is not None:
                loader.join()
        self.capabilities(first)
        if cfg.warm_up:
            self.warm_up(first, kinds=("image",))

    # ------------------------------------------------------------------ snapshots
    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot: a request reads this once and keeps it to the end."""
        return self._snapshots.current

    @property
    def cache_dir(self) -> Path:
        return self.thumbnails.folder

    def _open(self, generation: int, previous: Snapshot | None) -> Snapshot | None:
        cfg = self.cfg
        return open_snapshot(cfg.index, cfg.index_root, weights=cfg.weights, images_roots=cfg.images_roots,
                             generation=generation, previous=previous)

    def _preload_backbone(self, snap: Snapshot) -> None:
        try:
            snap.engine._load_backbone()
        except ZslrError as e:   # e.g. an index of benchmark features: no backbone, no image queries
            log.info("image queries unavailable: %s", e)

    def _prepare(self, snap: Snapshot) -> None:
        """A new snapshot made ready before it is swapped in: capabilities, then the warm-up search
        (through :attr:`run_work` when the HTTP layer set one)."""
        self.capabilities(snap)
        if self.cfg.warm_up:
            if self.run_work is None:
                self.warm_up(snap)
            else:
                self.run_work(lambda: self.warm_up(snap))

    # How the HTTP layer runs search work (its few work threads, under its work budget): set by
    # ``serve.app``. The warm-up of a swapped-in snapshot then runs there too, not on the watcher
    # thread, whose first encoder and BLAS work would allocate buffers of its own beside the work
    # threads' (+140 MB for a second while 16 clients searched and the index grew).
    run_work = None

    def warm_up(self, snap: Snapshot, kinds: tuple[str, ...] | None = None,
                capabilities: dict[str, bool] | None = None) -> float:
        """Run one throw-away search of each kind ``snap`` answers (``snapshot.warm_up_specs``; only
        ``kinds`` when given), so that the text encoder, the general model and its per-image terms and
        the relevance statistics are loaded before the server says it is ready (the record table
        loads in the background). Seconds taken; a failure is logged, never raised (the same query
        from a client reports it)."""
        t0 = time.perf_counter()
        snap.engine.records_table.deferred = True   # the table loads behind the ready line, not in a warm-up search
        try:
            specs = [s for s in warm_up_specs(snap, capabilities) if kinds is None or s.kind in kinds]
            if specs:
                self.search(specs, snapshot=snap)
            # the record table (every ok image's path and label) loads behind the ready line: seconds at a
            # million images, and until it is published a search asks the catalog for its hits' rows
            snap.engine.records_table.load_in_background()
        except Exception as e:
            log.info("warm-up search failed (%s: %s); the first search loads what it needs", type(e).__name__, e)
        took = time.perf_counter() - t0
        log.debug("index %s: warm-up search in %.2f s", snap.index.name, took)
        return took

    def refresh(self) -> bool:
        """Swap in the index's current state if it changed and is consistent; True when swapped."""
        return self._snapshots.refresh()

    def start_watcher(self) -> None:
        """Check for a new index state every ``reload_interval`` seconds, in a daemon thread."""
        self._snapshots.start()

    def close(self) -> None:
        self._snapshots.close()

    # ------------------------------------------------------------------ description
    def capabilities(self, snap: Snapshot | None = None) -> dict[str, bool]:
        """Which query kinds this index can answer (the page shows only those inputs).

        Asked of the engine itself (``QueryEngine.supports``: the library's rule, loading nothing
        heavy), so a general text model for raw-feature indexes shows up here with no second copy
        of its rules. Once per snapshot.
        """
        snap = snap or self.snapshot
        if snap.capabilities is None:
            snap.capabilities = self._capabilities_of(snap)
        return snap.capabilities

    def _capabilities_of(self, snap: Snapshot) -> dict[str, bool]:
        from ..query import KINDS

        e = snap.engine
        if self.cfg.preload:   # the backbone was loaded at start, or there is none to load
            image = e._backbone is not None
        else:
            image = snap.index.manifest.source == "images"
        attrs = bool(e.supports("attributes"))
        return {"attributes": attrs, "vector": attrs and e.model is not None and bool(e.vocabulary),
                "class": bool(e.supports("class")), "text": "text" in KINDS and bool(e.supports("text")),
                "image": image}

    def info(self) -> dict[str, Any]:
        snap = self.snapshot
        m = snap.index.manifest
        card = m.model_card
        return {
            "index": m.name, "generation": snap.generation, "in_sync": snap.in_sync,
            "source": m.source, "backbone": m.backbone, "metric": m.metric, "dim": m.dim,
            "index_type": m.index_type, "entries": snap.index.ntotal,
            "images": {"ok": m.n_ok, "failed": m.n_failed, "removed": m.n_removed},
            "model": card.model if card is not None else None, "dataset": card.dataset if card is not None else None,
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
                "unseen_classes": list(card.unseen_classes) if card is not None else []}

    # ------------------------------------------------------------------ search
    def make_specs(self, pairs: list[tuple[str, str]], image: tuple[str, bytes] | None = None) -> list:
        """(kind, value) pairs from a request (+ an uploaded image) -> QuerySpecs, every bound checked."""
        return make_specs(pairs, image, self.cfg.max_upload_bytes)

    def search(self, specs: list, top_k: int = DEFAULT_TOP_K, offset: int = 0,
               general_weight: float | None = None, options=None, *, snapshot: Snapshot | None = None
               ) -> dict[str, Any]:
        """Rank the index for each spec and return results ``offset .. offset + top_k`` of each.

        ``options``: a ``query.refined.SearchOptions`` (feedback, filters, --min-score); without one,
        each hit still carries its calibrated ``relevance`` (except when fusing the general model).
        """
        check_page(top_k, offset)
        if options is None:
            from ..query.refined import SearchOptions
            options = SearchOptions(relevance=general_weight is None)
        snap = snapshot or self.snapshot   # ``snapshot``: a new one being warmed up before its swap
        hidden = outside_ids(snap.index, snap.roots)   # files linked out of the collection: never served, never listed
        # one more than the page, to know whether there is a next page; never more than the index holds
        k = max(1, min(offset + top_k + 1 + len(hidden), snap.index.ntotal))
        t0 = time.perf_counter()
        if any(s.kind == "image" for s in specs):
            with self._image_slots:
                results = snap.engine.run(specs, k, general_weight=general_weight, options=options)
        else:
            results = snap.engine.run(specs, k, general_weight=general_weight, options=options)
        took = time.perf_counter() - t0
        queries = []
        for r in results:
            hits = without_ids(r.hits, hidden)
            page = hits[offset:offset + top_k]
            queries.append({
                "query": {"kind": r.query.kind, "text": r.query.text}, "resolved": r.resolved,
                "results": [self._hit(snap, h) for h in page],
                "more": len(hits) > offset + top_k})
        return {"index": snap.index.name, "metric": snap.engine.metric, "generation": snap.generation,
                "entries": snap.index.ntotal, "top_k": top_k, "offset": offset,
                "took_ms": round(took * 1000, 3), "queries": queries}

    def _hit(self, snap: Snapshot, h) -> dict[str, Any]:
        return {"rank": h.rank, "id": h.id, "score": h.score, "relevance": h.relevance, "label": h.label,
                "name": display_path(h.path, snap.roots),
                "image": f"/api/images/{h.id}", "thumb": f"/api/images/{h.id}/thumb"}

    # ------------------------------------------------------------------ images
    def image_file(self, image_id: int) -> tuple[Iterator[bytes], int, str]:
        """(chunks, size, media type) of a catalog image's original file."""
        snap = self.snapshot
        return image_file(snap.index, snap.roots, image_id)

    def thumbnail(self, image_id: int, px: int = THUMB_PX) -> tuple[bytes, str]:
        """(JPEG bytes, etag) of a catalog image, made once with Pillow and cached by content hash."""
        snap = self.snapshot
        return self.thumbnails.thumbnail(snap.index, snap.roots, image_id, px)
