"""The general model on disk (text/general/cache.py, GeneralModel.save/load) and ``zslr general``."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.errors import CheckpointError
from zslretrieval.text import general as gen


def test_cache_round_trip_and_torn_file(general_root, tmp_path, monkeypatch):
    m = gen.load_general_model("efficientnet-lite0", data_root=general_root)
    path = gen.general_model_path(m.backbone, m.backbone_weights, general_root)
    assert path.is_file()
    again = gen.GeneralModel.load(path)
    t = m.text_embeddings(["a striped animal", "okapi"])
    np.testing.assert_allclose(again.text_to_visual(t), m.text_to_visual(t), atol=1e-6)
    assert m.source == "built" and again.source == "cache" and path.suffix == ".npz"
    torn = tmp_path / "torn.npz"
    torn.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable general model"):
        gen.GeneralModel.load(torn)
    from zslretrieval.text.general import cache
    with monkeypatch.context() as mp:        # no copy in the package either: nothing to load, and no build
        mp.setattr(cache, "SHIPPED_DIR", tmp_path / "no-shipped")
        with pytest.raises(CheckpointError, match="zslr general"):
            gen.load_general_model("efficientnet-lite0", data_root=tmp_path / "empty", build=False)


def test_general_cli_prints_the_heldout_table(general_root):
    r = CliRunner().invoke(cli, ["general", "--data-root", str(general_root)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("model: ")     # where it came from: this session built it into general_root
    assert ("built now" in r.output or "cached in the data folder" in r.output) and str(general_root) in r.output
    assert "<- chosen on val" in r.output and "conse" in r.output and "test top-1" in r.output
    assert "correction" in r.output
    assert "names anchored on the ImageNet classes they name" in r.output
    assert "attribute words read as" in r.output
    assert ("WordNet definitions, weight" in r.output) == bool(gen.load_general_model(data_root=general_root).gloss_weight)
    r = CliRunner().invoke(cli, ["general", "--data-root", str(general_root), "--json"])
    assert set(json.loads(r.stdout)["selection"]["chosen"].split("+")) <= {"dem", "ridge", "nbr"}
    assert json.loads(r.stdout)["source"] in ("built", "cache")


def test_general_cli_says_the_model_is_shipped(tmp_path):
    """An empty data folder: the model comes from the package, in seconds, and says so."""
    r = CliRunner().invoke(cli, ["general", "--data-root", str(tmp_path / "empty")])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("model: shipped with the package (") and "shipped" in r.output.splitlines()[0]
    assert not (tmp_path / "empty" / "general").exists()          # nothing built, nothing written


def test_package_reexports_what_callers_import():
    """The former single module's names callers use (cli, query engine, index writer, scripts, tests) stay
    importable from the package, each the very object its defining module holds."""
    from zslretrieval.text.general import cache, glosses, imagenet, lexicon, maps, model
    assert gen.__all__ and all(hasattr(gen, n) for n in gen.__all__)
    for name, where in [("load_general_model", cache), ("cached_general_model", cache), ("HEAD_BACKBONES", imagenet),
                        ("DESCRIPTION_WORDS", lexicon), ("with_glosses", glosses), ("fit_ridge", maps),
                        ("imagenet_lemmas", lexicon), ("GeneralModel", model)]:
        assert getattr(gen, name) is getattr(where, name), name
