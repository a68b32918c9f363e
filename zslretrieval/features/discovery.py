"""Finding the image files to index: folder walks (hidden names, ``--exclude`` globs, symlinked
folders followed with loop protection) and file lists.

A walk never passes over anything silently: :class:`WalkStats` counts what each folder held that
was not taken (other extensions, hidden, excluded) and names every folder not walked (a symlink
loop, an unreadable folder), so "0 images" always comes with a reason.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import DataNotFoundError, InvalidInputError
from .images import IMAGE_EXTENSIONS

@dataclass(frozen=True)
class ImageSource:
    """One file to index: absolute path, the folder it was found under, its known label (or None)."""

    path: str
    root: str | None
    label: str | None


@dataclass(frozen=True)
class Selection:
    """Which files a folder walk takes: ``exclude`` globs and whether dot-names (hidden) are entered.

    A glob without "/" matches the name of any file or folder on the way (``*.png``, ``@eaDir``,
    ``thumbs``); one with "/" matches the path relative to the walked folder (``2019/*/raw``; ``*``
    crosses "/", a leading ``**/`` is dropped), or the absolute path when it starts with "/". An
    excluded or hidden folder is not entered.
    """

    exclude: tuple[str, ...] = ()
    include_hidden: bool = False

    def __post_init__(self):
        norm = []
        for g in self.exclude:
            g = str(g).strip()
            while g.startswith("**/"):
                g = g[3:]
            g = g.rstrip("/") if len(g) > 1 else g
            if not g:
                raise InvalidInputError(f"--exclude {g!r}: an empty glob; expected e.g. '*.png', 'thumbs' or '2019/*/raw'")
            norm.append(g)
        object.__setattr__(self, "exclude", tuple(norm))

    def reason(self, rel: str, root: str | None = None) -> str | None:
        """Why the entry at ``rel`` (posix path relative to the walked folder) is not taken: "hidden",
        "excluded", or None when it is."""
        parts = [p for p in rel.split("/") if p]
        if not self.include_hidden and any(p.startswith(".") for p in parts):
            return "hidden"
        for g in self.exclude:
            if g.startswith("/"):
                full = f"{root.rstrip('/')}/{rel}" if root else rel
                if any(fnmatchcase(full, g) for full in _prefixes(full)):
                    return "excluded"
            elif "/" in g:
                if any(fnmatchcase(p, g) for p in _prefixes(rel)):
                    return "excluded"
            elif any(fnmatchcase(p, g) for p in parts):
                return "excluded"
        return None


def _prefixes(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


@dataclass
class WalkStats:
    """What one folder walk found and passed over, so that an empty result always says why."""

    root: str
    images: int = 0
    other_files: int = 0          # files without an image extension
    hidden: int = 0               # dot-named files and folders not entered
    excluded: int = 0             # files and folders matching --exclude
    links_followed: int = 0       # symlinked folders walked into
    skipped: list[tuple[str, str]] = field(default_factory=list)  # folders not walked: (path, why)

    def why_empty(self) -> str:
        """One line on why the walk found no image (call when ``images == 0``)."""
        bits = [f"{self.other_files} file(s) without an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                if self.other_files else "no files"]
        if self.hidden:
            bits.append(f"{self.hidden} hidden name(s) skipped (--include-hidden takes them)")
        if self.excluded:
            bits.append(f"{self.excluded} name(s) excluded by --exclude")
        if self.skipped:
            bits.append(f"{len(self.skipped)} folder(s) not walked (first: {self.skipped[0][0]}: {self.skipped[0][1]})")
        return f"no image files under {self.root}: " + "; ".join(bits)


@dataclass
class Discovery:
    """Result of :func:`scan`: the sources, and per walked folder what was found and passed over."""

    sources: list[ImageSource]
    walks: list[WalkStats] = field(default_factory=list)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return [x for w in self.walks for x in w.skipped]


def _label_for(path: Path, root: Path) -> str | None:
    # The parent folder name is the label ("JPEGImages/zebra/x.jpg" -> "zebra"); files
    # directly in the input folder have none.
    return path.parent.name if path.parent != root else None


def walk_images(root: str | os.PathLike, selection: Selection | None = None,
                stats: WalkStats | None = None) -> list[ImageSource]:
    """Every file with an image extension under ``root`` (recursive, sorted), filtered by ``selection``.

    Symlinked folders are followed; a folder whose real path was already walked (a symlink loop,
    or a second link to the same folder) is not walked again and is listed in ``stats.skipped``,
    as are folders that cannot be read. Paths keep the links they were reached through.
    """
    selection = selection or Selection()
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DataNotFoundError(f"input folder not found: {root}")
    stats = stats if stats is not None else WalkStats(str(root))
    if root.is_file():
        stats.images += 1
        return [ImageSource(str(root), None, root.parent.name)]
    out = []
    seen: dict[str, str] = {}   # real path of each walked folder -> the path it was walked as

    def unreadable(e: OSError) -> None:
        stats.skipped.append((str(e.filename), f"unreadable folder ({e.strerror or e})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            stats.skipped.append((dirpath, f"symlink to {real}, already walked as {seen[real]}"))
            dirnames[:] = []
            continue
        seen[real] = dirpath
        if dirpath != str(root) and os.path.islink(dirpath):
            stats.links_followed += 1
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep = []
        for d in sorted(dirnames):
            why = selection.reason(rel_dir + d, str(root))
            if why:
                setattr(stats, why, getattr(stats, why) + 1)
            else:
                keep.append(d)
        dirnames[:] = keep
        for fn in sorted(filenames):
            if Path(fn).suffix.lower() not in IMAGE_EXTENSIONS:
                stats.other_files += not fn.startswith(".")
                continue
            why = selection.reason(rel_dir + fn, str(root))
            if why:
                setattr(stats, why, getattr(stats, why) + 1)
                continue
            p = Path(dirpath) / fn
            out.append(ImageSource(str(p), str(root), _label_for(p, root)))
    stats.images = len(out)
    return out


def read_file_list(list_file: str | os.PathLike) -> list[ImageSource]:
    """A text file of image paths, one per line, optionally ``path<TAB>label``.

    Relative paths are relative to the list file's folder; blank lines and ``#`` comments are
    skipped. Without an explicit label, the parent folder name is used.
    """
    list_file = Path(list_file).expanduser()
    if not list_file.is_file():
        raise DataNotFoundError(f"file list not found: {list_file}")
    base = list_file.absolute().parent
    out = []
    for line in list_file.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        raw, _, label = line.partition("\t")
        p = Path(raw.strip()).expanduser()
        p = p if p.is_absolute() else base / p
        out.append(ImageSource(os.path.abspath(p), None, label.strip() or p.parent.name or None))
    return out


def scan(inputs: Sequence[str | os.PathLike] = (), file_list: str | os.PathLike | None = None,
         selection: Selection | None = None) -> Discovery:
    """Folders (recursive, filtered by ``selection``) and/or a file list (taken as listed) -> unique
    sources, first occurrence wins, with what each folder walk passed over."""
    if not inputs and file_list is None:
        raise InvalidInputError("no input given; expected one or more image folders or --file-list FILE")
    walks, lists = [], []
    for i in inputs:
        st = WalkStats(str(Path(i).expanduser().absolute()))
        lists.append(walk_images(i, selection, st))
        walks.append(st)
    if file_list:
        lists.append(read_file_list(file_list))
    seen: dict[str, ImageSource] = {}
    for lst in lists:
        for src in lst:
            seen.setdefault(src.path, src)
    return Discovery(list(seen.values()), walks)


def discover(inputs: Sequence[str | os.PathLike] = (), file_list: str | os.PathLike | None = None,
             selection: Selection | None = None) -> list[ImageSource]:
    """``scan(...).sources``."""
    return scan(inputs, file_list, selection).sources
