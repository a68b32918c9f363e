"""``zslr train`` and ``zslr eval``: the benchmark protocol from the command line.

Both build a typed config (:class:`~zslretrieval.protocol.TrainConfig` /
:class:`~zslretrieval.protocol.EvalConfig`) and make one library call; progress goes to stderr
so ``--json`` output on stdout stays one parseable object.
"""
from __future__ import annotations

import ast
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import click

from ..errors import InvalidInputError
from ..features import DEFAULT_BACKBONE

if TYPE_CHECKING:
    from ..protocol import DataConfig


def parse_hparams(items: tuple[str, ...]) -> dict:
    """``("hidden=700", "lr=1e-4", "standardize=true")`` -> ``{"hidden": 700, "lr": 0.0001, "standardize": True}``.

    Values are Python/JSON literals (numbers, true/false, lists, quoted strings); anything else
    stays a string, so ``direction=decoder`` works without quotes.
    """
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"--hparam {item!r}: expected key=value, e.g. --hparam hidden=700")
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "false"):
            value = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                try:
                    value = ast.literal_eval(raw)
                except (ValueError, SyntaxError):
                    value = raw
        out[key] = value
    return out


def _data_options(f):
    options = [
        click.option("--dataset", "dataset", default=None, help="Benchmark name (see the data registry)."),
        click.option("--data-root", default=None, type=click.Path(file_okay=False),
                     help="Folder holding the benchmark data (default: $ZSLR_DATA)."),
        click.option("--images", default=None, type=click.Path(file_okay=False),
                     help="Your own data: a folder with one sub-folder of images per class. With --dataset: "
                          "that benchmark's photos (default: its release folder under the data root)."),
        click.option("--class-attributes", default=None, type=click.Path(dir_okay=False),
                     help="With --images: CSV 'class,attr1,attr2,...'."),
        click.option("--unseen", default=None, type=click.Path(dir_okay=False),
                     help="With --images: file listing the held-out (unseen) classes, one per line."),
        click.option("--backbone", default=None,
                     help="Feature extractor for photos (--images, or a benchmark read from its photos); "
                          f"features are cached per backbone and photo content [default: the benchmark's "
                          f"val-chosen one (CUB: efficientnet-lite2), else {DEFAULT_BACKBONE}]."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--device", default="cpu", show_default=True, help="torch device for training."),
        click.option("--hparam", "hparams", multiple=True, metavar="KEY=VALUE",
                     help="Fix a hyper-parameter (repeatable); the rest of the grid is still searched on val. "
                          "MODEL.KEY=VALUE applies to one model only (e.g. dem.hidden=300)."),
        click.option("--modality", "modalities", multiple=True, metavar="NAME",
                     help="Semantic modalities to fuse (repeatable; default: attributes): attributes, text (class "
                          "names through the sentence encoder), descriptions (mean sentence embedding of each class's "
                          "human descriptions, text/<class>/<file>.txt beside the photos), or a dataset's own (CUB: sent)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _data_config(kw: dict) -> DataConfig:
    from ..protocol import DataConfig

    return DataConfig(dataset=kw["dataset"], data_root=kw["data_root"], images=kw["images"],
                      class_attributes=kw["class_attributes"], unseen=kw["unseen"], backbone=kw["backbone"],
                      seed=kw["seed"], device=kw["device"])


def _features_line(info: dict, load_seconds: float) -> str:
    """Which features a result used, and what loading them cost (extracted now or read from the cache)."""
    line = f"features: {info.get('description') or info.get('source')}"
    if "n_extracted" in info:
        line += (f"; {info['n_extracted']} of {info.get('n_images', '?')} extracted, the rest from the cache "
                 f"{info.get('cache')}")
    if "seconds" in info:
        line += f"; features step {info['seconds']:.1f}s"
    return line + f"; data loaded in {load_seconds:.1f}s"


def _log(msg: str) -> None:
    click.echo(msg, err=True)


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose choices are computed on first use (e.g. ``zslr eval --help``), so that
    defining the command does not import the library that knows them (metrics -> searchers -> torch)."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True):
        self._load, self._choices = load, None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> Sequence[str]:  # type: ignore[override]
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices


def _metric_names() -> list[str]:
    from ..metrics import AccuracyCalculator

    return AccuracyCalculator.metric_names()


@click.command("train")
@click.option("--model", "model", required=True, help="Model name (eszsl, sae, dem, ...).")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Checkpoint path (default: runs/<dataset>-<model>-seed<N>.pt).")
@click.option("--sentence-map", is_flag=True,
              help="Also learn free-text queries (--text) from the training photos' own human descriptions "
                   "(text/<class>/<file>.txt beside the photos): a map chosen on val, kept in the checkpoint.")
@_data_options
def train_cmd(model: str, out: str | None, sentence_map: bool, **kw) -> None:
    """Choose hyper-parameters on validation classes, refit on all seen classes, save a checkpoint."""
    from ..protocol import TrainConfig, train_from_config

    cfg = TrainConfig(model=model, data=_data_config(kw), out=out, hparams=parse_hparams(kw["hparams"]),
                      modalities=tuple(kw["modalities"]) or ("attributes",), sentence_map=sentence_map)
    report = train_from_config(cfg, log=_log)
    sel = report.selection
    click.echo(f"model {report.card.model} on {report.card.dataset} (seed {report.card.seed})")
    click.echo(_features_line(report.features, report.load_seconds))
    click.echo(f"{'candidate':<60} {'val top-1':>9} {'epoch':>6}")
    cands = sel["candidates"]
    # what the candidates share (dataset facts, an ensemble's member settings) is in the chosen line
    shared = {k for k, v in cands[0]["hparams"].items() if all(c["hparams"].get(k) == v for c in cands)} \
        if len(cands) > 1 else set()
    for c in cands:
        hp = ", ".join(f"{k}={v}" for k, v in c["hparams"].items() if k not in shared) or "(the only one)"
        click.echo(f"{hp:<60} {c['val_top1']:>9.4f} {str(c.get('best_epoch') or '-'):>6}")
    click.echo(f"chosen: {sel['chosen']}" + (f", epochs={sel['epochs']}" if sel.get("epochs") else "")
               + f"  (val top-1 {sel['val_top1']:.4f}, GZSL calibration {sel['gzsl_calibration']:.4g})")
    click.echo(f"selection {sel['selection_seconds']:.1f}s, refit {report.card.train_seconds:.1f}s, "
               f"total {report.total_seconds:.1f}s")
    click.echo(f"checkpoint: {report.checkpoint}")
    click.echo(f"card: {report.card_path}")

@click.command("eval")
@click.option("--model", "models", multiple=True,
              help="Train this model with the protocol, then evaluate (repeatable to compare models).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="Evaluate a saved checkpoint instead of training.")
@click.option("--metric", "metrics", multiple=True, type=LazyChoice(_metric_names),
              help="Metric to report (repeatable; default: top1, map, gzsl, gzsl_map, hubness).")
@click.option("--calibration", default=None, type=float,
              help="GZSL calibrated-stacking offset (default: the one chosen on val at training time).")
@click.option("--searcher", default="numpy", show_default=True, help="Searcher backend for mAP rankings.")
@click.option("--engine/--no-engine", default=True, show_default=True,
              help="Measure mAP through the query engine (index + catalog + class queries), checked "
                   "against the direct computation; --no-engine reports the direct value only.")
@click.option("--raw-scores", is_flag=True,
              help="Rank retrieval metrics by raw model scores, without the per-image score correction "
                   "(seen-class bias, hubness) chosen on validation classes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@_data_options
def eval_cmd(models: tuple[str, ...], checkpoint: str | None, metrics: tuple[str, ...], calibration: float | None,
             searcher: str, engine: bool, raw_scores: bool, as_json: bool, **kw) -> None:
    """Evaluate on the unseen test classes: per-class top-1, mAP, generalized ZSL."""
    from ..protocol import DEFAULT_METRICS, EvalConfig, eval_from_config, to_json

    cfg = EvalConfig(data=_data_config(kw), models=models, checkpoint=checkpoint,
                     metrics=metrics or DEFAULT_METRICS, calibration=calibration,
                     hparams=parse_hparams(kw["hparams"]), modalities=tuple(kw["modalities"]) or ("attributes",),
                     searcher=searcher, engine=engine, raw_scores=raw_scores)
    report = eval_from_config(cfg, log=_log)
    if as_json:
        click.echo(to_json(report))
        return
    splits = report["data"]["splits"]
    click.echo(f"dataset {report['dataset']} (seed {report['seed']}): "
               + ", ".join(f"{k} {v['images']} img/{v['classes']} cls" for k, v in splits.items()))
    click.echo(_features_line(report["features"], report["load_seconds"]))
    keys = sorted({k for r in report["results"] for k in r["metrics"]})
    head = f"{'model':<8} {'val top-1':>9} " + " ".join(f"{k:>10}" for k in keys) + f" {'train s':>8} {'eval s':>7}"
    click.echo(head)
    for r in report["results"]:
        val = f"{r['val_top1']:.4f}" if r["val_top1"] is not None else "-"
        cells = " ".join(f"{r['metrics'][k]:>10.4f}" if k in r["metrics"] else f"{'-':>10}" for k in keys)
        click.echo(f"{r['model']:<8} {val:>9} {cells} {r['train_seconds']:>8.1f} {r['eval_seconds']:>7.1f}")
    for r in report["results"]:
        click.echo(f"{r['model']}: hparams {r['hparams']}")
        if r.get("retrieval_correction"):
            from ..correction import ScoreCorrection
            click.echo(f"{r['model']}: retrieval score correction "
                       f"{ScoreCorrection.from_dict(r['retrieval_correction']).describe()} (chosen on val)")
        if r.get("map_engine"):
            e = r["map_engine"]
            click.echo(f"{r['model']}: through the engine "
                       + ", ".join(f"{k} {e[k]:.6f} = direct {e['direct_' + k]:.6f}"
                                   for k in ("map", "gzsl_map") if k in e) + f" ({e['seconds']:.1f}s)")
    click.echo(f"wall time {report['wall_seconds']:.1f}s")
