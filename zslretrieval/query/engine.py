"""The query path: specs -> descriptors -> embeddings in the index's space -> search -> records.

Every kind of query goes through :meth:`QueryEngine.run`, so the benchmark evaluation
(:func:`zslretrieval.query.evaluate.engine_map`) measures exactly what users get.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import DataNotFoundError, IncompatibleError, InvalidInputError
from .spec import QuerySpec
from .textual import general_query, text_descriptor
from .vocab import (Vocabulary, build_attribute_vector, normalise_semantics, parse_attribute_terms,
                    parse_vector_text, read_attribute_file, resolve_attribute_terms)


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
            resolved = resolve_attribute_terms(parse_attribute_terms(spec.text), self.vocabulary)
            V[r, list(resolved)] = list(resolved.values())
            prepared.append(_Prepared(spec, {"attributes": [{"name": names[i], "weight": w} for i, w in resolved.items()]}))
        V = normalise_semantics(V, self.card.semantic_norm)
        for p, row in zip(prepared, V):
            p.descriptor = row
        return prepared, V

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
        w = check_general_weight(general_weight)
        k = self.effective_k(k, len(specs))
        if w is not None:
            self._fusion_source()      # refuse before any work when the index cannot do it
            n = self._n_entries()
            if n is not None and len(specs) * n > MAX_RESULTS:
                raise InvalidInputError(
                    f"fusing the general model scores every image: {len(specs)} queries x {n:,} images = "
                    f"{len(specs) * n:,} scores; at most {MAX_RESULTS:,} per call: split the batch")
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
        if k is not None:
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
        """Attach catalog records to the ranked ids (one cached-table lookup for all queries)."""
        paths, labels, status = self.records_table.lookup(I)
        results = []
        for p, drow, irow, prow, lrow, srow in zip(prepared, D.tolist(), I.tolist(), paths, labels, status):
            if -1 in irow:  # padding (fewer entries than k) or a stale entry: the ranking ends there
                n = irow.index(-1)
                drow, irow = drow[:n], irow[:n]
            results.append(QueryResult(p.spec, p.resolved,
                                       list(map(Hit, range(1, len(irow) + 1), irow, drow, prow, lrow, srow))))
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

    @property
    def affine(self) -> bool:
        return self.W is not None

    def __call__(self, s: np.ndarray) -> np.ndarray:
        """(Q, A) descriptors -> (Q, E) float32 embeddings."""
        if self.W is None:
            return self._torch(s)
        out = s @ self.W
        out += self.b
        return out


# Results one call may return (queries x top-k, after clamping to the index size): a Hit costs a
# few hundred bytes, so this bounds a call at a few GiB instead of letting --top-k size it.
MAX_RESULTS = 20_000_000


class RecordTable:
    """Path / label / status of catalog images as arrays beside the sorted image ids.

    The first lookup asks the catalog for just the ids it needs (what a one-shot ``zslr query``
    does); from the second on, the table of every "ok" image is read once and lookups are
    array indexing, not SQL (1 query on 50k images: 0.4-8 ms of SQL per call -> ~10 us).
    Ids the table lacks (e.g. entries whose image is not "ok") still go to the catalog.
    Per-image arrays (``ids`` order) can be kept beside these, e.g. a score adjustment.
    """

    def __init__(self, index: Any):
        self.index = index
        self.calls = 0
        self.ids: np.ndarray | None = None      # (n,) int64, sorted
        self.paths: np.ndarray | None = None    # (n,) object: str
        self.labels: np.ndarray | None = None   # (n,) object: str | None
        self.status: np.ndarray | None = None   # (n,) object: str | None

    def load(self) -> None:
        """Read every "ok" image's record once (needs ``index.all_records``; otherwise stays per-call)."""
        all_records = getattr(self.index, "all_records", None)
        if all_records is None:
            return
        recs = all_records("ok")
        ids = np.fromiter((r.id for r in recs), np.int64, len(recs))
        order = np.argsort(ids, kind="stable")
        # object arrays: per-hit lookups index them one by one, per-image vectors can fancy-index alike
        self.paths = _objects([str(recs[j].path) for j in order])
        self.labels = _objects([_label(recs[j].label) for j in order])
        self.status = _objects([recs[j].status for j in order])
        # ids last: a server thread that sees them set finds the other arrays complete
        self.ids = ids[order]

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each id in the table and whether it is there (ids any shape; -1 is never there)."""
        pos = self.ids.searchsorted(ids)  # the method: np.searchsorted adds a Python-level wrapper
        np.minimum(pos, max(len(self.ids) - 1, 0), out=pos)
        found = self.ids[pos] == ids if len(self.ids) else np.zeros(np.shape(ids), bool)
        return pos, found

    def lookup(self, I: np.ndarray) -> tuple[list[list[str]], list[list[str | None]], list[list[str | None]]]:
        """(Q, k) ids -> paths, labels, statuses as (Q, k) nested lists; ("", None, "missing from catalog")
        for an id the catalog lacks (and for -1 padding, which callers cut off).

        Once the table is loaded: one searchsorted and three object-array gathers for the whole
        batch (a 1,000 x 10 batch builds no per-hit tuples); ids the table lacks go to SQL.
        """
        I = np.asarray(I, np.int64)
        self.calls += 1
        if self.ids is None and self.calls >= 2:
            self.load()
        if self.ids is not None and len(self.ids):
            pos, found = self.positions(I)
            if found.all():
                return self.paths[pos].tolist(), self.labels[pos].tolist(), self.status[pos].tolist()
            P, L, S = self.paths[pos], self.labels[pos], self.status[pos]
            rest = ~found
        else:
            P, L, S = (np.empty(I.shape, object) for _ in range(3))
            rest = np.ones(I.shape, bool)
        P[rest], L[rest], S[rest] = "", None, "missing from catalog"
        ask = I[rest & (I >= 0)]
        if len(ask):
            recs = {int(r.id): r for r in self.index.records([int(i) for i in np.unique(ask)])}
            for q, j in zip(*np.nonzero(rest & (I >= 0))):
                r = recs.get(int(I[q, j]))
                if r is not None:
                    P[q, j], L[q, j], S[q, j] = str(r.path), _label(r.label), r.status
        return P.tolist(), L.tolist(), S.tolist()


def _objects(values: list) -> np.ndarray:
    """A 1-d object array holding ``values`` as they are (np.array would try to nest sequences)."""
    out = np.empty(len(values), object)
    out[:] = values
    return out


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
