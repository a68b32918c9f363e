"""GeneralModel (text/general/model.py): names to query vectors, the reference vocabulary, how texts are read."""
from __future__ import annotations

import numpy as np

from zslretrieval.text import general as gen


def test_maps_known_names_near_their_own_prototype(general_root):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    names = ["zebra", "tiger shark", "espresso", "golden retriever"]
    v = m.text_to_visual(m.text_embeddings(names))     # the map alone, before any anchor
    assert v.shape == (4, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    for name, x in zip(names, v):   # names it was fitted on land next to their own classifier row
        assert name in [c for c, _ in m.nearest_classes(x, 3)], (name, m.nearest_classes(x, 3))
    # deployed, an exact ImageNet name is its own (unit) classifier row
    cats = gen.imagenet_categories()
    rows = m.embed_texts(names)
    np.testing.assert_allclose(rows, m._protos()[[cats.index(n) for n in names]], atol=1e-6)


def test_reference_queries_are_the_names_projected_without_themselves(general_root):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    from zslretrieval.text.encoder import encode_vocabulary
    names = gen.imagenet_categories()
    t = gen.with_glosses(gen.prompt_embeddings(lambda tpl: encode_vocabulary(names, template=tpl), m.templates),
                         names, m.gloss_weight, encode_vocabulary)
    rows = [0, 340, 999]
    want = gen._predict(m.hparams["mix"], m.ridge, m.dem, m._nbr(), t, exclude_self=True)[rows]
    np.testing.assert_allclose(m.reference[rows], want, atol=1e-5)


def test_free_text_is_not_read_with_a_second_article(general_root):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    said = m.prompts(["a striped animal in the water", "The zebra"])
    assert all(" a a " not in p and not p.lower().startswith(("a a ", "the the ")) for p in said), said
    np.testing.assert_allclose(m.embed_texts(["a  zebra"]), m.embed_texts(["zebra"]), atol=1e-6)
    if m.gloss_weight:     # chosen on val; when on, "understood as" shows the definitions used
        assert m.glosses(["bobcat", "a striped animal"]) == [["small lynx of North America"], []]
        assert m.glosses(["stripes"], kind="attribute") == [[]]
