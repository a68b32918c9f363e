"""One ingestion's write session: the index writer as every use case opens it.

:func:`open_writer` hands the writer what the index layer may not import itself -- the general
model of a raw-feature index (``text.general.cached_general_model``, looked up when the writer
syncs, never built here) -- and turns a full disk or an unwritable folder into a StorageError
naming the command that resumes. :func:`choose_index_type` is ``--index-type auto`` once the
entries are in.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import InvalidInputError
from ..index.autotune import AutoIndexOptions
from ..index.storage_errors import storage_errors
from ..index.writer import IndexWriter


def cached_general_model(backbone: str | None, weights_id: str | None):
    """The built general model of ``backbone`` (None if not built): what a raw-feature index's terms use.

    Imported when the writer syncs a raw-feature index, as before, so ingesting with a model never
    loads the text stack."""
    from ..text.general import cached_general_model as cached

    return cached(backbone, weights_id)


@contextmanager
def open_writer(folder: os.PathLike, name: str, db: str | None, *, create: bool, resume: str) -> Iterator[IndexWriter]:
    """``IndexWriter`` of ``folder`` (handed :func:`cached_general_model`), write failures reported
    as StorageError telling to re-run ``resume``."""
    with storage_errors(folder, resume), IndexWriter(folder, name, db, create=create,
                                                      general_model=cached_general_model) as w:
        yield w


def choose_index_type(w: IndexWriter, auto: AutoIndexOptions, name: str, log: Callable[[str], None] | None = None):
    """``w.choose_index_type``; when no type fits, the committed entries are still indexed under the
    index's current type before the error (naming the budgets) reaches the user."""
    try:
        return w.choose_index_type(auto, log=log)
    except InvalidInputError as e:
        w.sync_index()
        m = w.manifest()
        raise InvalidInputError(f"{e}. The {m.n_entries:,} entries stay indexed as {m.index_type}; run "
                                f"`zslr index --name {name} --index-type auto` with larger budgets to choose again") from None
