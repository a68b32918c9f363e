"""Deleting an index folder."""
from __future__ import annotations

import os
import shutil

from .layout import index_folder


def remove_index(name_or_path: str, root: str | os.PathLike | None = None) -> None:
    """Delete an index folder (catalog too when it is the default SQLite file)."""
    folder = index_folder(name_or_path, root)
    if folder.is_dir():
        shutil.rmtree(folder)
