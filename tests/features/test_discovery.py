"""Finding image files: labels, extensions, hidden names, --exclude globs, symlinked folders and loops."""
from __future__ import annotations

import os

import pytest

from zslretrieval.errors import DataNotFoundError, InvalidInputError
from zslretrieval.features.discovery import Selection, WalkStats, discover, read_file_list, scan, walk_images


def _touch(root, *rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def _rel(root, sources):
    return sorted(s.path[len(str(root)) + 1:] for s in sources)


def test_walk_labels_and_extensions(tmp_path):
    for rel in ["zebra/a.jpg", "zebra/sub/b.PNG", "top.webp", "notes.txt", ".hidden/c.jpg", "zebra/.d.jpg"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    found = {s.path[len(str(tmp_path)) + 1:]: s.label for s in walk_images(tmp_path)}
    assert found == {"top.webp": None, "zebra/a.jpg": "zebra", "zebra/sub/b.PNG": "sub"}
    with pytest.raises(DataNotFoundError, match="nope"):
        walk_images(tmp_path / "nope")


def test_file_list_and_discover(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "cat" / "x.jpg").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# comment\nimgs/cat/x.jpg\n\n{tmp_path}/elsewhere/y.bin\tbird\n")
    srcs = read_file_list(lst)
    assert [(s.path, s.label) for s in srcs] == [(str(tmp_path / "imgs/cat/x.jpg"), "cat"),
                                                (str(tmp_path / "elsewhere/y.bin"), "bird")]
    both = discover([tmp_path / "imgs"], lst)
    assert len(both) == 2  # x.jpg found by the walk and listed: once
    with pytest.raises(InvalidInputError):
        discover([], None)


def test_hidden_names_taken_only_when_asked(tmp_path):
    _touch(tmp_path, "a.jpg", ".b.jpg", ".cache/c.jpg", "x/.thumbs/d.jpg", "x/e.jpg")
    st = WalkStats(str(tmp_path))
    assert _rel(tmp_path, walk_images(tmp_path, stats=st)) == ["a.jpg", "x/e.jpg"]
    assert (st.images, st.hidden) == (2, 3)
    got = walk_images(tmp_path, Selection(include_hidden=True))
    assert _rel(tmp_path, got) == [".b.jpg", ".cache/c.jpg", "a.jpg", "x/.thumbs/d.jpg", "x/e.jpg"]


def test_exclude_globs_names_paths_and_absolute(tmp_path):
    _touch(tmp_path, "a.jpg", "b.png", "thumbs/c.jpg", "2019/raw/d.jpg", "2019/ok/e.jpg", "2020/raw/f.jpg", "deep/x/raw/g.jpg")
    def walk(*globs):
        st = WalkStats(str(tmp_path))
        return _rel(tmp_path, walk_images(tmp_path, Selection(globs), st)), st.excluded
    assert walk("*.png") == (["2019/ok/e.jpg", "2019/raw/d.jpg", "2020/raw/f.jpg", "a.jpg", "deep/x/raw/g.jpg",
                              "thumbs/c.jpg"], 1)
    assert walk("thumbs", "raw/")[0] == ["2019/ok/e.jpg", "a.jpg", "b.png"]           # names, at any depth
    assert walk("2019/*")[0] == ["2020/raw/f.jpg", "a.jpg", "b.png", "deep/x/raw/g.jpg", "thumbs/c.jpg"]
    assert walk("**/2019/raw")[0] == ["2019/ok/e.jpg", "2020/raw/f.jpg", "a.jpg", "b.png", "deep/x/raw/g.jpg",
                                      "thumbs/c.jpg"]
    assert walk(f"{tmp_path}/deep")[0] == ["2019/ok/e.jpg", "2019/raw/d.jpg", "2020/raw/f.jpg", "a.jpg", "b.png",
                                           "thumbs/c.jpg"]
    assert Selection(("*.png",)).reason("x/b.png") == "excluded" and Selection().reason(".x/b.png") == "hidden"
    with pytest.raises(InvalidInputError, match="empty glob"):
        Selection(("  ",))


def test_symlinked_folders_followed_once_and_loops_named(tmp_path):
    """A folder of symlinked species folders (issue 31) is walked; a loop or a second link is named, never silent."""
    store, lib = tmp_path / "store", tmp_path / "lib"
    for i in range(5):
        _touch(store, f"species{i}/p{i}.jpg")
    lib.mkdir()
    for i in range(5):
        os.symlink(store / f"species{i}", lib / f"species{i}")
    os.symlink(store / "species0", lib / "zz-again")      # a second link to a folder already walked
    os.symlink(lib, store / "species1" / "back")           # a loop: lib/species1/back -> lib
    st = WalkStats(str(lib))
    found = walk_images(lib, stats=st)
    assert _rel(lib, found) == [f"species{i}/p{i}.jpg" for i in range(5)]
    assert [s.label for s in found] == [f"species{i}" for i in range(5)]
    assert st.links_followed == 5 and st.images == 5
    skipped = dict(st.skipped)
    assert set(skipped) == {str(lib / "zz-again"), str(lib / "species1" / "back")}
    assert "already walked as" in skipped[str(lib / "species1" / "back")] and str(lib) in skipped[str(lib / "species1" / "back")]


def test_empty_walk_says_why(tmp_path):
    _touch(tmp_path, "notes.txt", ".hidden/a.jpg", "raw/b.jpg")
    d = scan([tmp_path], selection=Selection(("raw",)))
    (ws,) = d.walks
    assert d.sources == [] and ws.images == 0
    why = ws.why_empty()
    assert str(tmp_path) in why and "1 file(s) without an image extension" in why
    assert "1 hidden" in why and "--include-hidden" in why and "1 name(s) excluded" in why
