"""Text as a semantic modality: class-name embeddings in datasets, DEM fusing attributes + text,
checkpoints and cards that record it, and --text queries on an index built with such a model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zslretrieval.data.synthetic import make_synthetic
from zslretrieval.errors import IncompatibleError, InvalidInputError
from zslretrieval.models.checkpoint import load_checkpoint, save_checkpoint
from zslretrieval.protocol import select_and_train, semantic_matrix
from zslretrieval.query import QueryEngine, QuerySpec
from zslretrieval.text import encode_texts, encoder_id
from zslretrieval.text.names import CLASS_TEMPLATE, class_text

pytestmark = pytest.mark.usefixtures("one_torch_thread")
DEM_HP = {"hidden": 32, "epochs": 8, "batch_size": 32, "lr": 3e-3}


@pytest.fixture()
def ds(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSLR_DATA", str(tmp_path / "data"))   # the text cache goes here, not into ~
    monkeypatch.delenv("ZSLR_CACHE", raising=False)           # (the suite's session cache would take it)
    return make_synthetic(n_classes=12, n_unseen=4, n_val=3, n_attributes=10, images_per_class=16, feature_dim=16,
                          hidden_dim=16, feature_noise=0.5, seed=0)


def test_text_modality_is_the_class_names_embedded(ds, tmp_path):
    s, dims = semantic_matrix(ds, ["attributes", "text"])
    assert dims == [10, 384] and s.shape == (12, 394)
    want = encode_texts([CLASS_TEMPLATE.replace("{}", class_text(c)) for c in ds.class_names])
    np.testing.assert_allclose(s[:, 10:], want, atol=1e-6)
    assert list((tmp_path / "data" / "cache" / "text").glob("*.npy"))          # cached by content hash
    with pytest.raises(InvalidInputError, match="text"):
        semantic_matrix(ds, ["colour"])


def test_dem_fuses_attributes_and_text_and_the_card_says_so(ds, tmp_path):
    res = select_and_train(ds, "dem", seed=0, hparams=DEM_HP, modalities=("attributes", "text"))
    card = res.card
    assert card.semantic_modalities == ["attributes", "text"] and card.semantic_dims == [10, 384]
    assert card.text_encoder == encoder_id()
    assert len(res.model.branches) == 2                   # one first layer per modality (DEM multi-modal)
    path = save_checkpoint(res.model, card, tmp_path / "m.pt", torch.from_numpy(semantic_matrix(ds, card.semantic_modalities)[0]))
    _, card2, sem = load_checkpoint(path)
    assert card2.text_encoder == encoder_id() and card2.semantic_modalities == ["attributes", "text"]
    assert sem.shape == (12, 394)


def test_text_query_on_a_text_model_index_equals_the_class_query(ds, tmp_path):
    from zslretrieval.ingest import index_features
    res = select_and_train(ds, "eszsl", seed=0, modalities=("text",))
    ckpt = save_checkpoint(res.model, res.card, tmp_path / "t.pt",
                           torch.from_numpy(semantic_matrix(ds, ["text"])[0]))
    rows = ds.splits["test_unseen"]
    idx = index_features("t", ds.features[rows], [f"s/{r}" for r in rows],
                         [ds.class_names[ds.labels[r]] for r in rows], model_checkpoint=ckpt, root=tmp_path / "ix")
    eng = QueryEngine(idx)
    name = res.card.unseen_classes[0]
    by_text, by_class = eng.run([QuerySpec("text", class_text(name)), QuerySpec("class", name)], k=None)
    assert [h.id for h in by_text.hits] == [h.id for h in by_class.hits]
    np.testing.assert_allclose([h.score for h in by_text.hits], [h.score for h in by_class.hits], atol=1e-5)
    # free text keeps its own article out of the prompt: "a photo of a <name>.", not "a photo of a a <name>."
    art, = eng.run([QuerySpec("text", "a " + class_text(name))], k=None)
    assert art.resolved["understood_as"]["texts"] == [CLASS_TEMPLATE.replace("{}", class_text(name))]
    assert [h.id for h in art.hits] == [h.id for h in by_text.hits]
    assert by_text.resolved["understood_as"]["texts"] == [CLASS_TEMPLATE.replace("{}", class_text(name))]
    other = eng.run([QuerySpec("text", "a completely different description")], k=None)[0]
    assert [h.score for h in other.hits] != [h.score for h in by_text.hits]


def test_text_query_on_an_attribute_model_is_refused(ds, tmp_path):
    from zslretrieval.ingest import index_features
    res = select_and_train(ds, "eszsl", seed=0)
    ckpt = save_checkpoint(res.model, res.card, tmp_path / "a.pt", torch.from_numpy(ds.attributes))
    rows = ds.splits["test_unseen"]
    idx = index_features("a", ds.features[rows], [f"s/{r}" for r in rows], [None] * len(rows),
                         model_checkpoint=ckpt, root=tmp_path / "ix")
    with pytest.raises(IncompatibleError, match="--modality text"):
        QueryEngine(idx).run([QuerySpec("text", "zebra")])
