"""Build the general model that ships inside the package (``zslretrieval/text/general/shipped/``).

    python scripts/build_general_model.py                      # efficientnet-lite0, seed 0
    python scripts/build_general_model.py --out /tmp/lite0.npz

Runs the build protocol exactly as a first query would (``text.general.build_general_model``:
every choice on val ImageNet classes, seed 0, the default ONNX sentence encoder) and writes the
model's numpy file, so users get it without minutes of building. ``tests/text/test_general_shipped.py``
rebuilds it and checks it is this file. One torch thread, as the tests' build uses: DEM's tiny steps
gain nothing from a second thread on a shared machine, and the same thread count keeps the two builds'
floating-point sums in the same order.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: the package's shipped/<backbone>.npz")
    args = ap.parse_args()

    import torch

    from zslretrieval.text.encoder import backend_name
    from zslretrieval.text.general import build_general_model, head_backbone, shipped_model_path
    if backend_name() != "onnx":
        raise SystemExit(f"ZSLR_TEXT_ENCODER={backend_name()!r}: the shipped model is built with the default "
                         "ONNX encoder, the one queries use; unset it")
    name = head_backbone(args.backbone)
    out = args.out or shipped_model_path(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = build_general_model(name, seed=args.seed, log=lambda m: print(m, flush=True))
    model.save(out)
    print(f"{name}: {model.method} {model.hparams} -> {out} ({out.stat().st_size / 1e6:.2f} MB, "
          f"built in {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
