"""``zslr demo``: generate images, train on seen classes, retrieve unseen ones by attributes."""
from __future__ import annotations

from pathlib import Path

import click

from ..features import DEFAULT_BACKBONE

_EPILOG = """\b
Everything runs offline on this machine (about 1-2 minutes on 2 CPU cores once installed):
  zslr demo                              # writes ./zslr-demo/
  zslr demo --out /tmp/d --seed 1 --images-per-class 20
Then query the index it built yourself:
  zslr query --index zslr-demo/indexes/demo --attributes stripes,water --html out.html
"""


@click.command("demo", epilog=_EPILOG)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("zslr-demo"),
              show_default=True, help="Folder for images, checkpoint, index and gallery.html.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the images, the unseen classes, the splits and training.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--images-per-class", type=click.IntRange(min=2), default=None,
              help="Generated images per class of the 64 classes (default: DemoConfig's, 16).")
@click.option("--image-size", type=click.IntRange(32, 1024), default=224, show_default=True,
              help="Side of the generated images in pixels.")
@click.option("--backbone", default=DEFAULT_BACKBONE, show_default=True,
              help="Offline image backbone (see features.backbones).")
@click.option("--model", default="auto", show_default=True,
              help="Zero-shot model to train, or auto: train dem and sae and keep the best "
                   "on the validation classes.")
@click.option("--quiet", is_flag=True, help="Only print the results, not the progress of each step.")
def demo_cmd(out, seed, device, images_per_class, image_size, backbone, model, quiet):
    """Zero-shot retrieval end to end on generated images of shapes, colours, textures and scenes."""
    from ..demo import DemoConfig, format_report, run_demo

    # None keeps the library's default, so the world's size is stated in one place (DemoConfig).
    sizes = {} if images_per_class is None else {"images_per_class": images_per_class}
    cfg = DemoConfig(out=out, seed=seed, device=device, **sizes, image_size=image_size, backbone=backbone, model=model,
                     log=None if quiet else (lambda msg: click.echo(msg, err=True)))
    click.echo(format_report(run_demo(cfg)))
