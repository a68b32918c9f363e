"""Every error the engine raises on purpose derives from :class:`ZslrError`.

The CLI maps ``exit_code`` to the process exit status, so a script can tell
"you gave me something wrong" (2) from "the engine found a problem" (1, 3).
Messages name the bad value and what would have been accepted.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ZslrError(Exception):
    """Base of all deliberate zslretrieval errors."""

    exit_code: int = 1


class InvalidInputError(ZslrError, ValueError):
    """A value given by the user is malformed or out of range."""

    exit_code = 2


class UnknownNameError(InvalidInputError, KeyError):
    """A name (dataset, model, attribute, class, backbone...) is not known."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], *, suggest_only: bool = False):
        self.kind, self.name = kind, name
        self.valid = sorted(valid)
        close = difflib.get_close_matches(name, self.valid, n=5, cutoff=0.6)
        self.suggestions = close
        if suggest_only or len(self.valid) > 40:
            hint = f"did you mean: {', '.join(close)}?" if close else f"{len(self.valid)} valid names; none close"
        else:
            hint = f"valid: {', '.join(self.valid)}"
            if close:
                hint = f"did you mean: {', '.join(close)}? ({hint})"
        super().__init__(f"unknown {kind} {name!r}; {hint}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class DataNotFoundError(ZslrError, FileNotFoundError):
    """A file the engine needs (features, splits, weights, index) is absent."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)

    def __str__(self) -> str:
        return self.args[0]


class WeightsNotFoundError(DataNotFoundError):
    """Pretrained backbone weights are not available offline."""


class CheckpointError(ZslrError):
    """A checkpoint is unreadable, of an unknown format, or does not fit the data."""

    exit_code = 2


class IncompatibleError(ZslrError):
    """Two artefacts do not fit together (e.g. model feature dim vs index backbone)."""

    exit_code = 2


class TruncatedRankingError(ZslrError):
    """A full ranking was requested but the searcher returned fewer results."""


class ConsistencyError(ZslrError):
    """Catalog, feature store and index disagree (``zslr check``)."""

    exit_code = 3


class StorageError(ZslrError):
    """Writing an index failed in the file system or database: disk full, quota, file size limit,
    read-only or permission denied. Committed work is intact; the message says how to resume."""

    exit_code = 1
