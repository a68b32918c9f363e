"""One small real index for the server tests: ``zslr demo``'s own pipeline on 48 tiny images.

Built once per session (about 20 s on 2 cores): generated images of 16 attribute classes,
EfficientNet-Lite0 features, a SAE model trained on the seen classes, FAISS + SQL catalog.
Tests that change an index work on :func:`index_copy`, never on this one.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text


@pytest.fixture(scope="session")
def demo_index(tmp_path_factory) -> Path:
    from zslretrieval.demo import DemoConfig, run_demo

    out = tmp_path_factory.mktemp("serve-demo")
    report = run_demo(DemoConfig(out=out, images_per_class=3, image_size=64, model="sae", device="cpu"))
    return report.index_folder


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with (size, mtime_ns): equal before and after means nothing was written."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def index_copy(demo_index: Path, dest: Path) -> tuple[Path, Path]:
    """Copy the index and its images under ``dest`` and point the copy's catalog at the copied images.

    Returns (index folder, images folder)."""
    images = demo_index.parents[1] / "images"
    new_images = dest / "images"
    shutil.copytree(images, new_images, copy_function=shutil.copy2)   # copy2 keeps mtimes: rows stay valid
    new_index = dest / "indexes" / demo_index.name
    shutil.copytree(demo_index, new_index)
    (new_index / ".lock").unlink(missing_ok=True)
    with create_engine(f"sqlite:///{new_index / 'catalog.sqlite'}").begin() as c:
        c.execute(text("UPDATE images SET path = replace(path, :old, :new)"),
                  {"old": str(images) + os.sep, "new": str(new_images) + os.sep})
    return new_index, new_images
