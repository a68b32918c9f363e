"""`zslr demo` end to end through the CLI at small scale, with a tiny pixel backbone for speed."""
import re

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from zslretrieval.cli import cli
from zslretrieval.features.backbones import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, Backbone, PreprocessSpec

TINY = "tiny-rgb-test"
ENCODED: list[int] = []   # batch sizes seen by the tiny backbone


class _TinyNet(nn.Module):
    """(B, 3, 32, 32) -> (B, 48): a 4x4 colour layout; fast, and it does see colour and place."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))  # Backbone reads its device from a parameter

    def forward(self, x):
        ENCODED.append(len(x))
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) * self.scale


class _CountingBackbone(Backbone):
    def cpu_forward(self, example, kind=None):
        return self.forward  # a traced or exported graph would run without the Python-side count in _TinyNet.forward


def _load_tiny(weights=None, device="cpu"):
    return _CountingBackbone(TINY, _TinyNet(), 48, PreprocessSpec(32, 32, IMAGENET_MEAN, IMAGENET_STD), "test:tiny")


if TINY not in BACKBONES:
    BACKBONES.add(TINY, _load_tiny)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    ENCODED.clear()
    res = CliRunner().invoke(cli, ["demo", "--out", str(out), "--seed", "3", "--images-per-class", "6",
                                   "--image-size", "48", "--backbone", TINY, "--device", "cpu"])
    return out, res, sum(ENCODED)


def test_demo_prints_map_and_writes_gallery(demo_run):
    out, res, _ = demo_run
    assert res.exit_code == 0, res.output + repr(res.exception)
    text = res.output
    m = re.search(r"mAP (\d\.\d+)\s+chance (\d\.\d+)", text)
    assert m, text
    mean_ap, chance = float(m.group(1)), float(m.group(2))
    assert 0.0 <= mean_ap <= 1.0
    assert chance == pytest.approx(6 / 384, abs=1e-3)  # gallery = all 64 x 6 images, 6 per unseen class
    rows = re.findall(r"^(\S+_on_\S+)\s+(\d) of 5\s+(\d\.\d{3})\s+6\s", text, re.M)
    assert len(rows) == 4 and mean_ap == pytest.approx(sum(float(r[2]) for r in rows) / 4, abs=2e-3)
    # each row's hit count is the number of '+' (the queried class) among that query's printed top 5
    for name, hits, _ in rows:
        block = re.search(rf"^top 5 for '[^']+' \(class {name};.*\n((?:  .*\n){{5}})", text, re.M)
        assert block, name
        assert block.group(1).count("  + #") == int(hits), block.group(1)
    html = (out / "gallery.html").read_text()
    assert html.count("<section>") == 4 and "data:image" in html
    assert (out / "indexes" / "demo").is_dir()


def test_demo_auto_uses_the_model_best_on_validation(demo_run):
    out, res, _ = demo_run
    assert res.exit_code == 0
    from types import SimpleNamespace

    from zslretrieval.demo.pipeline import AUTO_MODELS, validation_mixed_map
    from zslretrieval.models.checkpoint import load_checkpoint

    val, apart = {}, {}
    for m in AUTO_MODELS:  # each candidate trained through the same custom-dataset path
        assert (out / f"{m}.pt").is_file()
        card = load_checkpoint(out / f"{m}.pt")[1]
        val[m] = validation_mixed_map(SimpleNamespace(selection=card.selection))
        assert 0.0 <= val[m] <= 1.0
        n = re.search(rf"{m}: validation mAP .*its (\d+) unseen queries get (\d+) different top-5", res.output)
        apart[m] = n is not None and n.group(1) == n.group(2)
    usable = [m for m in AUTO_MODELS if apart[m]] or list(AUTO_MODELS)
    best = max(usable, key=lambda m: val[m])
    assert f"using {best} (best on validation classes" in res.output
    # the index was re-embedded with that model's checkpoint, and the report says which
    assert f"model={best}" in res.output and f"checkpoint: {out / (best + '.pt')}" in res.output


def test_demo_unknown_model_fails_before_any_work(tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--model", "demm"])
    assert res.exit_code == 2 and "demm" in res.output and "dem" in res.output
    assert not (tmp_path / "d").exists()


def test_demo_index_is_queryable_by_zslr_query(demo_run):
    out, res, _ = demo_run
    assert res.exit_code == 0
    q = CliRunner().invoke(cli, ["query", "--index", str(out / "indexes" / "demo"), "--attributes", "stripes,water",
                                 "--top-k", "3"])
    assert q.exit_code == 0, q.output
    assert q.output.count(".jpg") == 3


def test_demo_encodes_each_image_once(demo_run):
    _, res, n_encoded = demo_run
    assert res.exit_code == 0
    assert "384 images indexed (384 encoded, 0 unchanged, 0 failed)" in res.output
    # The model pass re-embeds stored features and training reads them from the primed cache.
    assert "384 entries re-embedded (0 encoded, 384 unchanged)" in res.output
    assert n_encoded == 384


def test_demo_bad_device_is_input_error(tmp_path):
    res = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path / "d"), "--device", "gpu"])
    assert res.exit_code == 2
    # the usage error names the bad value and every accepted one, before anything is written
    assert "'gpu' is not one of 'auto', 'cpu', 'cuda'" in res.output, res.output
    assert not (tmp_path / "d").exists()


def test_zslr_train_on_generated_folders(tmp_path):
    """The custom-dataset path of `zslr train`, on what the generator writes."""
    from zslretrieval.demo.generator import generate_dataset

    g = generate_dataset(tmp_path / "data", seed=1, images_per_class=4, image_size=48)
    ckpt = tmp_path / "m.pt"
    res = CliRunner().invoke(cli, ["train", "--images", str(g.images_dir), "--class-attributes",
                                   str(g.class_attributes_csv), "--unseen", str(g.unseen_file),
                                   "--backbone", TINY, "--model", "eszsl", "--out", str(ckpt)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    from zslretrieval.models.checkpoint import load_checkpoint

    _, card, sem = load_checkpoint(ckpt)
    assert sorted(card.unseen_classes) == sorted(g.unseen) and card.vocabulary[:2] == ["circle", "square"]
    assert card.feature_source == TINY and tuple(sem.shape) == (16, 16)
    bad = CliRunner().invoke(cli, ["train", "--images", str(g.images_dir), "--class-attributes",
                                   str(g.class_attributes_csv), "--unseen", str(tmp_path / "missing.txt"),
                                   "--backbone", TINY, "--model", "eszsl"])
    assert bad.exit_code == 2 and "unseen-classes file not found" in bad.output


def test_distinct_query_rankings_spots_a_model_that_cannot_tell_queries_apart(tmp_path):
    """Two unseen classes whose descriptors differ only outside the span of the seen ones: a linear
    model fitted on the seen classes (SAE) ranks images the same for both, DEM-like spaces need not."""
    import numpy as np

    from zslretrieval.demo.pipeline import distinct_query_rankings
    from zslretrieval.models import create_model
    from zslretrieval.models.checkpoint import ModelCard, save_checkpoint

    rng = np.random.default_rng(0)
    # 4 attributes; seen classes use attributes 0, 1 only; unseen ones differ in attributes 2 vs 3
    sem = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [0.5, 0.5, 1, 0], [0.5, 0.5, 0, 1]], np.float32)
    sem /= np.linalg.norm(sem, axis=1, keepdims=True)
    x = rng.normal(size=(60, 10)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    x += np.eye(10, dtype=np.float32)[y] * 3
    model = create_model("sae", 10, [4], {"lam": 1.0, "direction": "encoder"})
    model.fit(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(sem[:3]))
    names = ["a", "b", "c", "u1", "u2"]
    card = ModelCard(model="sae", hparams=model.hparams.to_dict(), feature_dim=10, semantic_dims=[4], dataset="toy",
                     metric=model.metric, class_names=names, seen_classes=names[:3], unseen_classes=names[3:],
                     vocabulary=["p", "q", "r", "s"], semantic_norm="l2")
    ckpt = save_checkpoint(model, card, tmp_path / "sae.pt", torch.from_numpy(sem))
    assert distinct_query_rankings(ckpt, x) == 1          # both unseen queries: the same top-5
    sem2 = sem.copy()
    sem2[4] = sem[0]                                      # now u2 differs from u1 inside the seen span
    ckpt2 = save_checkpoint(model, card, tmp_path / "sae2.pt", torch.from_numpy(sem2))
    assert distinct_query_rankings(ckpt2, x) == 2
