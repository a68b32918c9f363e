"""One small real index for the server tests: ``zslr demo``'s own pipeline on 3 tiny images per class.

Built once per session: generated images of the demo's attribute classes (its default count;
tests read the counts from :func:`demo_counts`, never a number of their own),
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


@pytest.fixture(scope="session")
def demo_counts(demo_index) -> dict[str, int]:
    """What the demo index holds: ``images`` (catalog entries) and ``classes`` (generated classes)."""
    from zslretrieval.index import open_index

    with open_index(demo_index, repair=False) as ix:
        entries = int(ix.ntotal)
    csv = (demo_index.parents[1] / "class_attributes.csv").read_text().splitlines()
    return {"images": entries, "classes": len([line for line in csv[1:] if line.strip()])}


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
