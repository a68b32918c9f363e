"""Human descriptions as a semantic modality: reading text/, the sentence cache, class means (tiny CUB)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

import zslretrieval.text as text
from zslretrieval.data.custom import load_custom_dataset
from zslretrieval.data.descriptions import (class_descriptions, find_text_folder, read_descriptions,
                                            sentence_embeddings)
from zslretrieval.data.xlsa17 import load_xlsa17
from zslretrieval.errors import DataNotFoundError, InvalidInputError
from zslretrieval.models import get_model_class
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

from .photo_fakes import CLASSES, ColourFeatures, make_fake_cub

COLOUR_WORDS = {"001.Alpha_bird": "red", "002.Beta_bird": "green", "003.Gamma_bird": "blue",
                "004.Delta_bird": "red and green", "005.Eps_bird": "green and blue", "006.Zeta_bird": "red and blue"}


def bag_of_words(texts):
    """A stand-in encoder (no model needed): the unit sum of one fixed random vector per word."""
    out = np.zeros((len(texts), text.DIM), np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().replace(",", " ").split():
            out[i] += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(text.DIM).astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_texts(root: Path, rel_paths: list[str]) -> Path:
    """``text/<class>/<file>.txt`` beside ``images/``: three sentences naming the class's colours."""
    folder = root / "text"
    for k, rel in enumerate(rel_paths):
        c = COLOUR_WORDS[rel.split("/")[0]]
        p = folder / Path(rel).with_suffix(".txt")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"a {c} bird\n\nthis bird is {c} with a short beak\nsmall {c} wings number {k}\n")
    return folder


@pytest.fixture
def encoder(monkeypatch):
    calls = []

    def encode(texts, batch_size=64):
        calls.append(len(texts))
        return bag_of_words(texts)

    monkeypatch.setattr(text, "encode_texts", encode)
    return calls


@pytest.fixture
def cub(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    g = make_fake_cub(tmp_path)
    write_texts(g.root / "CUB_200_2011", g.rel_paths)
    return g


def _load(g):
    return load_xlsa17(g.root, "CUB", name="cub", feature_fn=ColourFeatures(), progress=False)


def test_class_descriptions_are_unit_means_of_every_photo_sentence(cub, encoder, tmp_path):
    ds = _load(cub)
    assert ds.meta["text_folder"] == str(cub.root / "CUB_200_2011" / "text")
    sem, dims = ds.semantic_matrix(["attributes", "descriptions"])
    assert dims == [5, text.DIM] and sem.shape == (6, 5 + text.DIM)
    desc = sem[:, 5:]
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1, atol=1e-5)
    # by hand: blank lines skipped, three sentences per photo, every photo of the class (unseen ones too)
    folder = cub.root / "CUB_200_2011" / "text"
    for c in range(len(ds.class_names)):
        files = [folder / Path(cub.rel_paths[i]).with_suffix(".txt") for i in np.flatnonzero(ds.labels == c)]
        sents = [s for f in files for s in f.read_text().splitlines() if s.strip()]
        assert len(sents) == 12
        m = bag_of_words(sents).mean(0)
        np.testing.assert_allclose(desc[c], m / np.linalg.norm(m), atol=1e-5)
    # one encoder pass; the cache lives in the cache folder, nothing is written into text/
    assert sum(encoder) == 24 * 3
    assert len(list((tmp_path / "cache" / "sentences").glob("*.npy"))) == 1
    assert all(p.suffix == ".txt" for p in (cub.root / "CUB_200_2011" / "text").rglob("*") if p.is_file())


def test_sentence_cache_is_keyed_by_content_and_a_torn_file_is_recomputed(tmp_path, encoder):
    a = sentence_embeddings(["a red bird", "a blue bird"], cache_dir=tmp_path)
    again = sentence_embeddings(["a red bird", "a blue bird"], cache_dir=tmp_path)
    np.testing.assert_array_equal(a, again)
    assert encoder == [2]
    sentence_embeddings(["a blue bird", "a red bird"], cache_dir=tmp_path)   # other order: other key
    assert encoder == [2, 2] and len(list(tmp_path.glob("*.npy"))) == 2
    for p in tmp_path.glob("*.npy"):
        p.write_bytes(b"torn")
    np.testing.assert_array_equal(sentence_embeddings(["a red bird", "a blue bird"], cache_dir=tmp_path), a)
    assert encoder == [2, 2, 2]


def test_missing_or_empty_description_files_are_named(tmp_path):
    folder = tmp_path / "text"
    (folder / "001.A").mkdir(parents=True)
    (folder / "001.A" / "x.txt").write_text("a bird\n")
    (folder / "001.A" / "y.txt").write_text("\n  \n")
    with pytest.raises(DataNotFoundError, match=r"1 of 2 photos.*001.A/z.txt"):
        read_descriptions(folder, ["001.A/x.jpg", "001.A/z.jpg"])
    with pytest.raises(InvalidInputError, match="y.txt"):
        read_descriptions(folder, ["001.A/x.jpg", "001.A/y.jpg"])
    got = read_descriptions(folder, ["001.A/x.jpg"])
    assert got.sentences == ["a bird"] and got.photo.tolist() == [0]


def test_a_class_without_sentences_is_refused():
    with pytest.raises(InvalidInputError, match="no description sentence"):
        class_descriptions(np.ones((2, 4), np.float32), np.array([0, 0]), np.array([0]), 2)


def test_without_a_text_folder_the_modality_says_how_to_get_one(tmp_path, monkeypatch, encoder):
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    ds = _load(make_fake_cub(tmp_path))
    assert "text_folder" not in ds.meta
    with pytest.raises(DataNotFoundError, match="get-cub.sh --text"):
        ds.semantic_matrix(["attributes", "descriptions"])
    with pytest.raises(InvalidInputError, match="descriptions"):
        ds.semantic_matrix(["nonsense"])


def test_custom_dataset_reads_text_beside_its_images(tmp_path, monkeypatch, encoder):
    monkeypatch.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    g = make_fake_cub(tmp_path)
    images = g.root / "CUB_200_2011" / "images"
    assert find_text_folder(images) is None
    write_texts(g.root / "CUB_200_2011", g.rel_paths)
    csv = tmp_path / "attrs.csv"
    csv.write_text("class,a,b\n" + "".join(f"{c},{i + 1},{6 - i}\n" for i, c in enumerate(CLASSES)))
    unseen = tmp_path / "unseen.txt"
    unseen.write_text("005.Eps_bird\n006.Zeta_bird\n")
    ds = load_custom_dataset(images, csv, unseen, feature_fn=ColourFeatures(), cache_dir=tmp_path / "feat")
    sem, dims = ds.semantic_matrix(["descriptions"])
    assert dims == [text.DIM]
    e = bag_of_words(["a green and blue bird"])[0]
    assert ds.class_names[int(np.argmax(sem @ e))] == "005.Eps_bird"


def test_checkpoint_keeps_a_sentence_map_and_old_files_load_without_one(tmp_path):
    model = get_model_class("eszsl")(3, [4], {})
    card = ModelCard(model="eszsl", hparams=model.hparams.to_dict(), feature_dim=3, semantic_dims=[4], dataset="x")
    extra = {"W": torch.ones(2, 4), "meta": torch.tensor([1, 2], dtype=torch.uint8)}
    save_checkpoint(model, card, tmp_path / "with.pt", torch.zeros(2, 4), sentence_map=extra)
    save_checkpoint(model, card, tmp_path / "without.pt", torch.zeros(2, 4))
    got, _, _ = load_checkpoint(tmp_path / "with.pt")
    assert set(got.sentence_map) == {"W", "meta"} and torch.equal(got.sentence_map["W"], extra["W"])
    assert load_checkpoint(tmp_path / "without.pt")[0].sentence_map is None
