"""Backbone features of image files, cached by file content in the cache folder (never beside the photos).

    path = feature_cache_file(images_dir, "efficientnet-lite0")     # <cache>/features/<folder key>/...
    feats, ok, failures, n_new, info = cached_features(paths, "efficientnet-lite0", extract, path)

One ``.npz`` per (photo folder, backbone): ``keys`` (sha1 of each file's bytes), ``features`` (n, D)
float32 and ``weights_id`` (which weights computed them). The folder is
``$ZSLR_CACHE/features/<key>``, else ``<data root>/cache/features/<key>``, where ``<key>`` is a hash of
the photo folder's resolved path: a user's folder of class sub-folders is never written to (a cache
folder inside it would look like one more class to every tool that lists it), and renamed or copied
files still hit because rows are looked up by content.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..fileio import atomic_write, file_digest
from ..paths import resolve_cache_dir

log = logging.getLogger(__name__)

# (paths) -> (features (n, D) float32, ok_paths, failures [(path, reason)]), like features.extract_features.
# A function may carry ``weights_id`` (set once its backbone is loaded); it is stored with the rows.
FeatureFn = Callable[[Sequence[Path]], tuple[np.ndarray, list, list]]

CACHE_KIND = "features"


def features_cache_root(data_root: str | os.PathLike | None = None) -> Path:
    """``$ZSLR_CACHE/features``, else ``<data_root>/cache/features`` (``data_root`` None: the resolved
    data root, as for every other cache; see ``paths.resolve_cache_dir``)."""
    if data_root is None or os.environ.get("ZSLR_CACHE"):
        return resolve_cache_dir(CACHE_KIND)
    return Path(data_root).expanduser() / "cache" / CACHE_KIND


def default_cache_dir(images_dir: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Path:
    """The cache folder of one photo folder: ``<features cache root>/<sha1 of its resolved path>[:16]``."""
    resolved = str(Path(images_dir).expanduser().resolve())
    return features_cache_root(data_root) / hashlib.sha1(resolved.encode()).hexdigest()[:16]


def cache_file(cache_dir: str | os.PathLike, backbone: str) -> Path:
    return Path(cache_dir) / f"features-{_safe(backbone)}.npz"


def content_key(path: Path) -> str:
    """sha1 of the file's bytes: the cache key, so renamed files still hit and edited ones miss."""
    return file_digest(path, "sha1")


@dataclass
class CacheContents:
    rows: dict[str, np.ndarray]
    weights_id: str | None = None


def read_cache(path: Path) -> CacheContents:
    if not path.is_file():
        return CacheContents({})
    try:
        with np.load(path, allow_pickle=False) as z:
            wid = str(z["weights_id"]) if "weights_id" in z.files else None
            return CacheContents(dict(zip(z["keys"].tolist(), z["features"])), wid or None)
    except (OSError, ValueError, KeyError) as e:  # a damaged cache is only a slowdown
        log.warning("ignoring unreadable feature cache %s (%s)", path, e)
        return CacheContents({})


def write_cache(path: Path, contents: CacheContents) -> None:
    keys = np.array(sorted(contents.rows))
    mat = np.stack([contents.rows[k] for k in keys]).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, keys=keys, features=mat, weights_id=np.array(contents.weights_id or ""))
    atomic_write(path, lambda f: f.write(buf.getvalue()))


@dataclass
class CachedFeatures:
    """What :func:`cached_features` returns: rows of the readable files in input order."""

    features: np.ndarray                 # (n_ok, D) float32
    ok_paths: list[Path]
    failures: list[tuple[Path, str]]
    n_extracted: int                     # files sent through the backbone this time
    weights_id: str | None
    cache_path: Path


def cached_features(paths: Sequence[Path], extract: FeatureFn, path: Path) -> CachedFeatures:
    """Features of ``paths`` from the cache file ``path``, extracting only files whose content is new.

    New rows are written back before returning (also when some files failed), so a rerun after a
    fix extracts only what failed. Rows computed with other weights than the current extractor's
    are dropped once the extractor says which weights it has.
    """
    contents = read_cache(path)
    digests = [content_key(Path(p)) for p in paths]
    todo = sorted({d: p for p, d in zip(paths, digests) if d not in contents.rows}.items())
    failures: list[tuple[Path, str]] = []
    n_extracted = len(todo)
    if todo:
        feats, ok, failures = extract([p for _, p in todo])
        feats = np.asarray(feats, np.float32)
        wid = getattr(extract, "weights_id", None)
        if wid and contents.weights_id and wid != contents.weights_id:
            # rows of other weights must not be mixed with these: recompute the files they covered
            log.warning("%s holds features of weights %s, not %s: recomputing them", path, contents.weights_id, wid)
            new = {d for d, _ in todo}
            stale = sorted({d: p for p, d in zip(paths, digests) if d not in new}.items())
            contents = CacheContents({})
            if stale:
                f2, ok2, fail2 = extract([p for _, p in stale])
                todo, ok, failures = todo + stale, list(ok) + list(ok2), list(failures) + list(fail2)
                feats = np.concatenate([feats.reshape(len(feats), -1), np.asarray(f2, np.float32).reshape(len(ok2), -1)]) \
                    if len(ok2) else feats
                n_extracted += len(stale)
        contents.weights_id = wid or contents.weights_id
        by_path = {str(p): d for d, p in todo}
        for p, f in zip(ok, feats):
            contents.rows[by_path[str(p)]] = f
        failures = [(Path(p), str(why)) for p, why in failures]
        if len(ok):
            write_cache(path, contents)
    bad = {str(p) for p, _ in failures}
    rows = [(Path(p), contents.rows[d]) for p, d in zip(paths, digests) if d in contents.rows and str(p) not in bad]
    x = np.stack([f for _, f in rows]).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    return CachedFeatures(x, [p for p, _ in rows], failures, n_extracted, contents.weights_id, path)


def prime_feature_cache(images_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], features: np.ndarray, *,
                        backbone: str, cache_dir: str | os.PathLike | None = None,
                        weights_id: str | None = None) -> Path:
    """Store features computed elsewhere (e.g. by ``zslr index``) so the dataset loaders reuse them.

    paths (n,) image files, features (n, D) float32 from the backbone named ``backbone``; the
    entries are keyed by file content like extracted ones. Returns the cache file.
    """
    x = np.asarray(features, np.float32)
    if x.ndim != 2 or len(x) != len(paths):
        raise InvalidInputError(f"features shape {x.shape} does not match {len(paths)} paths; expected (n, D)")
    path = cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir(images_dir), backbone)
    contents = read_cache(path)
    if contents.rows and next(iter(contents.rows.values())).shape != x.shape[1:]:
        raise InvalidInputError(f"{path} holds {next(iter(contents.rows.values())).shape[0]}-d features of "
                                f"{backbone!r}, not {x.shape[1]}-d; use another cache_dir or delete the file")
    contents.rows.update((content_key(Path(p)), row) for p, row in zip(paths, x))
    contents.weights_id = weights_id or contents.weights_id
    if contents.rows:
        write_cache(path, contents)
    return path


def backbone_feature_fn(backbone: str, device: str = "auto", batch_size: int = 32,
                        workers: int | None = None, progress: bool = False) -> FeatureFn:
    """A :data:`FeatureFn` running the named offline backbone (``features.extract_features``); its
    ``weights_id`` attribute is set when the backbone is loaded (only if some file is not cached)."""
    name = str(device)
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        # a bad --device fails before any image is read; torch itself loads only if something is extracted
        raise InvalidInputError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")

    class _Run:
        weights_id: str | None = None
        model = None

        def __call__(self, paths: Sequence[Path]):
            from ..features import extract_features, load_backbone, resolve_device

            dev = resolve_device(device)
            if self.model is None:  # loading weights is the slow part; skip it when everything is cached
                self.model = load_backbone(backbone, device=dev)
                self.weights_id = self.model.weights_id
            return extract_features(list(paths), self.model, batch_size=batch_size, device=dev, workers=workers,
                                    progress=progress)

    return _Run()


def feature_groups_meta(backbone: str, dim: int) -> dict:
    """``{"feature_groups": {...}}`` when the backbone's vector is several pooled stages (DML attends
    over them), else nothing. Injected feature functions of other widths get no groups."""
    from ..errors import UnknownNameError
    from ..features.backbones import backbone_feature_groups

    try:
        groups = backbone_feature_groups(backbone)
    except UnknownNameError:
        return {}
    return {"feature_groups": groups} if groups and sum(groups.values()) == dim else {}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
