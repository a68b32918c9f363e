"""The query path: specs -> descriptors -> embeddings in the index's space -> search -> records.

Every kind of query goes through :meth:`QueryEngine.run`, so the benchmark evaluation
(:func:`zslretrieval.query.evaluate.engine_map`) measures exactly what users get.
"""
from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from .spec import QuerySpec
from .textual import general_query, text_descriptor
from .vocab import (Vocabulary, attribute_pairs, build_attribute_vector, normalise_semantics, parse_attribute_terms,
                    parse_vector_text, read_attribute_file, resolve_attribute_pairs)


class IndexManifestView(Protocol):
    """The manifest fields the engine reads (``index.reader.IndexManifest`` has them)."""

    name: str
    dim: int
    metric: str
    backbone: str | None
    backbone_weights: str | None


class IndexRecordView(Protocol):
    """A catalog record as the engine reads it (``index.reader.ImageRecord``)."""

    id: int
    path: str
    label: str | None
    status: str


class SearchableIndex(Protocol):
    """What :class:`QueryEngine` needs from an index: ``index.reader.OpenIndex`` implements it.

    ``search`` takes (Q, dim) float32 queries already in index space and returns D, I (Q, k')
    scores descending and catalog ids (-1 pads), ``k=None`` the exact full ranking; ``model()``
    is (model, card, class_semantics) or None for an index of raw features.
    """

    @property
    def manifest(self) -> IndexManifestView: ...

    def model(self) -> tuple[Any, Any, Any] | None: ...

    def search(self, xq: np.ndarray, k: int | None = 10) -> tuple[np.ndarray, np.ndarray]: ...

    def records(self, ids: Sequence[int]) -> Sequence[IndexRecordView]: ...


# How many of a class's strongest attributes a --class query reports back.
TOP_CLASS_ATTRIBUTES = 10


@dataclass(slots=True)  # slots: a 1,000-query batch builds 10,000 of these
class Hit:
    """One ranked catalog entry."""

    rank: int
    id: int
    score: float
    path: str
    label: str | None
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "id": self.id, "score": self.score, "path": self.path,
                "label": self.label, "status": self.status}


@dataclass
class QueryResult:
    """A query, how it was understood (``resolved``), and its ranked hits."""

    query: QuerySpec
    resolved: dict[str, Any]
    hits: list[Hit] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"query": {"kind": self.query.kind, "text": self.query.text}, "resolved": self.resolved,
                "results": [h.to_dict() for h in self.hits]}


@dataclass
class _Prepared:
    spec: QuerySpec
    resolved: dict[str, Any]
    descriptor: np.ndarray | None = None   # (S,) class-semantic vector, already normalised
    image: Path | bytes | None = None      # a file, or the encoded bytes of an uploaded image
    vector: np.ndarray | None = None       # (E,) already in index space (general model on a raw index)


class QueryEngine:
    """Answers queries against one open index (see ``zslretrieval.index.open_index``).

    The index's model (if any) is loaded once; ``vocabulary`` and ``classes`` come from its card.
    """

    def __init__(self, index: SearchableIndex, *, backbone_weights: str | os.PathLike | None = None,
                 general: Any = None, correction: bool = True):
        self.index = index
        # The general zero-shot model (text -> raw backbone features) for indexes without a model;
        # loaded (or built, once per data folder) on the first text query.
        self._general = general
        self.backbone_weights = backbone_weights
        self.manifest = index.manifest
        self.metric: str = self.manifest.metric
        loaded = index.model()
        self.model, self.card, self.class_semantics = loaded if loaded is not None else (None, None, None)
        if self.model is not None:
            self.model.eval()
        self._backbone = None
        self._records: RecordTable | None = None
        self._projector: Projector | None = None
        self._lean: _LeanAttributes | None | bool = False   # set up on the first attribute query (False: not yet)
        # the index's search without re-checking the engine's own unit vectors (OpenIndex has it)
        self._search_unchecked = getattr(index, "search_unchecked", None) or index.search
        self.vocabulary = Vocabulary(self.card.vocabulary, "attribute") if self.card is not None else None
        self.classes = Vocabulary(self.card.class_names, "class") if self.card is not None else None
        # The score correction the model card records (chosen on val; see zslretrieval.correction),
        # with its per-image terms from the index (optional ``correction_terms()``); correction=False
        # ranks by raw model scores.
        # An index of raw features gets the general model's hubness-correction terms when the
        # general model is loaded (first text query; see general_model()).
        terms_of = getattr(index, "correction_terms", None)
        self.correction = correction
        self.terms = terms_of() if correction and terms_of is not None and self.model is not None else None
        self._seen = set(self.card.seen_classes) if self.card is not None else set()
        self._fusion = None   # the collection as the general model sees it, for --general-weight (built once)

    # -- resolution -------------------------------------------------------------------
    def _need_model(self, spec: QuerySpec) -> None:
        if self.model is None:
            raise IncompatibleError(
                f"{spec.kind} queries need an index built with a model, but index "
                f"{getattr(self.manifest, 'name', '?')!r} holds raw features; query it by --text, --attributes, "
                "--class or --image, or rebuild it with `zslr index --model CHECKPOINT`")

    def supports(self, kind: str) -> bool:
        """Whether this index can answer ``kind`` queries (for UIs; loads nothing heavy)."""
        if kind == "image":
            return True
        if self.model is None:
            from ..text.general import HEAD_BACKBONES
            return kind in ("text", "class", "attributes") and getattr(self.manifest, "backbone", None) in HEAD_BACKBONES
        if kind == "text":
            return "text" in (self.card.semantic_modalities or [])
        if kind == "class":
            return self.class_semantics is not None
        return bool(self.vocabulary and len(self.vocabulary) and self.model.semantic_dim == len(self.vocabulary))

    def general_model(self):
        """The general model matching this raw index's backbone and weights (IncompatibleError otherwise)."""
        if self._general is None:
            from ..features.backbones import BACKBONES
            from ..text.general import HEAD_BACKBONES, load_general_model

            name = getattr(self.manifest, "backbone", None)
            if not name or name not in BACKBONES:
                raise IncompatibleError(
                    f"index {getattr(self.manifest, 'name', '?')!r} holds precomputed features (source {name!r}) and "
                    "no model; text queries need either a model (`zslr index --model`) or images indexed with an "
                    f"ImageNet backbone ({', '.join(HEAD_BACKBONES)})")
            self._general = load_general_model(name)
        want = getattr(self.manifest, "backbone_weights", None)
        if want and self._general.backbone_weights != want:
            raise IncompatibleError(
                f"index {getattr(self.manifest, 'name', '?')!r} was built with {self._general.backbone} weights {want!r}; "
                f"the general model knows only {self._general.backbone_weights!r}, whose classifier it was built from")
        if self.model is None and self.correction and self.terms is None:
            terms_of = getattr(self.index, "general_terms", None)
            self.terms = terms_of(self._general) if terms_of is not None else None
        return self._general

    def _attribute_width(self, spec: QuerySpec) -> int:
        """Descriptor width for attribute queries; refuses models fusing other modalities."""
        self._need_model(spec)
        if not self.vocabulary or len(self.vocabulary) == 0:
            raise IncompatibleError(f"model {self.card.model!r} has no attribute vocabulary; use --class or --image")
        if self.model.semantic_dim != len(self.vocabulary):
            raise IncompatibleError(
                f"model {self.card.model!r} expects {self.model.semantic_dim}-d descriptors "
                f"({'+'.join(self.card.semantic_modalities)}) but only the {len(self.vocabulary)} attributes can "
                "be typed; use --class, or a model trained on attributes alone")
        return len(self.vocabulary)

    def prepare(self, spec: QuerySpec) -> _Prepared:
        """Resolve one spec into a normalised descriptor (or an image path) plus what was understood."""
        if spec.kind == "image":
            if spec.data is not None:
                return _Prepared(spec, {"image": spec.text}, image=spec.data)
            p = Path(spec.text).expanduser()
            if not p.is_file():
                raise DataNotFoundError(f"query image not found: {p}")
            return _Prepared(spec, {"image": str(p)}, image=p)
        if self.model is None and spec.kind in ("text", "class", "attributes"):
            v, resolved = general_query(spec, self.general_model(), int(self.manifest.dim))
            return _Prepared(spec, resolved, vector=v)
        if spec.kind == "text":
            self._need_model(spec)
            d, resolved = text_descriptor(spec, self.card, len(self.vocabulary or []))
            return _Prepared(spec, resolved, descriptor=d)
        if spec.kind == "class":
            self._need_model(spec)
            if self.class_semantics is None:
                raise IncompatibleError(f"checkpoint of model {self.card.model!r} stores no class descriptors; "
                                        "use --attributes or --attribute-file")
            i = self.classes.resolve(spec.text.strip())
            # Stored rows are the descriptors the model was trained/evaluated with, already normalised.
            d = np.asarray(self.class_semantics[i], np.float32)
            resolved: dict[str, Any] = {"class": self.classes.names[i]}
            if self.vocabulary and len(d) >= len(self.vocabulary):
                # What the class "means": its strongest attributes, so users can see why images rank high.
                a = d[:len(self.vocabulary)]
                top = [int(j) for j in np.argsort(-a, kind="stable")[:TOP_CLASS_ATTRIBUTES] if a[j] > 0]
                resolved["attributes"] = [{"name": self.vocabulary.names[j], "weight": float(a[j])} for j in top]
            return _Prepared(spec, resolved, descriptor=d)
        width = self._attribute_width(spec)
        norm = self.card.semantic_norm
        if spec.kind == "attributes":
            v, pairs = build_attribute_vector(parse_attribute_terms(spec.text), self.vocabulary, norm)
            return _Prepared(spec, {"attributes": [{"name": n, "weight": w} for n, w in pairs]}, descriptor=v)
        if spec.kind == "attribute-file":
            raw = read_attribute_file(spec.text, width)
        else:  # inline vector
            raw = parse_vector_text(spec.text, spec.origin or "vector")
            if raw.shape != (width,):
                raise InvalidInputError(f"vector has {raw.size} values but the vocabulary has {width} attributes")
            if not np.all(np.isfinite(raw)):
                raise InvalidInputError("vector contains non-finite values (nan/inf); expected finite numbers")
        nz = np.flatnonzero(raw)
        v = normalise_semantics(raw, norm)
        return _Prepared(spec, {"attributes": [{"name": self.vocabulary.names[i], "weight": float(raw[i])} for i in nz]},
                         descriptor=v)

    # -- embedding --------------------------------------------------------------------
    def prepare_all(self, specs: Sequence[QuerySpec]) -> tuple[list[_Prepared], np.ndarray | None]:
        """:meth:`prepare` for every spec, plus their (Q, A) descriptor matrix when all are attribute lists.

        A batch of attribute queries is built as one matrix, normalised in one call: the same
        values as ``prepare`` one by one (row-wise reduction, bit for bit), without a few numpy
        calls per query; each descriptor is a row of it.
        """
        if len(specs) < 2 or self.model is None or any(s.kind != "attributes" for s in specs):
            return [self.prepare(s) for s in specs], None
        width = self._attribute_width(specs[0])
        names = self.vocabulary.names
        V = np.zeros((len(specs), width), np.float32)
        prepared = []
        for r, spec in enumerate(specs):
            resolved = resolve_attribute_pairs(attribute_pairs(spec.text), self.vocabulary)
            V[r, list(resolved)] = list(resolved.values())
            prepared.append(_Prepared(spec, {"attributes": [{"name": names[i], "weight": w} for i, w in resolved.items()]}))
        V = normalise_semantics(V, self.card.semantic_norm)
        for p, row in zip(prepared, V):
            p.descriptor = row
        return prepared, V

    def _lean_setup(self) -> _LeanAttributes | None:
        """What :meth:`_attribute_queries` needs, read once; None where it does not apply."""
        if self._lean is False:
            lean = None
            if (self.model is not None and self.metric == "ip" and self.vocabulary and len(self.vocabulary)
                    and self.model.semantic_dim == len(self.vocabulary)
                    and self.card.semantic_norm in ("l2", "none", "", None)):
                proj = self.projector
                if proj.affine and proj.W.shape == (len(self.vocabulary), int(self.manifest.dim)):
                    lean = _LeanAttributes(len(self.vocabulary), self.vocabulary, proj,
                                           self.card.semantic_norm == "l2")
            self._lean = lean
        return self._lean

    def _attribute_queries(self, specs: Sequence[QuerySpec]) -> tuple[list[_Prepared], np.ndarray] | None:
        """Attribute lists -> their prepared queries and (Q, E) unit float32 vectors, or None.

        Bit for bit what :meth:`prepare_all` + :meth:`embed` give, with their numpy calls only:
        the descriptors are written as float32 bytes (``struct`` rounds like numpy's cast), the
        two normalisations are the same ufunc calls, and the checks each step makes (a zero
        descriptor, a zero or non-finite embedding) are one test of each norm. For one query
        the steps' own overhead was as much again as the arithmetic. The vectors it returns
        are finite, so they are searched without a second check.

        None where it does not apply (another query kind, a model without an affine projection,
        metric "l2") and where a check fails: the general path then runs and raises its usual
        error. Parse and name errors are raised here, the same ones in the same order.
        """
        lean = self._lean_setup()
        if lean is None:
            return None
        built = self._attribute_descriptors(specs, lean)
        if built is None:
            return None
        out = self._attribute_embed(built[1], lean)
        return None if out is None else (built[0], out)

    # The two stages of _attribute_queries are methods of their own so that scripts/bench_query.py
    # can time the stages run() actually takes for one query.
    def _attribute_descriptors(self, specs: Sequence[QuerySpec],
                               lean: _LeanAttributes) -> tuple[list[_Prepared], np.ndarray] | None:
        """First stage of :meth:`_attribute_queries`: parsed, resolved and normalised (Q, A) float32
        descriptors (each prepared query's descriptor is a row), or None for the general path."""
        for spec in specs:
            if spec.kind != "attributes":
                return None
        width, vocab, names, pack = lean.width, lean.vocab, lean.vocab.names, _F32.pack_into
        V = np.zeros((len(specs), width), np.float32)  # numpy's own buffer: aligned as before for BLAS
        prepared = []
        at = 0
        for spec in specs:
            resolved = resolve_attribute_pairs(attribute_pairs(spec.text), vocab)
            for i, w in resolved.items():
                if not -_BIG_WEIGHT < w < _BIG_WEIGHT:
                    return None  # its square overflows float32 (or it does): numpy's warnings, general path
                pack(V, at + 4 * i, w)  # V's bytes, written in place
            at += 4 * width
            prepared.append(_Prepared(spec, {"attributes": [{"name": names[i], "weight": w} for i, w in resolved.items()]}))
        if lean.l2:
            n = _divisor(np.sqrt(np.add.reduce(V * V, axis=-1, keepdims=True)))  # normalise_semantics' arithmetic
            if n is None:
                return None  # all zeros (or squares underflowing to 0): "all zeros" from the general path
            V = V / n
        for r, p in enumerate(prepared):
            p.descriptor = V[r]
        return prepared, V

    def _attribute_embed(self, V: np.ndarray, lean: _LeanAttributes) -> np.ndarray | None:
        """Second stage of :meth:`_attribute_queries`: (Q, A) descriptors -> (Q, E) finite unit float32
        vectors, or None for the general path."""
        out = lean.projector(V)                                      # embed's arithmetic from here on
        n = _divisor(np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True)))
        if n is None:
            return None  # a zero embedding, or one too large to normalise: the general path decides
        out /= n
        return out

    def embed(self, prepared: list[_Prepared], descriptors: np.ndarray | None = None) -> np.ndarray:
        """Prepared queries -> (Q, E) float32 in the index's space, L2-normalised when metric is "ip".

        Descriptors are projected in one ``embed_classes`` call and images in one backbone batch;
        ``descriptors``: their (Q, A) matrix when :meth:`prepare_all` built one (row i = prepared[i]).
        """
        dim = int(self.manifest.dim)
        sem = [i for i, p in enumerate(prepared) if p.descriptor is not None]
        img = [i for i, p in enumerate(prepared) if p.image is not None]
        if len(sem) == len(prepared) and sem:
            # descriptors only (the common case): project straight into the output array
            if descriptors is not None:
                s = descriptors
            else:
                s = np.stack([p.descriptor for p in prepared]) if len(sem) > 1 else prepared[0].descriptor[None]
            out = np.ascontiguousarray(self._check_dim(self.projector(s), "class embedding"), np.float32)
            sem = []
        else:
            out = np.zeros((len(prepared), dim), np.float32)
        for i, p in enumerate(prepared):
            if p.vector is not None:
                out[i] = self._check_dim(p.vector[None], "text query vector")[0]
        if sem:
            s = np.stack([prepared[i].descriptor for i in sem]) if len(sem) > 1 else prepared[sem[0]].descriptor[None]
            out[sem] = self._check_dim(self.projector(s), "class embedding")
        if img:
            feats = self._image_features([prepared[i].image for i in img])
            if self.model is not None:
                with torch.inference_mode():
                    feats = self.model.embed_images(torch.from_numpy(feats)).float().cpu().numpy()
            out[img] = self._check_dim(feats, "image embedding")
        if self.metric == "ip":
            # np.linalg.norm's arithmetic without its Python-level dispatch (once per query call)
            n = np.sqrt(np.add.reduce(out * out, axis=1, keepdims=True))
            if not n.all():
                bad = prepared[int(np.flatnonzero(n[:, 0] == 0)[0])].spec
                raise InvalidInputError(f"query {str(bad)!r} embeds to the zero vector; it cannot rank images by cosine")
            out /= n
        return out

    @property
    def projector(self) -> "Projector":
        """Descriptor -> embedding map of the index's model, set up once per engine."""
        if self._projector is None:
            self._projector = Projector(self.model)
        return self._projector

    def _check_dim(self, x: np.ndarray, what: str) -> np.ndarray:
        if x.shape[1] != int(self.manifest.dim):
            raise IncompatibleError(f"{what} has {x.shape[1]} dimensions but the index holds {self.manifest.dim}-d vectors")
        return x

    def _image_features(self, images: list[Path | bytes]) -> np.ndarray:
        """(n, feature_dim) raw backbone features of the query images (files or encoded bytes), decoded
        exactly like indexed images (same decompression-bomb and truncation guards)."""
        from ..features.images import ImageDecodeError, decode_image, load_image

        backbone = self._load_backbone()
        batch = []
        for p in images:
            try:
                side = backbone.preprocess.resize  # decoded like indexed images (JPEG draft mode)
                batch.append(backbone.transform(decode_image(p, side) if isinstance(p, bytes) else load_image(p, side)))
            except ImageDecodeError as e:
                what = "uploaded query image" if isinstance(p, bytes) else f"query image {p}"
                raise InvalidInputError(f"{what} cannot be decoded ({e}); expected a JPEG/PNG/WebP/... file") from e
        x = torch.stack(batch).to(backbone.device)
        # the forward indexing used (ONNX Runtime on CPU, ~3x eager; eager on a GPU): an indexed photo
        # queried by example meets its own stored vector, not one rounded differently
        forward = backbone.cpu_forward(x)
        with torch.no_grad():
            feats = forward(x)
        return np.asarray(feats.float().cpu().numpy(), np.float32)

    def _load_backbone(self):
        if self._backbone is None:
            from ..features.backbones import BACKBONES, load_backbone

            name = getattr(self.manifest, "backbone", None)
            if not name or name not in BACKBONES:
                raise IncompatibleError(
                    f"index {getattr(self.manifest, 'name', '?')!r} was built from precomputed features "
                    f"(source {name!r}), so there is no backbone to embed a query image; query it by "
                    "--attributes/--class, or index images with `zslr index DIR`")
            bb = load_backbone(name, self.backbone_weights)
            want = getattr(self.manifest, "backbone_weights", None)
            if want and bb.weights_id != want:
                raise IncompatibleError(
                    f"index {getattr(self.manifest, 'name', '?')!r} was built with {name} weights {want!r} but "
                    f"{bb.weights_id!r} were loaded; pass the same weight file with --weights")
            self._backbone = bb
        return self._backbone

    # -- search -----------------------------------------------------------------------
    def run(self, specs: list[QuerySpec], k: int | None = 10, general_weight: float | None = None) -> list[QueryResult]:
        """Resolve, embed and search all ``specs`` in one batched index call; ``k=None`` ranks everything.

        ``k`` larger than the index is clamped to it: the result is then the full ranking
        (``k=None``), never a result array sized by ``k`` itself. ``general_weight`` (0 < w <= 1,
        an index with a model of its own): text/class/attribute queries are ranked by
        ``(1 - w) z(model score) + w z(general-model score)`` (see :meth:`fuse_general`).
        """
        w = None if general_weight is None else check_general_weight(general_weight)
        k = self.effective_k(k, len(specs))
        if w is not None:
            self._fusion_source()      # refuse before any work when the index cannot do it
            n = self._n_entries()
            if n is not None and len(specs) * n > MAX_RESULTS:
                raise InvalidInputError(
                    f"fusing the general model scores every image: {len(specs)} queries x {n:,} images = "
                    f"{len(specs) * n:,} scores; at most {MAX_RESULTS:,} per call: split the batch")
        lean = self._attribute_queries(specs)
        if lean is not None:
            prepared, xq = lean
            if self.terms is None and w is None:  # no correction, no fusion: one search of finite unit vectors
                return self.collect(prepared, *self._search_unchecked(xq, k))
        else:
            prepared, descriptors = self.prepare_all(specs)
            xq = self.embed(prepared, descriptors)
        if self.terms is None and w is None:  # no score correction, no fusion: one plain search
            return self.collect(prepared, *self.search_vectors(xq, k))
        fix = np.array([self.corrects(p) for p in prepared], bool)
        if not fix.any():
            D, I = self.search_vectors(xq, k)
        elif fix.all():
            D, I = self.search_vectors(xq, k, corrected=True)
        else:  # two batched searches, rows put back in query order
            Dr, Ir = self.search_vectors(xq[~fix], k)
            Dc, Ic = self.search_vectors(xq[fix], k, corrected=True)
            width = max(Dr.shape[1], Dc.shape[1])
            D, I = np.full((len(xq), width), -np.inf, np.float32), np.full((len(xq), width), -1, np.int64)
            D[~fix, :Dr.shape[1]], I[~fix, :Ir.shape[1]] = Dr, Ir
            D[fix, :Dc.shape[1]], I[fix, :Ic.shape[1]] = Dc, Ic
        for p, f in zip(prepared, fix):
            if f:
                p.resolved["correction"] = self.terms.correction.describe()
        if w is not None:
            rows = [i for i, p in enumerate(prepared) if p.descriptor is not None and p.spec.kind in FUSABLE]
            if rows:
                Df, If = self.fuse_general([prepared[i] for i in rows], xq[rows], fix[rows], w, D.shape[1])
                D, I = D.astype(np.float32, copy=True), I.copy()
                D[rows], I[rows] = Df, If
        return self.collect(prepared, D, I)

    # -- fusing the general model's text score into a model's ranking -----------------
    def _fusion_source(self) -> None:
        """Refuse fusion, naming why, when the index has no model of its own or no raw ImageNet features."""
        from ..text.general import HEAD_BACKBONES
        name = getattr(self.manifest, "name", "?")
        if self.model is None:
            raise IncompatibleError(f"index {name!r} has no model of its own: its text, class and attribute queries "
                                    "already go through the general model; leave out --general-weight")
        backbone = getattr(self.manifest, "backbone", None)
        if backbone not in HEAD_BACKBONES or getattr(self.index, "raw_features", None) is None:
            raise IncompatibleError(
                f"--general-weight needs the images' raw features from an ImageNet backbone ({', '.join(HEAD_BACKBONES)}) "
                f"to score them with the general model, but index {name!r} holds features of source "
                f"{backbone or getattr(self.manifest, 'source', None)!r}; index images with `zslr index DIR --model ...`")

    def _general_gallery(self):
        """(image ids (n,), unit raw features (n, D) float32, scale, offset (n,) of the general correction), once."""
        if self._fusion is None:
            g = self.general_model()
            ids, raw = self.index.raw_features()
            x = np.asarray(raw, np.float32)
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            corr = getattr(g, "correction", None)
            if self.correction and corr is not None and corr.active and getattr(g, "reference", None) is not None:
                scale, offset = corr.terms(x.astype(np.float64) @ np.asarray(g.reference, np.float64).T)
            else:
                scale, offset = np.ones(len(x)), np.zeros(len(x))
            self._fusion = (np.asarray(ids, np.int64), x, scale, offset)
        return self._fusion

    def fuse_general(self, prepared: list[_Prepared], xq: np.ndarray, corrected: np.ndarray, weight: float,
                     width: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``width`` of ``(1 - weight) z(model) + weight z(general)`` for each query: D, I (Q, width).

        Model scores: the engine's own full ranking (with its correction where it applies);
        general scores: cosine of the general model's query vector with each image's unit raw
        features (with the general model's hubness correction). Each is z-scored over the
        collection so the two scales meet; an exact pass over the collection per query.
        """
        ids, x, scale, offset = self._general_gallery()
        g = self.general_model()
        order = np.argsort(ids, kind="stable")
        n = len(ids)
        model_scores = np.empty((len(prepared), n), np.float64)
        for flag in (True, False):
            mask = corrected if flag else ~corrected
            if mask.any():
                Dm, Im = self.search_vectors(xq[mask], None, corrected=flag)
                rows = np.flatnonzero(mask)
                for r, d, i in zip(rows, Dm, Im):
                    keep = i >= 0
                    pos = order[np.searchsorted(ids[order], i[keep])]
                    full = np.full(n, np.nan)
                    full[pos] = d[keep]
                    model_scores[r] = np.where(np.isnan(full), np.nanmin(full), full)
        qg, how = [], []
        for p in prepared:
            v, resolved = general_query(p.spec, g, x.shape[1])
            qg.append(v)
            how.append(resolved["understood_as"])
        general_scores = (np.stack(qg).astype(np.float64) @ x.T.astype(np.float64)) * scale + offset
        fused = (1.0 - weight) * _zscore(model_scores) + weight * _zscore(general_scores)
        top = np.argsort(-fused, axis=1, kind="stable")[:, :width]
        for p, h in zip(prepared, how):
            p.resolved["fusion"] = {"general_weight": weight, "general": h,
                                    "score": f"{1 - weight:g} x z(model) + {weight:g} x z(general), z over the collection"}
        return np.take_along_axis(fused, top, axis=1).astype(np.float32), ids[top]

    def effective_k(self, k: int | None, n_queries: int = 1) -> int | None:
        """``k`` checked and clamped to the index size (None = full ranking).

        Shared by ``zslr query``, the API and the server: a ``--top-k`` beyond the number of
        entries returns every entry, and a batch whose results would not fit in memory is
        refused before anything is allocated.
        """
        if k is not None and not (type(k) is int and k >= 1):  # a plain positive int needs no conversion
            if isinstance(k, bool) or int(k) != k or k < 1:
                raise InvalidInputError(f"top-k must be a positive integer (or None for the full ranking), got {k!r}")
            k = int(k)
        n = self._n_entries()
        if n is not None and (k is None or k >= n):
            k = None  # the full ranking: every entry, exact even for approximate index types
        width = n if k is None else k
        if width is not None and n_queries * width > MAX_RESULTS:
            raise InvalidInputError(
                f"{n_queries} quer{'y' if n_queries == 1 else 'ies'} x top-k {width:,} = {n_queries * width:,} results; "
                f"at most {MAX_RESULTS:,} per call: lower --top-k or split the batch")
        return k

    def _n_entries(self) -> int | None:
        n = getattr(self.index, "ntotal", None)
        return None if n is None else int(n)

    def corrects(self, p: _Prepared) -> bool:
        """Whether query ``p`` is ranked with the score correction.

        Not image queries (image-to-image similarity, not a class description) and not ``--class``
        queries of the model's seen classes: the correction lowers images by how strongly the seen
        classes claim them, which for a seen class's own query would push its own images down.
        """
        if self.terms is None:
            return False
        if self.model is None:   # raw index: the general model's correction, for its text/class/attribute queries
            return p.vector is not None
        if p.descriptor is None:
            return False
        return not (p.spec.kind == "class" and p.resolved.get("class") in self._seen)

    def search_vectors(self, xq: np.ndarray, k: int | None, corrected: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(Q, E) -> D, I of shape (Q, k') catalog ids, -1 padded; ``corrected``: ranked by corrected scores."""
        if corrected and self.terms is not None:
            from ..index.stats import search_corrected
            return search_corrected(self.index.search, xq, k, self.terms, int(getattr(self.index, "ntotal", 0)))
        return self.index.search(xq, k)

    def collect(self, prepared: list[_Prepared], D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
        """Attach catalog records to the ranked ids.

        Each ranking ends at its first -1 (padding when there are fewer entries than k, or an
        entry the catalog no longer lists): the scores from there on are never read.
        """
        ids = I.tolist()
        for q, row in enumerate(ids):
            if -1 in row:
                ids[q] = row[:row.index(-1)]
        records = self.records_table
        table = records.table()
        if table is None:  # not loaded yet (the first call): the catalog, asked once for the batch's ids
            table = records.fetch({i for row in ids for i in row})
        results = []
        for p, irow, drow in zip(prepared, ids, D.tolist()):
            hits = []
            try:
                # a plain loop: per hit one record read and one Hit() call, no intermediate lists
                for rank, i, score in zip(range(1, len(irow) + 1), irow, drow):
                    path, label, status = table[i]
                    hits.append(Hit(rank, i, score, path, label, status))
            except (LookupError, TypeError):  # an id the table lacks (not an "ok" image; TypeError: a None gap)
                have = {i: rec for i in irow if (rec := _get(table, i)) is not None}
                extra = records.fetch({i for i in irow if i not in have})
                hits = [Hit(rank, i, score, *(have[i] if i in have else extra[i]))
                        for rank, i, score in zip(range(1, len(irow) + 1), irow, drow)]
            results.append(QueryResult(p.spec, p.resolved, hits))
        return results

    @property
    def records_table(self) -> "RecordTable":
        if self._records is None:
            self._records = RecordTable(self.index)
        return self._records


FUSABLE = ("text", "class", "attributes")   # query kinds a general-model score can be fused into


def check_general_weight(weight: float | None) -> float | None:
    """``weight`` as a float in (0, 1], or None (no fusion); anything else is refused naming it."""
    if weight is None:
        return None
    try:
        w = float(weight) if not isinstance(weight, (bool, str)) else float("nan")
    except (TypeError, ValueError):
        w = float("nan")
    if not (np.isfinite(w) and 0.0 < w <= 1.0):
        raise InvalidInputError(f"general weight {weight!r}: expected a number in (0, 1] -- the general model's "
                                "share of the fused score (leave it out for the model alone)")
    return w


def _zscore(s: np.ndarray) -> np.ndarray:
    """Each row standardised over its entries (a constant row becomes zeros)."""
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return (s - mu) / np.where(sd > 0, sd, 1.0)


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


@dataclass(frozen=True, slots=True)
class _LeanAttributes:
    """What :meth:`QueryEngine._attribute_queries` reads per call, set up once per engine."""

    width: int                # attributes in the vocabulary (= the model's descriptor width)
    vocab: Vocabulary
    projector: "Projector"    # affine, (width, dim)
    l2: bool                  # descriptors are L2-normalised (card.semantic_norm == "l2")


_F32 = struct.Struct("=f")   # native float32, rounded from a Python float as numpy's cast rounds (to nearest)
# Attribute weights beyond this take the general path: below it the squares of a whole
# vocabulary's weights sum to a finite float32, so the lean path never meets numpy's overflow warnings.
_BIG_WEIGHT = 1e17
_INF = float("inf")


def _divisor(n: np.ndarray) -> np.ndarray | np.float32 | None:
    """The (Q, 1) row norms ``n`` as the divisor of (Q, D) rows, or None when one is 0, inf or NaN.

    One query: its float32 scalar, so that ``x / n`` divides by the same value without numpy's
    broadcasting iterator; more: ``n`` itself.
    """
    if len(n) == 1:
        s = n[0, 0]
        return s if 0.0 < s < _INF else None  # NaN fails both comparisons
    return n if np.logical_and.reduce(((n > 0) & (n < _INF)).ravel()) else None


# Results one call may return (queries x top-k, after clamping to the index size): a Hit costs a
# few hundred bytes, so this bounds a call at a few GiB instead of letting --top-k size it.
MAX_RESULTS = 20_000_000


class RecordTable:
    """Path / label / status of catalog images, by image id.

    The first lookup asks the catalog for just the ids it needs (what a one-shot ``zslr query``
    does); from the second on, every "ok" image's record is read once and a lookup is a dict
    read per hit, not SQL (1 query on 50k images: 0.4-8 ms of SQL per call -> ~1 us). A dict,
    not arrays beside sorted ids: ten hits' dict reads cost less than one numpy gather.
    Ids the table lacks (e.g. entries whose image is not "ok") still go to the catalog.
    """

    MISSING = ("", None, "missing from catalog")  # an id the catalog does not list

    def __init__(self, index: Any):
        self.index = index
        self.calls = 0
        # image id -> (path, label, status): a list indexed by id (None where no "ok" image has
        # that id) or a dict for sparse ids; published in one assignment, so a server thread sees
        # either no table or all of it
        self.by_id: list | dict | None = None

    def load(self) -> None:
        """Read every "ok" image's record once (needs ``index.all_records``; otherwise stays per-call)."""
        all_records = getattr(self.index, "all_records", None)
        if all_records is None:
            return
        recs = all_records("ok")
        top = max((int(r.id) for r in recs), default=-1)
        if recs and min(int(r.id) for r in recs) >= 0 and top < 2 * len(recs) + 4096:
            # ids are allocated in sequence: a list indexed by id (None in gaps) is one slot read per
            # hit, where a dict reads its hash index, the entry and the key; after a gallery scan
            # evicted them, each read is a cache miss (a third of the record step for 10 hits)
            table: list | dict = [None] * (top + 1)
            for r in recs:
                table[int(r.id)] = (str(r.path), _label(r.label), r.status)
        else:
            table = {int(r.id): (str(r.path), _label(r.label), r.status) for r in recs}
        self.by_id = table

    def table(self) -> list | dict | None:
        """Image id -> (path, label, status) of every "ok" image once loaded, else None: ``table[id]``
        raises LookupError, or gives None, for an id it lacks.

        Each call counts as one lookup: the table is read on the second, so a one-shot query
        asks the catalog (:meth:`fetch`) for just its hits instead.
        """
        self.calls += 1
        if self.by_id is None and self.calls >= 2:
            self.load()
        return self.by_id

    def fetch(self, ids: set[int] | list[int]) -> dict[int, tuple[str, str | None, str | None]]:
        """The catalog's records of ``ids`` (one query), by id; :attr:`MISSING` for an id it lacks."""
        ask = sorted(i for i in ids if i >= 0)
        found = {int(r.id): (str(r.path), _label(r.label), r.status) for r in self.index.records(ask)} if ask else {}
        return {i: found.get(i, self.MISSING) for i in ids}


def _get(table: list | dict, i: int) -> Any:
    """``table[i]``, or None where the list or dict has no entry for ``i``."""
    if isinstance(table, dict):
        return table.get(i)
    return table[i] if 0 <= i < len(table) else None


def _label(v: Any) -> str | None:
    return None if v is None else str(v)


def open_engine(index: str | os.PathLike = "default", index_root: str | os.PathLike | None = None, *,
                backbone_weights: str | os.PathLike | None = None, correction: bool = True) -> QueryEngine:
    """Open an index by name or folder and wrap it in a :class:`QueryEngine`.

    ``backbone_weights``: the weight file the index's backbone was built with, for --image
    queries on an index made with ``zslr index --weights FILE``. ``correction=False`` ranks by
    raw model scores instead of the score correction the model card records.
    """
    from ..index import open_index
    return QueryEngine(open_index(index, root=index_root), backbone_weights=backbone_weights, correction=correction)
