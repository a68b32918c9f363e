"""``zslr general``: build (or show) the general zero-shot model that lets raw-feature indexes answer text.

Library work is imported inside the command, so ``zslr --help`` stays light.
"""
from __future__ import annotations

import json

import click

_EPILOG = """\b
Examples:
  zslr general                          # efficientnet-lite0: show the model (shipped with the package)
  zslr general --backbone resnet101     # needs the ResNet-101 ImageNet weights offline
  zslr general --rebuild --json

Built from the backbone's ImageNet classifier (its 1000 rows are visual class prototypes) and
the category names' sentence embeddings; no image is used. Choices are made on 200 validation
ImageNet classes, 200 disjoint test classes are only reported. The efficientnet-lite0 model ships
with the package; a model for other weights or another encoder is built on first use (minutes)
and cached in the data folder, which is looked at first. The first line says where it came from.
"""


@click.command("general", epilog=_EPILOG)
@click.option("--backbone", default="efficientnet-lite0", show_default=True,
              help="Backbone with an ImageNet head: efficientnet-lite0 or resnet101.")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="Where the model is cached (default: $ZSLR_DATA or ~/.local/share/zslretrieval/data).")
@click.option("--rebuild", is_flag=True, help="Build again (minutes) even when a cached or shipped model exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the model's selection record as JSON.")
def general_cmd(backbone: str, data_root: str | None, rebuild: bool, as_json: bool) -> None:
    """Build or show the general text -> image-feature model of a backbone (offline, no training images)."""
    from ..text.general import load_general_model

    model = load_general_model(backbone, data_root=data_root, rebuild=rebuild,
                               log=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps({"source": model.source, "path": str(model.path), **model.meta()}, indent=2))
        return
    click.echo(describe_source(model))
    click.echo(format_selection(model))


def describe_source(model) -> str:
    """Where the loaded model came from (``GeneralModel.source``): the package, the data folder or a build now."""
    where = {"shipped": "shipped with the package", "cache": "cached in the data folder",
             "built": "built now and cached"}.get(model.source, model.source)
    return f"model: {where} ({model.path})"


def format_selection(model) -> str:
    """The held-out ImageNet table of a general model: val (chosen on) and test (reported) top-1 per method,
    then the deployed map with its hubness correction (chosen together on val)."""
    from ..correction import ScoreCorrection
    from ..text.general import DESCRIPTION_WORDS
    sel = model.selection
    best = sel["best"]
    sp = sel["split"]
    lines = [f"general model for {model.backbone} ({model.backbone_weights}), encoder {model.encoder}",
             f"ImageNet classes: {sp['train']} train / {sp['val']} val / {sp['test']} test (seed {sel['seed']}); "
             f"metric: {sel['metric']}, chance {sel['chance']:.3f}",
             f"{'method':<10} {'setting':<44} {'val top-1':>9} {'test top-1':>10}"]
    rows = [("dem", f"hidden 512, wd {best['dem']['weight_decay']:g}, {best['dem']['epochs']} epochs", best["dem"]),
            ("ridge", f"alpha {best['ridge']['alpha']:g}", best["ridge"]),
            ("neighbours", f"T {best['neighbours']['T']}, tau {best['neighbours']['tau']:g}", best["neighbours"]),
            ("conse", f"T {best['conse']['T']}", best["conse"])]
    for name, setting, r in rows:
        lines.append(f"{name:<10} {setting:<44} {r['val_top1']:>9.3f} {r['test_top1']:>10.3f}")
    d = best["deployed"]
    corr = ScoreCorrection.from_dict(d["correction"]).describe()
    shares = " + ".join(f"{v:g} {k}" for k, v in d["mix"].items())
    lines.append(f"{'deployed':<10} {shares + ', correction ' + corr:<44} "
                 f"{d['val_top1']:>9.3f} {d['test_top1']:>10.3f} <- chosen on val")
    n = len(model.templates)
    lines.append(f"prompt {model.template!r}" + (f" (+{n - 1} more templates, averaged)" if n > 1 else "")
                 + f"; refit on all 1000 classes; built in {sel['build_seconds']}s")
    bare = [r["val_top1"] for r in sel.get("ridge", []) if not r.get("gloss")]
    if model.gloss_weight and bare:     # glosses had to beat names alone on val to be on
        lines.append(f"names read with their WordNet definitions, weight {model.gloss_weight:g} (ridge val top-1: "
                     f"names alone {max(bare):.3f}, with definitions {best['ridge']['val_top1']:.3f})")
    elif bare:
        lines.append("names read alone: WordNet definitions did not beat them on val")
    a = best.get("attribute_words")
    if a:   # how --attributes words are read, chosen on val classes described by words of their definitions
        lines.append(f"attribute words read as {a['template']!r} (val top-1 {a['val_top1']:.3f}, test "
                     f"{a['test_top1']:.3f}: classes described by {DESCRIPTION_WORDS} words of their definition)")
    an = best.get("anchors")
    if an:  # names of ImageNet classes, and kinds of them, anchored on those classes' prototypes
        none = sel["anchors"][0]
        lines.append(f"names anchored on the ImageNet classes they name: an exact lemma is its class's row; kinds "
                     f"(\"fox\" -> red fox ...) share {an['weight']:g}, ending {an.get('lemmas', 'all')} lemmas "
                     f"(category words: val mAP {an['val_map']:.3f} against {none['val_map']:.3f} unanchored over "
                     f"{an['val_queries']}; test {an['test_map']:.3f} against {none['test_map']:.3f})")
    return "\n".join(lines)
