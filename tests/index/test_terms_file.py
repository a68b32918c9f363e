"""The writer is handed the general model of a raw-feature index (the index layer imports no text
model): with it the terms file is written and keyed by the model, without it the file is kept."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from zslretrieval.correction import ScoreCorrection
from zslretrieval.index.layout import TERMS_GLOB, index_folder, terms_file_name
from zslretrieval.index.terms_file import general_key, read_terms
from zslretrieval.index.writer import IndexWriter
from zslretrieval.ingest import index_features


def _raw_index(tmp_path, n=30, d=6):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    ix = index_features("raw", x, [f"r/{i}" for i in range(n)], [None] * n, root=tmp_path)
    ix.close()
    return index_folder("raw", tmp_path), x


def test_writer_stores_the_general_terms_it_is_handed_and_keeps_them_when_not(tmp_path):
    folder, x = _raw_index(tmp_path)
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((5, x.shape[1])).astype(np.float32)
    general = SimpleNamespace(correction=ScoreCorrection("zscore"), reference=ref, fingerprint="fake-1")
    asked = []

    def general_model(backbone, weights):
        asked.append((backbone, weights))
        return general

    with IndexWriter(folder, create=False, general_model=general_model) as w:
        index_file, _, _ = w.sync_index()
    assert asked == [("features", None)]          # looked up by the manifest's backbone and weights
    path = folder / terms_file_name(index_file)
    stored = read_terms(path, general.correction, general_key(general))
    assert stored is not None and len(stored.entry_ids) == len(x)
    unit_ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    xs = x / np.linalg.norm(x, axis=1, keepdims=True)       # raw "ip" index space: unit rows
    scale, offset = general.correction.terms(xs.astype(np.float64) @ unit_ref.T.astype(np.float64))
    np.testing.assert_allclose(stored.scale, scale, rtol=1e-5)
    np.testing.assert_allclose(stored.offset, offset, rtol=1e-5, atol=1e-7)

    before = path.read_bytes()
    with IndexWriter(folder, create=False) as w:    # a repair: nobody said which general model applies
        w.sync_index()
    assert path.read_bytes() == before

    with IndexWriter(folder, create=False, general_model=lambda b, w: None) as w:   # not built: no terms
        w.sync_index()
    assert list(folder.glob(TERMS_GLOB)) == []
