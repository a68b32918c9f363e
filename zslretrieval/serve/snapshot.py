"""Snapshots of the served index: old state or new state, never a mix.

A :class:`Snapshot` is one opened state of the index (``OpenIndex`` opened with ``repair=False``,
so a reader finding a stale FAISS file never writes to re-sync it) with the ``QueryEngine`` that
answers on it. A request takes the current snapshot once and uses it from start to end.

:class:`SnapshotWatcher` polls the catalog manifest and the FAISS files' stat
(:func:`index_signature`) every ``interval`` seconds. A changed index is opened as a new snapshot
and swapped in only when its FAISS file holds exactly its catalog entries (``OpenIndex.in_sync``):
while ``zslr index`` is between its catalog commits and its final FAISS write, requests keep the
previous snapshot.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import collection_roots

log = logging.getLogger("zslretrieval.serve")


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


def open_snapshot(index: str, index_root: str | None, *, weights: str | None, images_roots: tuple[str, ...],
                  generation: int, previous: Snapshot | None) -> Snapshot | None:
    """A snapshot of the index as it is now; None when replacing ``previous`` and not in sync.

    ``index``, ``index_root``: as for ``open_index``; ``weights``: backbone weights of image queries;
    ``images_roots``: folders image files may be served from (empty: the collection's own folder).
    """
    from ..index import open_index
    from ..query import QueryEngine

    ix = open_index(index, index_root, repair=False)
    try:
        sig = index_signature(ix)
        if previous is not None and not ix.in_sync():
            # a writer is between its catalog commit and its FAISS write: keep the old state
            # (checked before the model is loaded: this happens on every tick of a long write)
            ix.close()
            return None
        engine = QueryEngine(ix, backbone_weights=weights)
        if previous is not None and _same_backbone(previous.index.manifest, ix.manifest):
            # the backbone is the heavy part (weights, ~1 s); a new index state does not change it
            engine._backbone = previous.engine._backbone
        roots = collection_roots(ix, images_roots)
        return Snapshot(ix, engine, sig, generation, ix.in_sync(), roots)
    except BaseException:
        ix.close()
        raise


def _same_backbone(a: Any, b: Any) -> bool:
    return (a.backbone, a.backbone_weights) == (b.backbone, b.backbone_weights)


class SnapshotWatcher:
    """The current snapshot of one index, swapped for a newer consistent one (thread-safe).

    Args:
        current: the first snapshot.
        open_next: ``(generation, previous) -> Snapshot | None``, e.g. :func:`open_snapshot` bound to
            the index: None while the index is not in sync.
        interval: seconds between checks of the polling thread (:meth:`start`); <= 0: never polls.
        prepare: called on a new snapshot before it is swapped in (loads what answering needs).
    """

    def __init__(self, current: Snapshot, open_next: Callable[[int, Snapshot], Snapshot | None], *,
                 interval: float, prepare: Callable[[Snapshot], object]):
        self.current = current
        self.interval = interval
        self._open_next = open_next
        self._prepare = prepare
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rejected: tuple | None = None   # signature of a state found not in sync

    def refresh(self) -> bool:
        """Swap in the index's current state if it changed and is consistent; True when swapped."""
        with self._swap:
            cur = self.current
            try:
                sig = index_signature(cur.index)
            except Exception as e:  # catalog busy or being replaced: try again next tick
                log.debug("index signature unavailable: %s", e)
                return False
            if sig == cur.signature or sig == self._rejected:
                return False
            try:
                new = self._open_next(cur.generation + 1, cur)
            except Exception as e:
                log.info("index changed but cannot be opened yet (%s); keeping generation %d", e, cur.generation)
                return False
            if new is None:
                self._rejected = sig   # retried when the index changes again (the writer's FAISS write)
                return False
            self._prepare(new)
            self.current = new
            log.info("index %s: now generation %d (%d entries)", new.index.name, new.generation, new.index.ntotal)
            # `cur` is not closed: requests that started on it may still be reading its catalog;
            # its engine and connections go when the last of them drops the reference.
            return True

    def start(self) -> None:
        """Poll every ``interval`` seconds in a daemon thread (once; not when ``interval`` <= 0)."""
        if self.interval <= 0 or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.refresh()
                except Exception:  # never let the watcher die silently mid-serve
                    log.exception("index refresh failed")

        self._thread = threading.Thread(target=loop, name="zslr-serve-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and close the current snapshot's index."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.current.index.close()


# What the throw-away search at start asks, per kind the index answers (serve.service warm_up):
# the first real search then finds the encoder, general model, terms and caches loaded.
WARM_TEXT = "a photo"


def warm_up_specs(snap: Snapshot, capabilities: dict[str, bool] | None = None) -> list:
    """One cheap query per kind ``snap`` answers (text, class, attributes; an image when its backbone is
    loaded), to be run and thrown away before the server says it is ready. ``capabilities``: what the
    snapshot answers, when not yet its ``capabilities``."""
    from ..query import QuerySpec

    caps = capabilities if capabilities is not None else snap.capabilities or {}
    e = snap.engine
    specs = []
    if caps.get("text"):
        specs.append(QuerySpec("text", WARM_TEXT, "warm-up"))
    if e.model is not None:   # on a raw index class and attribute queries take the text route warmed above
        if caps.get("class") and e.classes is not None and len(e.classes):
            specs.append(QuerySpec("class", e.classes.names[0], "warm-up"))
        if caps.get("attributes") and e.vocabulary is not None and len(e.vocabulary):
            specs.append(QuerySpec("attributes", e.vocabulary.names[0], "warm-up"))
    elif not specs and caps.get("class"):
        specs.append(QuerySpec("class", "dog", "warm-up"))
    if caps.get("image") and e._backbone is not None:
        specs.append(QuerySpec("image", "warm-up.png", "warm-up", data=_grey_png()))
    return specs


def _grey_png() -> bytes:
    """A small encoded image: its decode, preprocessing and forward allocate what a first upload would."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(buf, "PNG")
    return buf.getvalue()
