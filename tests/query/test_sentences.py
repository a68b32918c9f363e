"""Free-text queries through a sentence map fitted on the training photos' own sentences (tiny CUB)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zslretrieval.text as text
from zslretrieval.data.xlsa17 import load_xlsa17
from zslretrieval.errors import IncompatibleError
from zslretrieval.models.checkpoint import load_checkpoint, save_checkpoint
from zslretrieval.protocol import select_and_train
from zslretrieval.query.prepare import QueryPreparer
from zslretrieval.query.sentences import (ANCHORS, BETAS, LAMBDAS, SentenceMap, average_precision, fit_sentence_map, query_scores,
                                          sample_sentences, sentence_descriptor)
from zslretrieval.query.spec import QuerySpec

from ..data.photo_fakes import ColourFeatures, make_fake_cub
from ..data.test_descriptions import bag_of_words, write_texts

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # one fit for the module: selection + the map's val choice are the slow part
    tmp_path = tmp_path_factory.mktemp("sentences")
    mp = pytest.MonkeyPatch()
    mp.setenv("ZSLR_CACHE", str(tmp_path / "cache"))
    mp.setattr(text, "encode_texts", lambda texts, batch_size=64: bag_of_words(texts))
    g = make_fake_cub(tmp_path)
    write_texts(g.root / "CUB_200_2011", g.rel_paths)
    ds = load_xlsa17(g.root, "CUB", name="cub", feature_fn=ColourFeatures(), progress=False)
    mods = ("attributes", "descriptions")
    res = select_and_train(ds, "eszsl", seed=0, modalities=mods)
    smap = fit_sentence_map(ds, res.card, seed=0)
    sem = torch.from_numpy(ds.semantic_matrix(mods)[0])
    path = save_checkpoint(res.model, res.card, tmp_path / "m.pt", sem, sentence_map=smap.to_tensors())
    yield ds, smap, path
    mp.undo()


def test_map_is_chosen_on_val_and_saved_with_the_checkpoint(trained):
    ds, smap, path = trained
    sel = smap.selection
    assert sel["n_fit_sentences"] == 3 * 3 * 3          # train photos only (3 classes x 3 photos x 3 sentences)
    assert sel["n_refit_sentences"] == 4 * 3 * 3        # then trainval (val class added)
    assert len(sel["candidates"]) == len(LAMBDAS) * len(BETAS) * len(ANCHORS) and sel["chosen"] in [
        {k: c[k] for k in ("lam", "beta", "gamma", "tau", "scope")} for c in sel["candidates"]]
    assert sel["val_map"] == max(c["val_map"] for c in sel["candidates"])
    model, card, _ = load_checkpoint(path)
    back = SentenceMap.from_tensors(model.sentence_map)
    np.testing.assert_array_equal(back.W, smap.W)
    assert (back.lam, back.beta, back.gamma, back.tau, back.dims, back.encoder) == \
        (smap.lam, smap.beta, smap.gamma, smap.tau, smap.dims, smap.encoder)
    np.testing.assert_array_equal(back.class_sem, smap.class_sem)
    assert back.class_text.shape == (6, text.DIM) and back.scope == smap.scope
    assert back.anchor_mask.tolist() == [c in ("005.Eps_bird", "006.Zeta_bird") for c in ds.class_names]
    d = back.descriptors(bag_of_words(["a red bird", "blue"]))
    assert d.shape == (2, 5 + text.DIM)
    np.testing.assert_allclose(np.linalg.norm(d[:, :5], axis=1), 1, atol=1e-5)   # each block unit, like training
    np.testing.assert_allclose(np.linalg.norm(d[:, 5:], axis=1), 1, atol=1e-5)


def test_a_sentence_about_an_unseen_species_finds_it(trained):
    ds, _, path = trained
    model, card, sem = load_checkpoint(path)
    prep = QueryPreparer(model, card, sem, dim=3, index_name="t", general=lambda: pytest.fail("no general model"))
    unseen = ds.split_indices("test_unseen")
    x = ds.features[unseen]
    for words, species in [("green and blue", "005.Eps_bird"), ("red and blue", "006.Zeta_bird")]:
        p = prep.prepare(QuerySpec("text", f"a small {words} bird"))
        how = p.resolved["understood_as"]
        assert how["texts"] == [f"a small {words} bird"] and "sentence map" in how["model"]
        # read as: the 5 strongest attributes of the descriptor's attribute block, the classes by cosine
        top = np.argsort(-p.descriptor[:5])
        assert [a["name"] for a in how["nearest_attributes"]] == [card.vocabulary[j] for j in top if p.descriptor[j] > 0]
        cos = [c["cosine"] for c in how["nearest_classes"]]
        assert len(cos) == 5 and cos == sorted(cos, reverse=True)
        assert {c["name"] for c in how["nearest_classes"] if not c["seen"]} <= {"005.Eps_bird", "006.Zeta_bird"}
        s = query_scores(model, x, p.descriptor[None])[:, 0]
        rel = (ds.labels[unseen] == ds.class_names.index(species))[:, None]
        assert average_precision(s[:, None], rel)[0] == 1.0


def test_a_map_of_another_layout_or_encoder_is_refused(trained):
    _, smap, path = trained
    model, card, sem = load_checkpoint(path)
    other = SentenceMap(smap.W, smap.b, smap.modalities, smap.dims, encoder="someone-else==1").to_tensors()
    with pytest.raises(IncompatibleError, match="someone-else"):
        sentence_descriptor(QuerySpec("text", "red"), other, card, sem)
    card.semantic_dims = [5]
    with pytest.raises(IncompatibleError, match="descriptors"):
        QueryPreparer(model, card, sem, dim=3, index_name="t", general=None).prepare(QuerySpec("text", "red"))


def test_average_precision_and_sampling():
    s = np.array([[0.9, 0.1], [0.8, 0.9], [0.1, 0.5]])
    rel = np.array([[True, True], [False, False], [True, False]])
    np.testing.assert_allclose(average_precision(s, rel), [(1 + 2 / 3) / 2, 1 / 3])
    photo = np.repeat(np.arange(5), 3)
    pick = sample_sentences(np.array([1, 3]), photo, 3, seed=0)
    assert set(photo[pick[:2]]) == {1, 3} and set(photo[pick]) <= {1, 3} and len(set(pick)) == 3
    np.testing.assert_array_equal(pick, sample_sentences(np.array([1, 3]), photo, 3, seed=0))


def test_unseen_scope_anchors_only_on_classes_the_model_was_not_trained_on(trained):
    ds, smap, _ = trained
    e = bag_of_words(["a red bird", "green and blue"])
    w = SentenceMap(smap.W, smap.b, smap.modalities, smap.dims, class_text=smap.class_text, class_sem=smap.class_sem,
                    gamma=1.0, tau=0.02, scope="unseen", anchor_mask=smap.anchor_mask).class_weights(e)
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
    assert np.all(w[:, ~smap.anchor_mask] == 0) and np.all(w[:, smap.anchor_mask] > 0)
    everywhere = SentenceMap(smap.W, smap.b, smap.modalities, smap.dims, class_text=smap.class_text,
                             class_sem=smap.class_sem, gamma=1.0, tau=0.02, scope="all").class_weights(e)
    assert ds.class_names[int(np.argmax(everywhere[0]))] == "001.Alpha_bird"   # "red" reads like the red class
