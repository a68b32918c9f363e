"""A backbone's CPU forward pass through ONNX Runtime, the fastest of the CPU forwards here.

PyTorch's CPU kernels for depthwise and 1x1 convolutions are slow: efficientnet-lite0 at one thread
runs ~45 ms per image eager (batch 1), ~30 ms as a frozen TorchScript graph, and ~13 ms in ONNX
Runtime (batch 4; 2-core AMD EPYC, see scripts/bench_index.py). The network is exported once to an
ONNX graph (torch's TorchScript-based exporter: no compiler, ~2.5 s), which is cached on disk under
a key made of every weight's bytes, so a changed weight file can never reuse a stale graph.

Each session runs on the calling thread only (``intra_op_num_threads=1``): the ingestion pipeline
gets its parallelism from its encoder threads, one forward per thread, and
``InferenceSession.run`` is safe to call from several threads at once.
"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

# The opset torch's TorchScript exporter writes; part of the cache key.
OPSET = 17


def graph_key(name: str, module: nn.Module, example: Tensor) -> str:
    """Content key of the exported graph: backbone name, torch version, opset, input layout
    (channels and spatial size; the batch axis is dynamic) and every parameter and buffer's bytes."""
    h = hashlib.sha256()
    h.update(f"{name}|torch {torch.__version__}|opset {OPSET}|input {tuple(example.shape[1:])}".encode())
    for key, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"|{key}:{t.dtype}:{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


def export_onnx(module: nn.Module, example: Tensor) -> bytes:
    """``module`` ((B, 3, H, W) -> (B, dim)) as ONNX bytes with a dynamic batch axis."""
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants: H, W are fixed
        torch.onnx.export(module, (example.contiguous(),), buf, input_names=["images"], output_names=["features"],
                          dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return buf.getvalue()


def cached_onnx(name: str, module: nn.Module, example: Tensor, cache_dir: Path | None) -> bytes:
    """The exported graph of ``module``, read from ``cache_dir/<key>.onnx`` or exported and written
    there (atomically). An unwritable cache folder only costs the export on every run."""
    from ...fileio import atomic_write

    key = graph_key(name, module, example)
    path = cache_dir / f"{name}-{key}.onnx" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return path.read_bytes()
        except OSError as e:
            log.info("cannot read cached ONNX graph %s (%s); exporting again", path, e)
    data = export_onnx(module, example)
    if path is not None:
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as e:
            log.info("cannot cache the ONNX graph in %s (%s); it is exported again next run", cache_dir, e)
    return data


def ort_forward(name: str, module: nn.Module, example: Tensor, dim: int,
                cache_dir: Path | None) -> Callable[[Tensor], Tensor]:
    """``module`` as an ONNX Runtime session: a callable (B, 3, H, W) float32 -> (B, dim) float32 tensor.

    Raises ImportError without ``onnxruntime`` / ``onnx`` and whatever the exporter raises for a
    module it cannot follow; the caller falls back to a torch forward.
    """
    import onnxruntime as ort

    data = cached_onnx(name, module, example, cache_dir)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1   # the caller's thread does the work; the pipeline parallelises
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3     # errors only: ORT's warnings about unused initialisers are noise here
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def forward(batch: Tensor) -> Tensor:
        # ORT reads NCHW row-major; a channels_last batch is one copy away from it
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), np.float32)
        out = session.run(None, {input_name: x})[0]
        return torch.from_numpy(out.reshape(len(x), dim))
    return forward
