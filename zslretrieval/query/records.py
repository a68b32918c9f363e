"""Catalog records of ranked ids: the :class:`RecordTable` that turns a search's ids into hits."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .protocols import SearchableIndex
from .results import Hit, QueryResult


class RecordTable:
    """Path / label / status of catalog images, by image id.

    The first lookup asks the catalog for just the ids it needs (what a one-shot ``zslr query``
    does); from the second on, every "ok" image's record is read once and a lookup is a dict
    read per hit, not SQL (1 query on 50k images: 0.4-8 ms of SQL per call -> ~1 us). A dict,
    not arrays beside sorted ids: ten hits' dict reads cost less than one numpy gather.
    Ids the table lacks (e.g. entries whose image is not "ok") still go to the catalog.
    """

    MISSING = ("", None, "missing from catalog")  # an id the catalog does not list

    def __init__(self, index: SearchableIndex):
        self.index = index
        self.calls = 0
        # image id -> (path, label, status): a list indexed by id (None where no "ok" image has
        # that id) or a dict for sparse ids; published in one assignment, so a server thread sees
        # either no table or all of it
        self.by_id: list | dict | None = None
        self._loading = threading.Lock()
        self.deferred = False   # loaded by load_in_background, never inside a lookup (a server's start-up)

    def load(self) -> None:
        """Read every "ok" image's record once (a second caller waits for the first's table)."""
        with self._loading:
            if self.by_id is not None:
                return
            recs = self.index.record_tuples("ok")
            top = recs[-1][0] if recs else -1   # by id
            if recs and recs[0][0] >= 0 and top < 2 * len(recs) + 4096:
                # ids are allocated in sequence: a list indexed by id (None in gaps) is one slot read per
                # hit, where a dict reads its hash index, the entry and the key; after a gallery scan
                # evicted them, each read is a cache miss (a third of the record step for 10 hits)
                table: list | dict = [None] * (top + 1)
                for i, path, label, status in recs:
                    table[i] = (path, label, status)
            else:
                table = {i: (path, label, status) for i, path, label, status in recs}
            self.by_id = table

    def load_in_background(self) -> threading.Thread | None:
        """Start :meth:`load` in a daemon thread (a server's start-up: at a million images the table
        takes seconds, and lookups go to the catalog until it is published); None if loaded."""
        self.deferred = True
        if self.by_id is not None:
            return None
        t = threading.Thread(target=self.load, name="zslr-records", daemon=True)
        t.start()
        return t

    def table(self) -> list | dict | None:
        """Image id -> (path, label, status) of every "ok" image once loaded, else None: ``table[id]``
        raises LookupError, or gives None, for an id it lacks.

        Each call counts as one lookup: the table is read on the second, so a one-shot query
        asks the catalog (:meth:`fetch`) for just its hits instead.
        """
        self.calls += 1
        if self.by_id is None and self.calls >= 2 and not self.deferred:
            self.load()
        return self.by_id

    def fetch(self, ids: set[int] | list[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """The catalog's records of ``ids`` (one query), by id; :attr:`MISSING` for an id it lacks."""
        ask = sorted(i for i in ids if i >= 0)
        found = {int(r.id): (str(r.path), _label(r.label), r.status) for r in self.index.records(ask)} if ask else {}
        return {i: found.get(i, self.MISSING) for i in ids}

    def collect(self, prepared: list, D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
        """One :class:`QueryResult` per prepared query (``.spec``, ``.resolved``), its hits the ranked ids' records.

        Each ranking ends at its first -1 (padding when there are fewer entries than k, or an
        entry the catalog no longer lists): the scores from there on are never read.
        """
        ids = I.tolist()
        for q, row in enumerate(ids):
            if -1 in row:
                ids[q] = row[:row.index(-1)]
        table = self.table()
        if table is None:  # not loaded yet (the first call): the catalog, asked once for the batch's ids
            table = self.fetch({i for row in ids for i in row})
        results = []
        for p, irow, drow in zip(prepared, ids, D.tolist()):
            hits = []
            try:
                # a plain loop: per hit one record read and one Hit() call, no intermediate lists
                for rank, i, score in zip(range(1, len(irow) + 1), irow, drow):
                    path, label, status = table[i]
                    hits.append(Hit(rank, i, score, path, label, status))
            except (LookupError, TypeError):  # an id the table lacks (not an "ok" image; TypeError: a None gap)
                have = {i: rec for i in irow if (rec := _get(table, i)) is not None}
                extra = self.fetch({i for i in irow if i not in have})
                hits = [Hit(rank, i, score, *(have[i] if i in have else extra[i]))
                        for rank, i, score in zip(range(1, len(irow) + 1), irow, drow)]
            results.append(QueryResult(p.spec, p.resolved, hits))
        return results


def _get(table: list | dict, i: int) -> Any:
    """``table[i]``, or None where the list or dict has no entry for ``i``."""
    if isinstance(table, dict):
        return table.get(i)
    return table[i] if 0 <= i < len(table) else None


def _label(v: Any) -> str | None:
    return None if v is None else str(v)
