"""``zslr train`` / ``zslr eval`` through click's CliRunner on generated data."""
from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from zslretrieval.cli import cli
from zslretrieval.cli.train import parse_hparams
from zslretrieval.errors import InvalidInputError
from zslretrieval.models import create_model
from zslretrieval.models.checkpoint import ModelCard, load_checkpoint, save_checkpoint

DEM_FAST = ["--hparam", "dem.hidden=16", "--hparam", "dem.epochs=4", "--hparam", "dem.batch_size=64"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def runner(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZSLR_DATA", str(tmp_path / "no-data-here"))
    return CliRunner()


def test_train_writes_checkpoint_and_eval_reads_it(runner, tmp_path):
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--model", "eszsl", "--seed", "1"])
    assert res.exit_code == 0, res.output
    ckpt = tmp_path / "runs" / "synthetic-eszsl-seed1.pt"
    assert ckpt.is_file() and (tmp_path / "runs" / "synthetic-eszsl-seed1.pt.card.json").is_file()
    assert f"checkpoint: {ckpt.relative_to(tmp_path)}" in res.output and "chosen:" in res.output
    model, card, sem = load_checkpoint(ckpt)
    assert card.seed == 1 and card.dataset == "synthetic" and sem.shape == (24, 32)
    assert card.selection["val_top1"] > 0

    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--seed", "1", "--checkpoint", str(ckpt),
                              "--metric", "top1", "--metric", "map", "--metric", "gzsl", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    (r,) = report["results"]
    assert r["model"] == "eszsl" and r["checkpoint"] == str(ckpt)
    assert set(r["metrics"]) >= {"top1", "map", "gzsl_u", "gzsl_s", "gzsl_h", "gzsl_cal_h", "gzsl_calibration"}
    assert r["metrics"]["top1"] > 2 / 6  # 6 unseen classes, chance 1/6
    # mAP went through a real index + catalog + class queries and matched the direct computation
    eng = r["map_engine"]
    assert eng["map"] == r["metrics"]["map"] and abs(eng["map"] - eng["direct_map"]) <= 1e-6
    assert len(eng["per_class_ap"]) == 6
    assert abs(sum(eng["per_class_ap"].values()) / 6 - eng["map"]) < 1e-9
    assert report["data"]["splits"]["test_unseen"]["classes"] == 6 and report["seed"] == 1


def test_eval_trains_several_models_and_prints_one_json(runner):
    t0 = time.perf_counter()
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--model", "eszsl", "--model", "dem",
                              "--metric", "top1", "--metric", "map", "--json", *DEM_FAST])
    wall = time.perf_counter() - t0
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)  # stdout is exactly one JSON object; progress went to stderr
    assert [r["model"] for r in report["results"]] == ["eszsl", "dem"]
    for r in report["results"]:
        assert set(r["metrics"]) == {"top1", "map"}
        assert r["val_top1"] is not None and r["selection"]
        # train_seconds is the whole select_and_train (selection + refit): measured, inside the run's wall
        # time, and at least the refit alone
        assert isinstance(r["train_seconds"], float) and 0 < r["train_seconds"] <= report["wall_seconds"] <= wall + 1e-3
        assert r["refit_seconds"] <= r["train_seconds"]
    assert sum(r["train_seconds"] for r in report["results"]) <= report["wall_seconds"] + 1e-3  # ms rounding
    dem = report["results"][1]
    assert dem["hparams"]["hidden"] == 16 and dem["hparams"]["epochs"] == dem["epochs"] <= 4
    assert report["dataset"] == "synthetic" and report["wall_seconds"] > 0


def test_no_engine_reports_the_direct_map(runner):
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--model", "eszsl", "--metric", "map",
                              "--no-engine", "--json"])
    assert res.exit_code == 0, res.output
    (r,) = json.loads(res.stdout)["results"]
    assert r["map_engine"] is None and 0 < r["metrics"]["map"] <= 1


def test_eval_table_output(runner):
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--model", "sae", "--metric", "top1"])
    assert res.exit_code == 0, res.output
    assert "val top-1" in res.stdout and "sae" in res.stdout and "top1" in res.stdout


def test_missing_benchmark_exits_2_naming_the_file(runner, tmp_path):
    res = runner.invoke(cli, ["eval", "--dataset", "cub", "--metric", "map"])
    assert res.exit_code == 2, res.output
    assert "att_splits.mat" in res.output or "res101.mat" in res.output
    assert str(tmp_path / "no-data-here") in res.output


def test_checkpoint_with_other_dims_is_incompatible(runner, tmp_path):
    model = create_model("eszsl", 7, [32], {})
    card = ModelCard(model="eszsl", hparams=model.hparams.to_dict(), feature_dim=7, semantic_dims=[32],
                     dataset="elsewhere")
    path = save_checkpoint(model, card, tmp_path / "other.pt")
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--checkpoint", str(path), "--metric", "top1"])
    assert res.exit_code == 2, res.output
    assert "7-d image features" in res.output and "96-d" in res.output


def test_usage_errors_exit_2(runner, tmp_path):
    res = runner.invoke(cli, ["train", "--model", "eszsl"])
    assert res.exit_code == 2 and "--dataset" in res.output
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--images", str(tmp_path), "--model", "dem"])
    assert res.exit_code == 2 and "mutually exclusive" in res.output
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--model", "desm"])
    assert res.exit_code == 2 and "unknown model 'desm'" in res.output and "dem" in res.output
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--model", "dem", "--hparam", "hiddn=3"])
    assert res.exit_code == 2 and "hiddn" in res.output
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--model", "eszsl", "--model", "dem",
                              "--hparam", "hidden=3"])
    assert res.exit_code == 2 and "eszsl: unknown hyper-parameter(s) ['hidden']" in res.output
    res = runner.invoke(cli, ["train", "--dataset", "synthetic", "--model", "dem", "--hparam", "dme.hidden=3"])
    assert res.exit_code == 2 and "unknown model 'dme'" in res.output
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--metric", "top1"])
    assert res.exit_code == 2 and "--model" in res.output
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--model", "eszsl", "--metric", "acc"])
    assert res.exit_code == 2 and "acc" in res.output
    res = runner.invoke(cli, ["eval", "--dataset", "synthetic", "--checkpoint", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "nope.pt" in res.output


def test_train_custom_images_calls_the_custom_loader(runner, tmp_path, monkeypatch):
    from zslretrieval.data import custom
    from zslretrieval.data.synthetic import make_synthetic

    calls = {}

    def fake(images_dir, class_attributes_csv, unseen_file, *, backbone, seed, device):
        calls.update(images=images_dir, csv=class_attributes_csv, unseen=unseen_file, backbone=backbone, seed=seed)
        ds = make_synthetic(seed=seed)
        ds.name = "custom-pets"
        return ds

    monkeypatch.setattr(custom, "load_custom_dataset", fake)
    res = runner.invoke(cli, ["train", "--images", "imgs", "--class-attributes", "attrs.csv", "--unseen", "u.txt",
                              "--model", "dem", "--seed", "2", "--out", "pets.pt", *DEM_FAST])
    assert res.exit_code == 0, res.output
    assert calls == {"images": "imgs", "csv": "attrs.csv", "unseen": "u.txt", "backbone": "efficientnet-lite0",
                     "seed": 2}
    _, card, _ = load_checkpoint(tmp_path / "pets.pt")
    assert card.dataset == "custom-pets" and card.model == "dem"


def test_parse_hparams():
    assert parse_hparams(("hidden=700", "lr=1e-4", "standardize=true", "direction=decoder",
                          "fusion_weights=[1, 0.5]")) == {"hidden": 700, "lr": 1e-4, "standardize": True,
                                                         "direction": "decoder", "fusion_weights": [1, 0.5]}
    with pytest.raises(InvalidInputError, match="key=value"):
        parse_hparams(("hidden",))
