"""A generated zero-shot image dataset: shapes with a colour and a texture on a background.

Every class is one combination of four attribute values (shape, colour, texture,
background), 4 values each, drawn from an orthogonal array over GF(4):

* 16 classes (two orthogonal Latin squares): every pair of values from two groups occurs in
  exactly one class, so two classes share at most one value. Small; what the tests use.
* 64 classes (strength 3): every triple of values from three groups occurs in exactly one
  class, so two classes share at most two values, and each value occurs in 16 classes, each
  pair of values in 4. What ``zslr demo`` uses: a model can only tell 'red' from 'stripes'
  if it sees each of them in many contexts, and with 16 classes it sees each in only 3 or 4.

Either way a class can only be recognised by composing its attributes. Unseen classes are new
combinations of attribute values that all appear in seen classes, which is exactly what
zero-shot learning assumes; their images are never trained on.

Output layout (what ``zslr train --images`` and ``load_custom_dataset`` read)::

    <out>/images/<class>/<class>_0000.jpg ...
    <out>/class_attributes.csv     class,circle,square,...,water   (0/1 values)
    <out>/unseen.txt               one unseen class name per line

Everything is a pure function of ``seed``: the same seed gives byte-identical files.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import InvalidInputError
from ..fileio import atomic_write

# Attribute groups in CSV column order. Values of one group are mutually exclusive.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "star"),
    "colour": ("red", "green", "blue", "yellow"),
    "texture": ("stripes", "dots", "checks", "plain"),
    "background": ("water", "grass", "sky", "sand"),
}
ATTRIBUTE_NAMES: list[str] = [v for values in VOCABULARY.values() for v in values]

_RGB = {"red": (205, 35, 35), "green": (35, 165, 55), "blue": (35, 75, 215), "yellow": (240, 205, 30)}

# GF(4) = {0, 1, x, x+1}: addition is XOR, multiplication by this table. Orthogonality of the
# two Latin squares below needs a field; arithmetic mod 4 would not give it.
_GF4_MUL = np.array([[0, 0, 0, 0], [0, 1, 2, 3], [0, 2, 3, 1], [0, 3, 1, 2]])


@dataclass(frozen=True)
class ClassSpec:
    """One generated class: a value from each attribute group."""

    shape: str
    colour: str
    texture: str
    background: str

    @property
    def name(self) -> str:
        return f"{self.colour}_{self.texture}_{self.shape}_on_{self.background}"

    @property
    def attributes(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.texture, self.background)

    def vector(self) -> np.ndarray:
        """(A,) 0/1 float32 over :data:`ATTRIBUTE_NAMES`."""
        return np.array([1.0 if a in self.attributes else 0.0 for a in ATTRIBUTE_NAMES], dtype=np.float32)


@dataclass
class GeneratedDataset:
    """Where :func:`generate_dataset` wrote things and what it generated."""

    root: Path
    images_dir: Path
    class_attributes_csv: Path
    unseen_file: Path
    classes: list[ClassSpec]
    unseen: list[str]
    image_paths: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def seen(self) -> list[str]:
        return [c.name for c in self.classes if c.name not in self.unseen]

    def spec(self, name: str) -> ClassSpec:
        return next(c for c in self.classes if c.name == name)


# Class counts :func:`design_classes` can lay out (see the module docstring).
DESIGNS = (16, 64)


def design_classes(seed: int = 0, n_classes: int = 16) -> list[ClassSpec]:
    """The classes of an orthogonal array over GF(4), with field elements mapped to values by ``seed``.

    16: cell (i, j) gets shape i, colour j, texture i+j, background i+x*j -- rows, columns and
    the two squares are four mutually orthogonal partitions, so every pair of values from two
    different groups occurs in exactly one class. 64: (i, j, k) gets shape i, colour j, texture
    k, background i+j+k -- any three of the four determine the fourth, so every triple of values
    occurs in exactly one class. ``seed`` permutes which concrete value stands for each field
    element, so different seeds give different combinations.
    """
    if n_classes not in DESIGNS:
        raise InvalidInputError(f"n_classes={n_classes}; accepted: {', '.join(map(str, DESIGNS))}")
    rng = np.random.default_rng([seed, 1])
    perms = {g: [vals[k] for k in rng.permutation(len(vals))] for g, vals in VOCABULARY.items()}
    if n_classes == 16:
        cells = [(i, j, i ^ j, i ^ int(_GF4_MUL[2, j])) for i, j in itertools.product(range(4), range(4))]
    else:
        cells = [(i, j, k, i ^ j ^ k) for i, j, k in itertools.product(range(4), range(4), range(4))]
    return [ClassSpec(perms["shape"][i], perms["colour"][j], perms["texture"][t], perms["background"][b])
            for i, j, t, b in cells]


def choose_unseen(classes: list[ClassSpec], n_unseen: int = 4, seed: int = 0) -> list[str]:
    """Pick ``n_unseen`` class names whose every attribute value also appears in >= 2 seen classes.

    Among the subsets that qualify, those whose unseen classes share no value with each other
    are preferred (each unseen class then tests a different composition): random subsets first,
    then, if none of those was disjoint, greedy disjoint picks. Deterministic by seed.
    """
    if not 2 <= n_unseen <= len(classes) - 2:
        raise InvalidInputError(f"n_unseen={n_unseen}; must be between 2 and {len(classes) - 2}")
    rng = np.random.default_rng([seed, 2])
    best, best_key = None, None
    for _ in range(3000):
        pick = sorted(rng.choice(len(classes), size=n_unseen, replace=False).tolist())
        seen = [c for k, c in enumerate(classes) if k not in pick]
        coverage = min(sum(v in c.attributes for c in seen) for k in pick for v in classes[k].attributes)
        values = [v for k in pick for v in classes[k].attributes]
        repeats = len(values) - len(set(values))
        key = (min(coverage, 2), -repeats)
        if best_key is None or key > best_key:
            best, best_key = pick, key
        if key == (2, 0):
            break
    if best_key != (2, 0):
        # Pairwise-disjoint picks are rare among random subsets of a large design (64 classes): build
        # them greedily instead, in random orders, and keep one whose values all stay >= 2x seen.
        for _ in range(200):
            pick: list[int] = []
            for k in rng.permutation(len(classes)).tolist():
                if not any(set(classes[k].attributes) & set(classes[p].attributes) for p in pick):
                    pick.append(k)
                    if len(pick) == n_unseen:
                        break
            seen = [c for k, c in enumerate(classes) if k not in pick]
            if len(pick) == n_unseen and min(sum(v in c.attributes for c in seen)
                                             for k in pick for v in classes[k].attributes) >= 2:
                best, best_key = sorted(pick), (2, 0)
                break
    if best_key[0] < 1:
        raise InvalidInputError(f"cannot choose {n_unseen} unseen classes whose attributes all appear in seen classes")
    return [classes[k].name for k in best]


# --------------------------------------------------------------------------- rendering


def _background(kind: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """(s, s, 3) float32 in [0, 255]."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    if kind == "water":
        # Horizontal wave bands with a wobble: the ripples are what says "water", not the blue alone.
        lam = rng.uniform(0.05, 0.08)
        phase = rng.uniform(0, 2 * np.pi)
        wob = 0.02 * np.sin(2 * np.pi * xx / rng.uniform(0.2, 0.35) + rng.uniform(0, 6.3))
        wave = np.sin(2 * np.pi * (yy + wob) / lam + phase)
        base = np.array([20, 85, 140], np.float32) * rng.uniform(0.85, 1.1)
        img = base + (wave[..., None] > 0.6) * np.array([90, 110, 100], np.float32)
        img += (wave[..., None] * 18)
        return img
    if kind == "grass":
        # Vertical blades: noise that is coarse along x and stretched along y.
        small = rng.uniform(0, 1, size=(max(2, s // 24), s // 2)).astype(np.float32)
        streak = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((s, s), Image.BILINEAR),
                            np.float32) / 255
        dark, light = np.array([25, 80, 20], np.float32), np.array([110, 190, 50], np.float32)
        return dark + streak[..., None] * (light - dark) * rng.uniform(0.8, 1.1)
    if kind == "sky":
        top = np.array([80, 150, 230], np.float32) * rng.uniform(0.9, 1.05)
        bottom = np.array([185, 215, 245], np.float32)
        img = top + yy[..., None] * (bottom - top)
        clouds = Image.new("L", (s, s), 0)
        draw = ImageDraw.Draw(clouds)
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = rng.uniform(0, s), rng.uniform(0, s)
            for _ in range(4):
                r = rng.uniform(0.05, 0.11) * s
                ox, oy = rng.normal(0, 0.06 * s), rng.normal(0, 0.02 * s)
                draw.ellipse([cx + ox - 1.6 * r, cy + oy - r, cx + ox + 1.6 * r, cy + oy + r], fill=255)
        alpha = np.asarray(clouds.filter(ImageFilter.GaussianBlur(s / 60)), np.float32)[..., None] / 255
        return img * (1 - alpha) + 250 * alpha
    if kind == "sand":
        dunes = np.sin(2 * np.pi * (yy * rng.uniform(2, 4) + 0.3 * np.sin(2 * np.pi * xx * rng.uniform(0.5, 1.5))))
        base = np.array([222, 190, 135], np.float32) * rng.uniform(0.92, 1.05)
        speck = rng.normal(0, 14, size=(s, s, 1)).astype(np.float32)
        return base + dunes[..., None] * 14 + speck
    raise InvalidInputError(f"unknown background {kind!r}; valid: {', '.join(VOCABULARY['background'])}")


def _texture(kind: str, colour: str, s: int, rng: np.random.Generator) -> np.ndarray:
    """(s, s, 3) float32 fill of the object: its colour carrying the texture pattern."""
    rgb = np.array(_RGB[colour], np.float32) * rng.uniform(0.88, 1.08)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    ang = rng.uniform(0, np.pi)
    u = xx * math.cos(ang) + yy * math.sin(ang)
    v = -xx * math.sin(ang) + yy * math.cos(ang)
    period = rng.uniform(0.075, 0.1) * s
    if kind == "stripes":
        on = (u / period) % 1.0 < 0.5
        other = rgb * 0.12
    elif kind == "dots":
        du, dv = (u / period) % 1.0 - 0.5, (v / period) % 1.0 - 0.5
        on = du**2 + dv**2 > 0.28**2
        other = np.array([250, 250, 250], np.float32)
    elif kind == "checks":
        on = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
        other = np.array([245, 245, 245], np.float32)
    elif kind == "plain":
        # A gentle light gradient so "plain" is not a flat patch the backbone never saw.
        shade = 0.85 + 0.3 * (u - u.min()) / max(1.0, float(u.max() - u.min()))
        return rgb * shade[..., None]
    else:
        raise InvalidInputError(f"unknown texture {kind!r}; valid: {', '.join(VOCABULARY['texture'])}")
    return np.where(on[..., None], rgb, other)


# Object radius as a fraction of the image side.
_OBJECT_RADIUS = (0.22, 0.3)


def _shape_mask(kind: str, s: int, rng: np.random.Generator) -> Image.Image:
    """'L' mask of one object with jittered centre, size and rotation; kept central so a centre crop keeps it."""
    cx, cy = rng.uniform(0.38, 0.62) * s, rng.uniform(0.38, 0.62) * s
    r = rng.uniform(*_OBJECT_RADIUS) * s
    rot = rng.uniform(0, 2 * np.pi)
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)

    def poly(radii: list[float], n: int) -> list[tuple[float, float]]:
        return [(cx + rr * math.cos(rot + 2 * math.pi * k / n), cy + rr * math.sin(rot + 2 * math.pi * k / n))
                for k, rr in zip(range(n), itertools.cycle(radii))]

    if kind == "circle":
        a = r * rng.uniform(0.9, 1.1)
        draw.ellipse([cx - a, cy - r, cx + a, cy + r], fill=255)
    elif kind == "square":
        draw.polygon(poly([r * 1.15], 4), fill=255)
    elif kind == "triangle":
        draw.polygon(poly([r * 1.25], 3), fill=255)
    elif kind == "star":
        draw.polygon(poly([r * 1.25, r * 0.5], 10), fill=255)
    else:
        raise InvalidInputError(f"unknown shape {kind!r}; valid: {', '.join(VOCABULARY['shape'])}")
    return mask


def render_image(spec: ClassSpec, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """One RGB ``size`` x ``size`` picture of ``spec`` with random placement, rotation and noise."""
    bg = _background(spec.background, size, rng)
    fg = _texture(spec.texture, spec.colour, size, rng)
    mask = np.asarray(_shape_mask(spec.shape, size, rng).filter(ImageFilter.GaussianBlur(0.8)), np.float32)[..., None] / 255
    img = bg * (1 - mask) + fg * mask
    img = img * rng.uniform(0.9, 1.1) + rng.normal(0, 6, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------- dataset


def generate_dataset(out_dir: str | Path, *, seed: int = 0, images_per_class: int = 30, image_size: int = 224,
                     n_unseen: int = 4, image_format: str = "jpg", n_classes: int = 16) -> GeneratedDataset:
    """Write the image folders, ``class_attributes.csv`` and ``unseen.txt`` under ``out_dir``.

    Files that already exist with the same content are left untouched, so re-running with the
    same arguments is cheap and keeps feature caches keyed by content valid.
    """
    if images_per_class < 2:
        raise InvalidInputError(f"images_per_class={images_per_class}; need at least 2 (train and test images)")
    if not 32 <= image_size <= 1024:
        raise InvalidInputError(f"image_size={image_size}; accepted: 32..1024 pixels")
    fmt = image_format.lower().lstrip(".")
    if fmt not in ("jpg", "png"):
        raise InvalidInputError(f"image_format={image_format!r}; accepted: jpg, png")
    root = Path(out_dir)
    images_dir = root / "images"
    classes = design_classes(seed, n_classes)
    unseen = choose_unseen(classes, n_unseen, seed)
    paths: dict[str, list[Path]] = {}
    for ci, spec in enumerate(classes):
        folder = images_dir / spec.name
        folder.mkdir(parents=True, exist_ok=True)
        paths[spec.name] = []
        for k in range(images_per_class):
            # One generator per image: an image depends on (seed, class, k) only, not on how many came before.
            rng = np.random.default_rng([seed, 3, ci, k])
            buf = io.BytesIO()
            img = render_image(spec, rng, image_size)
            if fmt == "jpg":
                img.save(buf, "JPEG", quality=90)
            else:
                img.save(buf, "PNG")
            path = folder / f"{spec.name}_{k:04d}.{fmt}"
            _write_if_changed(path, buf.getvalue())
            paths[spec.name].append(path)

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["class", *ATTRIBUTE_NAMES])
    for spec in classes:
        writer.writerow([spec.name, *(int(x) for x in spec.vector())])
    csv_path = root / "class_attributes.csv"
    _write_if_changed(csv_path, text.getvalue().encode())
    unseen_path = root / "unseen.txt"
    _write_if_changed(unseen_path, ("\n".join(unseen) + "\n").encode())
    _remove_stale(root, [p for ps in paths.values() for p in ps])
    return GeneratedDataset(root, images_dir, csv_path, unseen_path, classes, unseen, paths)


def _remove_stale(root: Path, written: list[Path]) -> None:
    """Delete images an earlier run (other seed or count) generated here but this run did not.

    Only files listed in our own ``generated.json`` are ever removed, so a user's files in the
    same folder are safe; without this a re-run would index yesterday's classes too.
    """
    listing = root / "generated.json"
    now = sorted(str(p.relative_to(root)) for p in written)
    if listing.is_file():
        try:
            before = json.loads(listing.read_text()).get("files", [])
        except (ValueError, AttributeError):
            before = []
        for rel in set(before) - set(now):
            old = root / rel
            if old.is_file():
                old.unlink()
            if old.parent.is_dir() and old.parent != root and not any(old.parent.iterdir()):
                old.parent.rmdir()
    _write_if_changed(listing, json.dumps({"files": now}, indent=0).encode())


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    atomic_write(path, lambda f: f.write(data))
