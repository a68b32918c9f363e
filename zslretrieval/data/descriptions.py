"""Human descriptions of photos as a semantic modality (CUB-200-2011's ten sentences per photo).

    texts = read_descriptions(text_dir, ["001.Black_footed_Albatross/x.jpg", ...])  # PhotoSentences
    emb = sentence_embeddings(texts.sentences)           # (S, 384), cached by content + encoder
    desc = class_descriptions(emb, texts.photo, labels_of_photos, n_classes)       # (C, 384)

Layout (Reed et al. 2016, as ``get-cub.sh --text`` lays it out): ``<text_dir>/<class>/<file>.txt`` beside
``<images>/<class>/<file>.jpg``, one sentence per non-blank line. A photo without its text file is named and
refused: a silently missing photo would shift what a class is described by.

The class-level descriptor is the mean of the unit sentence embeddings of every sentence of every photo of the
class, re-normalised to unit length. All photos are used, unseen classes included, as in the literature's CUB
"sent" setting: a class's descriptions are its side information, like its attribute row. They are never used to
choose anything (selection scores val images against val classes' descriptors, exactly as with attributes).

Sentence embeddings are cached once per (encoder id, sentences in order) in ``$ZSLR_CACHE/sentences``
(else ``<data root>/cache/sentences``): never in the data folder's ``text/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError, InvalidInputError

log = logging.getLogger(__name__)

MODALITY = "descriptions"
TEXT_FOLDER = "text"
# Encoded per call in chunks this long, so progress is logged and memory stays small.
CHUNK = 8192


@dataclass
class PhotoSentences:
    """``sentences`` (S,) of the photos ``files`` (P,); ``photo[s]`` is the 0-based photo of sentence s."""

    folder: Path
    files: list[str]
    sentences: list[str]
    photo: np.ndarray

    def of_photo(self, i: int) -> list[str]:
        return [self.sentences[s] for s in np.flatnonzero(self.photo == i)]


def text_file(text_dir: Path, image_rel: str) -> Path:
    """``<class>/<file>.jpg`` -> ``<text_dir>/<class>/<file>.txt``."""
    return Path(text_dir) / Path(image_rel).with_suffix(".txt")


def find_text_folder(images_dir: Path) -> Path | None:
    """The descriptions folder of a photo folder: ``text/`` beside it (CUB's release layout ``images/`` +
    ``text/``; a custom dataset alike). Not inside it: there a ``text/`` folder would be a class."""
    cand = Path(images_dir).parent / TEXT_FOLDER
    return cand if cand.is_dir() else None


def read_descriptions(text_dir: str | Path, image_files: Sequence[str]) -> PhotoSentences:
    """Every non-blank line of each photo's text file; refuses a missing file or one with no sentence."""
    text_dir = Path(text_dir)
    sentences: list[str] = []
    photo: list[int] = []
    missing, empty = [], []
    for i, rel in enumerate(image_files):
        path = text_file(text_dir, rel)
        if not path.is_file():
            missing.append(str(path))
            continue
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if not lines:
            empty.append(str(path))
        sentences.extend(lines)
        photo.extend([i] * len(lines))
    if missing:
        raise DataNotFoundError(f"{len(missing)} of {len(image_files)} photos have no description file in {text_dir}, "
                                f"e.g. {missing[0]}; expected <text>/<class>/<file>.txt beside each "
                                "<images>/<class>/<file>.jpg (one sentence per line)")
    if empty:
        raise InvalidInputError(f"{len(empty)} description file(s) hold no sentence, e.g. {empty[0]}; "
                                "give each photo at least one non-blank line")
    return PhotoSentences(text_dir, list(image_files), sentences, np.asarray(photo, np.int64))


def sentences_key(sentences: Sequence[str], encoder: str) -> str:
    """Content hash of (encoder id, sentences in order): the cache file's name."""
    h = hashlib.sha256(json.dumps({"encoder": encoder, "kind": "sentences"}).encode())
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:32]


def default_cache_dir() -> Path:
    from ..paths import resolve_cache_dir
    return resolve_cache_dir("sentences")


def sentence_embeddings(sentences: Sequence[str], *, cache_dir: str | Path | None = None) -> np.ndarray:
    """Unit sentence embeddings (S, 384) float32, from the cache when its key and shape match, else encoded
    (minutes for CUB's 117,880 on one core) and written atomically. A torn cache file is recomputed."""
    from ..text import DIM, encode_texts, encoder_id
    from ..text.encoder import cached_embeddings

    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"{sentences_key(sentences, encoder_id())}.npy"

    def encode_in_chunks() -> np.ndarray:
        out = np.empty((len(sentences), DIM), np.float32)
        for start in range(0, len(sentences), CHUNK):
            out[start:start + CHUNK] = encode_texts(list(sentences[start:start + CHUNK]))
            log.info("encoded %d / %d sentences", min(start + CHUNK, len(sentences)), len(sentences))
        return out

    return cached_embeddings(path, len(sentences), encode_in_chunks)


def class_descriptions(embeddings: np.ndarray, photo: np.ndarray, photo_labels: np.ndarray,
                       n_classes: int) -> np.ndarray:
    """(C, 384) float32 unit rows: the mean sentence embedding of each class (over all its photos' sentences)."""
    labels = np.asarray(photo_labels)[photo]
    out = np.zeros((n_classes, embeddings.shape[1]), np.float64)
    np.add.at(out, labels, embeddings)
    counts = np.bincount(labels, minlength=n_classes)
    if np.any(counts == 0):
        raise InvalidInputError(f"{int(np.sum(counts == 0))} class(es) have no description sentence, e.g. class "
                                f"{int(np.flatnonzero(counts == 0)[0])}; every class needs described photos")
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def dataset_sentences(dataset) -> tuple[PhotoSentences, np.ndarray]:
    """The photo sentences of a dataset that records ``meta["image_files"]`` and ``meta["text_folder"]``,
    and their embeddings (S, 384). Rows of ``dataset.features`` are the photos, in order."""
    folder = dataset.meta.get("text_folder")
    files = dataset.meta.get("image_files")
    if not folder or files is None:
        raise DataNotFoundError(f"{dataset.name}: no description folder; the {MODALITY!r} modality needs the photos' "
                                f"sentences in a {TEXT_FOLDER}/<class>/<file>.txt folder beside the photos "
                                "(CUB: ../shared/tools/get-cub.sh --text)")
    if len(files) != len(dataset.features):
        raise InvalidInputError(f"{dataset.name}: {len(files)} photo files for {len(dataset.features)} feature rows")
    texts = read_descriptions(folder, files)
    return texts, sentence_embeddings(texts.sentences)


def dataset_descriptions(dataset) -> np.ndarray:
    """(C, 384) class-level description embeddings of a dataset with a description folder (see above)."""
    texts, emb = dataset_sentences(dataset)
    return class_descriptions(emb, texts.photo, dataset.labels, len(dataset.class_names))


def describe_meta(text_folder: Path | None, image_files: Sequence[str]) -> dict:
    """``meta`` entries a loader records so that the modality can be built on first use."""
    if text_folder is None:
        return {}
    return {"text_folder": str(text_folder), "image_files": list(image_files)}


__all__ = ["MODALITY", "PhotoSentences", "class_descriptions", "dataset_descriptions", "dataset_sentences",
           "describe_meta", "find_text_folder", "read_descriptions", "sentence_embeddings", "sentences_key",
           "text_file"]
