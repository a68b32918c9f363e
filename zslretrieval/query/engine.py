"""The query path: specs -> descriptors -> embeddings in the index's space -> search -> records.

Every kind of query goes through :meth:`QueryEngine.run`, so the benchmark evaluation
(:func:`zslretrieval.query.benchmark_map.engine_map`) measures exactly what users get. The
engine orchestrates; each step lives in its own module:

    prepare.py          specs -> Prepared (descriptor, image or general-model vector)
    fast_attributes.py  the one-query fast path for attribute lists
    projection.py       Projector and embed_queries: prepared queries -> index space
    fusion.py           the general model's score fused into a model's ranking
    records.py          RecordTable: ranked ids -> hits with catalog records
    results.py          Hit, QueryResult, top-k clamping and result bounds
    protocols.py        what the engine reads from an index and a general model
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..errors import IncompatibleError
from .fast_attributes import LeanAttributes, attribute_descriptors, attribute_embed, lean_attributes
from .fusion import FUSABLE, GeneralFusion, check_general_weight
from .prepare import TOP_CLASS_ATTRIBUTES, Prepared, QueryPreparer
from .projection import Projector, embed_queries
from .protocols import GeneralModelView, IndexManifestView, IndexRecordView, SearchableIndex
from .records import RecordTable
from .results import MAX_RESULTS, Hit, QueryResult, check_fused_size, clamp_top_k
from .spec import QuerySpec

# Names importable from here before the split (``from zslretrieval.query.engine import ...``).
__all__ = ["FUSABLE", "MAX_RESULTS", "TOP_CLASS_ATTRIBUTES", "Hit", "IndexManifestView", "IndexRecordView",
           "Projector", "QueryEngine", "QueryResult", "RecordTable", "SearchableIndex", "check_general_weight",
           "open_engine"]


class QueryEngine:
    """Answers queries against one open index (see ``zslretrieval.index.open_index``).

    The index's model (if any) is loaded once; ``vocabulary`` and ``classes`` come from its card.
    """

    # The fast path's two stages, plain functions (no bound-method layer on the one-query path);
    # engine attributes so that scripts/bench_query.py and the tests can time and spy on them.
    _attribute_descriptors = staticmethod(attribute_descriptors)
    _attribute_embed = staticmethod(attribute_embed)

    def __init__(self, index: SearchableIndex, *, backbone_weights: str | os.PathLike | None = None,
                 general: GeneralModelView | None = None, correction: bool = True):
        self.index = index
        # The general zero-shot model (text -> raw backbone features) for indexes without a model;
        # loaded (or built, once per data folder) on the first text query.
        self._general = general
        self.backbone_weights = backbone_weights
        self.manifest: IndexManifestView = index.manifest
        self.metric: str = self.manifest.metric
        loaded = index.model()
        self.model, self.card, self.class_semantics = loaded if loaded is not None else (None, None, None)
        if self.model is not None:
            self.model.eval()
        self._backbone = None
        self._records = RecordTable(index)   # reads nothing until the first query
        self._projector: Projector | None = None
        self._lean: LeanAttributes | None | bool = False   # set up on the first attribute query (False: not yet)
        # the index's search without re-checking the engine's own unit vectors
        self._search_unchecked = index.search_unchecked
        self._prep = QueryPreparer(self.model, self.card, self.class_semantics, dim=int(self.manifest.dim),
                                   index_name=self.manifest.name, general=self.general_model)
        self.vocabulary = self._prep.vocabulary
        self.classes = self._prep.classes
        # The score correction the model card records (chosen on val; see zslretrieval.correction),
        # with its per-image terms from the index; correction=False ranks by raw model scores.
        # An index of raw features gets the general model's hubness-correction terms when the
        # general model is loaded (first text query; see general_model()).
        self.correction = correction
        self.terms = index.correction_terms() if correction and self.model is not None else None
        self._seen = set(self.card.seen_classes) if self.card is not None else set()
        # the collection as the general model sees it, for --general-weight (built on first use)
        self._fusion = GeneralFusion(index, self.general_model, has_model=self.model is not None,
                                     correction=correction, search=self.search_vectors)

    # -- what this index can answer ----------------------------------------------------
    def supports(self, kind: str) -> bool:
        """Whether this index can answer ``kind`` queries (for UIs; loads nothing heavy)."""
        if kind == "image":
            return True
        if self.model is None:
            from ..text.general import HEAD_BACKBONES
            return kind in ("text", "class", "attributes") and self.manifest.backbone in HEAD_BACKBONES
        if kind == "text":  # a text modality, or a sentence map in the checkpoint (query.sentences)
            return ("text" in (self.card.semantic_modalities or [])
                    or getattr(self.model, "sentence_map", None) is not None)
        if kind == "class":
            return self.class_semantics is not None
        return bool(self.vocabulary and len(self.vocabulary) and self.model.semantic_dim == len(self.vocabulary))

    def general_model(self) -> GeneralModelView:
        """The general model matching this raw index's backbone and weights (IncompatibleError otherwise)."""
        if self._general is None:
            from ..text.general import HEAD_BACKBONES, load_general_model

            name = self.manifest.backbone
            # not the backbone registry (it imports torch): an index of images names its backbone, and
            # one without an ImageNet head is refused by load_general_model with its own reason
            if not name or (name not in HEAD_BACKBONES and self.manifest.source != "images"):
                raise IncompatibleError(
                    f"index {self.manifest.name!r} holds precomputed features (source {name!r}) and "
                    "no model; text queries need either a model (`zslr index --model`) or images indexed with an "
                    f"ImageNet backbone ({', '.join(HEAD_BACKBONES)})")
            self._general = load_general_model(name)
        want = self.manifest.backbone_weights
        if want and self._general.backbone_weights != want:
            raise IncompatibleError(
                f"index {self.manifest.name!r} was built with {self._general.backbone} weights {want!r}; "
                f"the general model knows only {self._general.backbone_weights!r}, whose classifier it was built from")
        if self.model is None and self.correction and self.terms is None:
            self.terms = self.index.general_terms(self._general)
        return self._general

    # -- resolution and embedding (prepare.py, fast_attributes.py, projection.py) -------
    def prepare(self, spec: QuerySpec) -> Prepared:
        """Resolve one spec into a normalised descriptor (or an image path) plus what was understood."""
        return self._prep.prepare(spec)

    def prepare_all(self, specs: Sequence[QuerySpec]) -> tuple[list[Prepared], np.ndarray | None]:
        """:meth:`prepare` for every spec, plus their (Q, A) descriptor matrix when all are attribute lists."""
        return self._prep.prepare_all(specs)

    def _lean_setup(self) -> LeanAttributes | None:
        """What the fast path for attribute lists needs, read once; None where it does not apply."""
        if self._lean is False:
            self._lean = lean_attributes(self.model, self.card, self.vocabulary, self.metric, int(self.manifest.dim),
                                         lambda: self.projector)
        return self._lean

    def _attribute_queries(self, specs: Sequence[QuerySpec]) -> tuple[list[Prepared], np.ndarray] | None:
        """Attribute lists -> their prepared queries and (Q, E) finite unit float32 vectors, or None.

        Bit for bit what :meth:`prepare_all` + :meth:`embed` give (see ``fast_attributes``); None
        where it does not apply or a check fails, and the general path then raises its usual error.
        """
        lean = self._lean_setup()
        if lean is None:
            return None
        built = self._attribute_descriptors(specs, lean)
        if built is None:
            return None
        out = self._attribute_embed(built[1], lean)
        return None if out is None else (built[0], out)

    def embed(self, prepared: list[Prepared], descriptors: np.ndarray | None = None) -> np.ndarray:
        """Prepared queries -> (Q, E) float32 in the index's space, L2-normalised when metric is "ip"
        (:func:`projection.embed_queries`); ``descriptors``: their (Q, A) matrix when
        :meth:`prepare_all` built one."""
        return embed_queries(prepared, descriptors, dim=int(self.manifest.dim), metric=self.metric,
                             projector=lambda: self.projector, model=self.model, backbone=self._load_backbone)

    @property
    def projector(self) -> Projector:
        """Descriptor -> embedding map of the index's model, set up once per engine."""
        if self._projector is None:
            self._projector = Projector(self.model)
        return self._projector

    def _load_backbone(self):
        if self._backbone is None:
            lean = self._lean_backbone()
            if lean is not None:
                self._backbone = lean
                return lean
            from ..features.backbones import BACKBONES, load_backbone

            name = self.manifest.backbone
            if not name or name not in BACKBONES:
                raise IncompatibleError(
                    f"index {self.manifest.name!r} was built from precomputed features "
                    f"(source {name!r}), so there is no backbone to embed a query image; query it by "
                    "--attributes/--class, or index images with `zslr index DIR`")
            bb = load_backbone(name, self.backbone_weights)
            want = self.manifest.backbone_weights
            if want and bb.weights_id != want:
                raise IncompatibleError(
                    f"index {self.manifest.name!r} was built with {name} weights {want!r} but "
                    f"{bb.weights_id!r} were loaded; pass the same weight file with --weights")
            self._backbone = bb
        return self._backbone

    def _lean_backbone(self):
        """The backbone's cached ONNX graph without torch (``features.lean_forward``), when the CPU
        forward is ONNX Runtime (``$ZSLR_CPU_FORWARD`` auto/onnxruntime) and the graph of these
        weights was exported before; else None (the torch backbone, which records it for next time)."""
        name = self.manifest.backbone
        if not name or (os.environ.get("ZSLR_CPU_FORWARD") or "auto") not in ("auto", "onnxruntime"):
            return None
        from ..features.lean_forward import load_lean_forward

        lean = load_lean_forward(name, self.backbone_weights)
        want = self.manifest.backbone_weights
        if lean is None or (want and lean.weights_id != want):
            return None   # the torch path says what is wrong with these weights
        return lean

    # -- search -----------------------------------------------------------------------
    def run(self, specs: list[QuerySpec], k: int | None = 10, general_weight: float | None = None,
            options=None) -> list[QueryResult]:
        """Resolve, embed and search all ``specs`` in one batched index call; ``k=None`` ranks everything.

        ``options``: a :class:`query.refined.SearchOptions` (relevance feedback, filters, the
        calibrated relevance and its cut-off), answered by :func:`query.refined.run_refined`.

        ``k`` larger than the index is clamped to it: the result is then the full ranking
        (``k=None``), never a result array sized by ``k`` itself. ``general_weight`` (0 < w <= 1,
        an index with a model of its own): text/class/attribute queries are ranked by
        ``(1 - w) z(model score) + w z(general-model score)`` (see :meth:`fuse_general`).
        """
        if options is not None and options.active:
            from .refined import run_refined
            return run_refined(self, specs, k, options, general_weight)
        w = None if general_weight is None else check_general_weight(general_weight)
        k = clamp_top_k(k, len(specs), self.index.ntotal)
        if w is not None:
            self._fusion.check_source()      # refuse before any work when the index cannot do it
            check_fused_size(len(specs), self.index.ntotal)
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
        D, I = self.search_mixed(xq, k, fix)
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

    def fuse_general(self, prepared: list[Prepared], xq: np.ndarray, corrected: np.ndarray, weight: float,
                     width: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``width`` of ``(1 - weight) z(model) + weight z(general)`` for each query: D, I (Q, width)
        (:meth:`fusion.GeneralFusion.fuse`)."""
        return self._fusion.fuse(prepared, xq, corrected, weight, width)

    def _general_gallery(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image ids, unit raw features, scale, offset) as the general model sees the collection
        (:meth:`fusion.GeneralFusion.gallery`; scripts/bench_text.py reads it)."""
        return self._fusion.gallery()

    def effective_k(self, k: int | None, n_queries: int = 1) -> int | None:
        """``k`` checked and clamped to the index size (None = full ranking).

        Shared by ``zslr query``, the API and the server: a ``--top-k`` beyond the number of
        entries returns every entry, and a batch whose results would not fit in memory is
        refused before anything is allocated (:func:`results.clamp_top_k`).
        """
        return clamp_top_k(k, n_queries, self.index.ntotal)

    def corrects(self, p: Prepared) -> bool:
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
            from ..correction.search import search_corrected
            return search_corrected(self.index.search, xq, k, self.terms, self.index.ntotal)
        return self.index.search(xq, k)

    def search_mixed(self, xq: np.ndarray, k: int | None, corrected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_vectors` where row ``q`` is ranked by corrected scores iff ``corrected[q]``: at most
        two batched index searches, rows put back in query order (-inf / -1 pad the narrower one)."""
        if not corrected.any() or corrected.all():
            return self.search_vectors(xq, k, corrected=bool(corrected.any()))
        Dr, Ir = self.search_vectors(xq[~corrected], k)
        Dc, Ic = self.search_vectors(xq[corrected], k, corrected=True)
        width = max(Dr.shape[1], Dc.shape[1])
        D, I = np.full((len(xq), width), -np.inf, np.float32), np.full((len(xq), width), -1, np.int64)
        D[~corrected, :Dr.shape[1]], I[~corrected, :Ir.shape[1]] = Dr, Ir
        D[corrected, :Dc.shape[1]], I[corrected, :Ic.shape[1]] = Dc, Ic
        return D, I

    def collect(self, prepared: list[Prepared], D: np.ndarray, I: np.ndarray) -> list[QueryResult]:
        """Attach catalog records to the ranked ids (:meth:`records.RecordTable.collect`)."""
        return self._records.collect(prepared, D, I)

    @property
    def records_table(self) -> RecordTable:
        return self._records


def open_engine(index: str | os.PathLike = "default", index_root: str | os.PathLike | None = None, *,
                backbone_weights: str | os.PathLike | None = None, correction: bool = True) -> QueryEngine:
    """Open an index by name or folder and wrap it in a :class:`QueryEngine`.

    ``backbone_weights``: the weight file the index's backbone was built with, for --image
    queries on an index made with ``zslr index --weights FILE``. ``correction=False`` ranks by
    raw model scores instead of the score correction the model card records.
    """
    from ..index import open_index
    return QueryEngine(open_index(index, root=index_root), backbone_weights=backbone_weights, correction=correction)

