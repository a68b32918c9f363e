"""Prepared queries into the index's space: the :class:`Projector` of class descriptors, the
backbone features of query images, and :func:`embed_queries` that puts them together."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IncompatibleError, InvalidInputError
from .prepare import Prepared


class Projector:
    """``model.embed_classes`` as a callable on (Q, A) float32 arrays, set up once.

    Most query projections are affine (ESZSL and SAE: the identity or ``s W``); for those the map
    is read off the model once -- ``b = f(0)``, ``W = f(I) - b`` -- and checked on random
    probes, and a query then costs one small numpy matmul instead of a torch call (whose
    dispatch dominates a one-row projection). Non-affine models (MLPs) keep the torch call.
    """

    # Largest relative deviation from f on the probes for the affine form to be used.
    TOLERANCE = 1e-5

    def __init__(self, model: Any, *, seed: int = 0):
        self.model = model
        self.W: np.ndarray | None = None   # (A, E) float32
        self.b: np.ndarray | None = None   # (E,) float32
        # b is +0.0 throughout for linear maps (ESZSL): adding it then changes no bit, since a
        # BLAS product written into a fresh array is never -0.0 (its accumulators start at +0.0)
        self._add_b = True
        if model is not None:
            self._try_affine(seed)

    def _torch(self, s: np.ndarray) -> np.ndarray:
        import torch  # only an index with a model of its own gets here, and its model already loaded torch

        with torch.inference_mode():
            return self.model.embed_classes(torch.from_numpy(np.ascontiguousarray(s, np.float32))).float().cpu().numpy()

    def _try_affine(self, seed: int) -> None:
        a = int(self.model.semantic_dim)
        try:
            b = self._torch(np.zeros((1, a), np.float32))[0].astype(np.float64)
            W = self._torch(np.eye(a, dtype=np.float32)).astype(np.float64) - b
            probes = np.random.default_rng(seed).standard_normal((8, a)).astype(np.float32)
            want = self._torch(probes).astype(np.float64)
        except Exception:  # a model refusing such inputs (e.g. a zero row) keeps the torch path
            return
        got = probes.astype(np.float64) @ W + b
        if np.abs(got - want).max() <= self.TOLERANCE * max(np.abs(want).max(), 1e-12):
            self.W, self.b = W.astype(np.float32), b.astype(np.float32)
            self._add_b = bool(np.any(self.b != 0) or np.any(np.signbit(self.b)))

    @property
    def affine(self) -> bool:
        return self.W is not None

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """(Q, A) descriptors -> (Q, E) float32 embeddings."""
        if self.W is None:
            return self._torch(s)
        # ndarray.dot: the same BLAS call as ``s @ W`` (gemv for one row, gemm for more; tested bit
        # for bit) without the matmul gufunc's dispatch, a third of a one-query projection
        out = s.dot(self.W)
        if self._add_b:
            out += self.b
        return out


def image_features(backbone: Any, images: list[Path | bytes]) -> np.ndarray:
    """(n, feature_dim) raw ``backbone`` features of query images (files or encoded bytes), decoded
    exactly like indexed images (same decompression-bomb and truncation guards)."""
    from ..features.images import ImageDecodeError, decode_image, load_image

    # the torch-free forward (features.lean_forward): numpy preprocessing equal to the transform, the
    # same ONNX graph; else the torch backbone
    lean = hasattr(backbone, "run_batch")
    side = backbone.resize if lean else backbone.preprocess.resize  # decoded like indexed images (JPEG draft mode)
    batch = []
    for p in images:
        try:
            rgb = decode_image(p, side) if isinstance(p, bytes) else load_image(p, side)
        except ImageDecodeError as e:
            what = "uploaded query image" if isinstance(p, bytes) else f"query image {p}"
            raise InvalidInputError(f"{what} cannot be decoded ({e}); expected a JPEG/PNG/WebP/... file") from e
        batch.append(backbone.tensor(np.asarray(rgb)) if lean else backbone.transform(rgb))
    if lean:
        return backbone.run_batch(np.stack(batch))
    import torch

    x = torch.stack(batch).to(backbone.device)
    # the forward indexing used (ONNX Runtime on CPU, ~3x eager; eager on a GPU): an indexed photo
    # queried by example meets its own stored vector, not one rounded differently
    forward = backbone.cpu_forward(x)
    with torch.no_grad():
        feats = forward(x)
    return np.asarray(feats.float().cpu().numpy(), np.float32)


def check_dim(x: np.ndarray, dim: int, what: str) -> np.ndarray:
    """``x`` (n, dim), else IncompatibleError naming ``what`` and both widths."""
    if x.shape[1] != dim:
        raise IncompatibleError(f"{what} has {x.shape[1]} dimensions but the index holds {dim}-d vectors")
    return x


def embed_queries(prepared: list[Prepared], descriptors: np.ndarray | None, *, dim: int, metric: str,
                  projector: Callable[[], Projector], model: Any,
                  backbone: Callable[[], Any]) -> np.ndarray:
    """Prepared queries -> (Q, ``dim``) float32 in the index's space, L2-normalised when ``metric`` is "ip".

    Descriptors are projected in one ``projector()`` call and images in one ``backbone()`` batch
    (then ``model.embed_images`` where the index has a model); general-model vectors are already
    in index space. ``descriptors``: their (Q, A) matrix when one was built (row i = prepared[i]).
    ``projector`` and ``backbone`` are asked for only when needed (each is set up once, lazily).
    """
    sem = [i for i, p in enumerate(prepared) if p.descriptor is not None]
    img = [i for i, p in enumerate(prepared) if p.image is not None]
    if len(sem) == len(prepared) and sem:
        # descriptors only (the common case): project straight into the output array
        if descriptors is not None:
            s = descriptors
        else:
            s = np.stack([p.descriptor for p in prepared]) if len(sem) > 1 else prepared[0].descriptor[None]
        out = np.ascontiguousarray(check_dim(projector()(s), dim, "class embedding"), np.float32)
        sem = []
    else:
        out = np.zeros((len(prepared), dim), np.float32)
    for i, p in enumerate(prepared):
        if p.vector is not None:
            out[i] = check_dim(p.vector[None], dim, "text query vector")[0]
    if sem:
        s = np.stack([prepared[i].descriptor for i in sem]) if len(sem) > 1 else prepared[sem[0]].descriptor[None]
        out[sem] = check_dim(projector()(s), dim, "class embedding")
    if img:
        feats = image_features(backbone(), [prepared[i].image for i in img])
        if model is not None:
            import torch  # the index's model is a torch module: loaded with it

            with torch.inference_mode():
                feats = model.embed_images(torch.from_numpy(feats)).float().cpu().numpy()
        out[img] = check_dim(feats, dim, "image embedding")
    if metric == "ip":
        # np.linalg.norm's arithmetic without its Python-level dispatch (once per query call)
        n = np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True))
        if not n.all():
            bad = prepared[int(np.flatnonzero(n[:, 0] == 0)[0])].spec
            raise InvalidInputError(f"query {str(bad)!r} embeds to the zero vector; it cannot rank images by cosine")
        out /= n
    return out
