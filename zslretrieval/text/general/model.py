"""The model users get: ``GeneralModel`` (text -> unit query vectors in a backbone's raw feature space) and its file.

``save``/``load`` write and read one numpy ``.npz`` file (no pickles, no torch): a JSON ``meta``
entry (``meta()``, carrying ``FORMAT``), the 1000 ImageNet category names, and float32 arrays --
the unit classifier rows (``known_protos``), the names' text embeddings (``known_text``), the ridge
matrix and the DEM layers (``maps.DemArrays``) of the deployed map, and the reference vocabulary
(the names' projected queries: derivable from ``known_text``, but the neighbour map over 1000 names
takes 0.3 s idle and seconds on a busy machine, where reading its 5 MB takes milliseconds).
Everything a query needs is in it, so loading imports neither torch, torchvision nor timm. A file
of another format, or one that does not read, is a ``CheckpointError`` (``cache.py`` then looks
further or rebuilds). Where the file lives: ``cache.py``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointError, InvalidInputError
from ...fileio import atomic_write
from ..names import as_name
from .anchors import EXACT_ANCHOR, apply_anchors, name_anchors
from .hierarchy import tree_anchors
from .glosses import ATTRIBUTE_TEMPLATE, prompt_embeddings, with_glosses
from .imagenet import imagenet_categories, imagenet_head
from .lexicon import glosses_of, imagenet_lemmas
from .maps import DemArrays, Neighbours, _predict
from .vectors import _unit

if TYPE_CHECKING:
    from ...correction import ScoreCorrection

# 10: WordNet hierarchy anchors chosen in the build (hparams["tree"]); 9: numpy .npz (was a torch .pt)
FORMAT = "zslr-general-10"
_DEM_KEYS = ("w1", "b1", "w2", "b2")


@dataclasses.dataclass
class GeneralModel:
    """Text -> visual prototypes for one backbone. ``embed_texts(texts) -> (n, D)`` unit rows.

    ``method``: the maps used, e.g. "dem" or "dem+nbr" (their unit outputs summed with the shares
    ``hparams["mix"]``, then unit-normalised). ``templates``: the prompt(s) a name is read in
    (embeddings averaged). Neighbours ("nbr") use ``known_text`` (1000, 384), the ImageNet names'
    embeddings, and the unit classifier rows.
    ``reference`` (1000, D): the projected queries of the ImageNet names, the vocabulary against
    which an index computes each image's hubness-correction terms (``correction``); stored, or derived
    from ``known_text`` through the maps on first use. ``categories``: the 1000 names in class order.
    ``source``/``path``: where this copy came from ("built", "cache" or "shipped"; ``cache.py``).
    """

    backbone: str
    backbone_weights: str
    feature_dim: int
    encoder: str
    method: str
    templates: list[str]
    hparams: dict[str, Any]
    selection: dict[str, Any]   # val/test figures of every method and candidate, split sizes, seed, timings
    ridge: np.ndarray | None = None   # (385, D) when the method uses ridge
    dem: DemArrays | None = None       # the fitted DEM's layers when the method uses DEM
    known_text: np.ndarray | None = None  # (1000, 384) the ImageNet names' embeddings (the chosen reading)
    known_protos: np.ndarray | None = None  # (1000, D) their unit prototypes (the backbone's head rows)
    categories: list[str] | None = None     # the 1000 ImageNet names, class-index order
    source: str = dataclasses.field(default="built", compare=False)
    path: Path | None = dataclasses.field(default=None, compare=False)
    _reference: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def reference(self) -> np.ndarray:
        """(1000, D) the 1000 names' queries through the deployed map, each without itself as a
        neighbour (the reference vocabulary of the correction); computed once from ``known_text``."""
        if self._reference is None:
            self._reference = _predict(self.hparams["mix"], self.ridge, self.dem, self._nbr(), self.known_text,
                                       exclude_self=True)
        return self._reference

    def _categories(self) -> list[str]:
        """The 1000 ImageNet names (stored in the model; torchvision's list for a model made without them)."""
        if self.categories is None:
            self.categories = imagenet_categories()
        return self.categories

    @property
    def template(self) -> str:
        """The first prompt template (how a name is shown as understood)."""
        return self.templates[0]

    @property
    def correction(self) -> ScoreCorrection:
        """The hubness correction chosen on val (``correction.ScoreCorrection``; ``none`` if none helped)."""
        from ...correction import ScoreCorrection
        return ScoreCorrection.from_dict(self.selection.get("retrieval_correction"))

    @property
    def fingerprint(self) -> str:
        """Content hash of what the model is (its record); keys the per-image terms an index stores."""
        return hashlib.sha256(json.dumps(self.meta(), sort_keys=True).encode()).hexdigest()[:16]

    def nearest_classes(self, v: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` ImageNet classes whose (unit) classifier rows are nearest to visual vector ``v`` (D,).

        Says what a query "looks like" to the backbone, in words a person can check.
        """
        names, protos = self._categories(), self._protos()
        s = protos @ _unit(np.asarray(v, np.float32))
        top = np.argsort(-s, kind="stable")[:k]
        return [(names[i], float(s[i])) for i in top]

    def text_to_visual(self, text_emb: np.ndarray) -> np.ndarray:
        """(n, 384) sentence embeddings -> (n, D) unit visual prototypes in the backbone's feature space."""
        t = np.asarray(text_emb, np.float32)
        if t.ndim != 2 or t.shape[1] != 384:
            raise InvalidInputError(f"expected (n, 384) text embeddings, got {t.shape}")
        return _predict(self.hparams["mix"], self.ridge, self.dem, self._nbr(), t)

    def _protos(self) -> np.ndarray:
        """(1000, D) unit classifier rows of the backbone (read once)."""
        if self.known_protos is None:
            w, _, _ = imagenet_head(self.backbone)   # a model made in memory without them (build time)
            self.known_protos = _unit(w).astype(np.float32)
        return self.known_protos

    def _nbr(self) -> Neighbours | None:
        """The neighbour map's inputs when the deployed mix uses it, else None."""
        if "nbr" not in self.hparams["mix"]:
            return None
        return Neighbours(self.known_text, self._protos(), int(self.hparams["nbr_T"]), float(self.hparams["nbr_tau"]))

    @property
    def anchor_weight(self) -> float:
        """Share of the hyponym anchors' prototypes in a name's query, chosen on val (0: none)."""
        return float(self.hparams.get("anchor", 0.0))

    @property
    def anchor_lemmas(self) -> str:
        """Which lemmas a hyponym may end ("all" or "first"), chosen on val with the share."""
        return str(self.hparams.get("anchor_lemmas", "all"))

    @property
    def tree_setting(self) -> tuple[float, float, int | None] | None:
        """WordNet hierarchy anchors' (share, decay, max_up), chosen on val; None where the share is 0."""
        tree = self.hparams.get("tree")
        if not tree or not tree[0]:
            return None
        return float(tree[0]), float(tree[1]), None if tree[2] is None else int(tree[2])

    def anchors(self, texts: Sequence[str], kind: str = "name") -> list[dict[str, Any]]:
        """Per text, the ImageNet classes its query is anchored on (``anchors.py``, known-name anchors;
        ``hierarchy.py``, WordNet relatives): ``{"rule": "exact" | "hyponym" | "hierarchy", "weight": a,
        "classes": [names]}`` (hierarchy: also ``"via"``, e.g. "woodpecker -> piciform bird"), or {}."""
        if kind == "attribute":
            return [{} for _ in texts]
        cats, out, tree = self._categories(), [], self.tree_setting
        for t in texts:
            classes, rule = name_anchors(t, imagenet_lemmas(), hyponyms=self.anchor_lemmas)
            a = EXACT_ANCHOR if rule == "exact" else self.anchor_weight if rule == "hyponym" else 0.0
            extra: dict[str, Any] = {}
            if rule is None and tree is not None:
                classes, _, via = tree_anchors(t, None, tree[1], tree[2])
                if classes:
                    rule, a, extra = "hierarchy", tree[0], {"via": via}
            out.append({"rule": rule, "weight": a, "classes": [cats[i] for i in classes], **extra} if a else {})
        return out

    def text_embeddings(self, texts: Sequence[str], kind: str = "name") -> np.ndarray:
        """Sentence embeddings (n, 384) of ``texts`` read as names (this model's prompt ensemble) or, with
        ``kind="attribute"``, as attribute words (``attribute_template``)."""
        from ..encoder import apply_template, encode_texts
        if kind == "attribute":
            return encode_texts(apply_template(texts, self.attribute_template))
        names = [as_name(t) for t in texts]
        base = prompt_embeddings(lambda tpl: encode_texts(apply_template(names, tpl)), self.templates)
        return with_glosses(base, names, self.gloss_weight, encode_texts)

    @property
    def attribute_template(self) -> str:
        """How an attribute word is read (chosen on val; models saved before the choice: ATTRIBUTE_TEMPLATE)."""
        return str(self.hparams.get("attribute_template", ATTRIBUTE_TEMPLATE))

    @property
    def gloss_weight(self) -> float:
        """Share of WordNet definitions in a name's embedding, chosen on val (0: names alone)."""
        return float(self.hparams.get("gloss", 0.0))

    def prompts(self, texts: Sequence[str], kind: str = "name") -> list[str]:
        """The sentences ``texts`` are read as (first template of an ensemble), for "understood as"."""
        from ..encoder import apply_template
        if kind == "attribute":
            return apply_template(texts, self.attribute_template)
        return apply_template([as_name(t) for t in texts], self.template)

    def glosses(self, texts: Sequence[str], kind: str = "name") -> list[list[str]]:
        """The WordNet definitions each text is read with (empty where none, for attributes, or gloss 0)."""
        if kind == "attribute" or not self.gloss_weight:
            return [[] for _ in texts]
        return [list(glosses_of(t)) for t in texts]

    def embed_texts(self, texts: Sequence[str], kind: str = "name") -> np.ndarray:
        """Texts -> (n, D) unit query vectors for a raw-feature index of ``backbone``: the map's output,
        anchored on the ImageNet classes a name names (attribute words: the map alone)."""
        v = self.text_to_visual(self.text_embeddings(texts, kind))
        if kind == "attribute":
            return v
        return apply_anchors(v, texts, self._protos(), self.anchor_weight, hyponyms=self.anchor_lemmas,
                             tree=self.tree_setting)[0]

    # -- persistence --
    def meta(self) -> dict[str, Any]:
        """The model's record (JSON-able): format, backbone and weights, encoder, maps, choices and figures."""
        return {"format": FORMAT, "backbone": self.backbone, "backbone_weights": self.backbone_weights,
                "feature_dim": self.feature_dim, "encoder": self.encoder, "method": self.method,
                "templates": list(self.templates), "hparams": self.hparams, "selection": self.selection}

    def arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`save` stores besides the meta: the names and the float32 arrays of the deployed map."""
        out = {"categories": np.array(self._categories()),
               "known_protos": np.ascontiguousarray(self._protos(), np.float32),
               "known_text": np.ascontiguousarray(self.known_text, np.float32),
               "reference": np.ascontiguousarray(self.reference, np.float32)}
        if self.ridge is not None:
            out["ridge"] = np.ascontiguousarray(self.ridge, np.float32)
        if self.dem is not None:
            out.update({f"dem.{k}": getattr(self.dem, k) for k in _DEM_KEYS})
            out["dem.fusion"] = np.array(self.dem.fusion, np.float32)
            out["dem.relu_out"] = np.array(self.dem.relu_out)
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (an ``.npz``) atomically (a reader never sees half a file)."""
        if self.known_text is None:
            raise CheckpointError(f"general model of {self.backbone}: no known_text to save")
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps(self.meta())), **self.arrays())
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        return Path(path)

    @staticmethod
    def read_meta(path: str | os.PathLike) -> dict[str, Any]:
        """The ``meta`` record of a saved model alone (reads no array); CheckpointError if it does not read."""
        try:
            with np.load(path, allow_pickle=False) as z:
                return json.loads(str(z["meta"]))
        except Exception as e:  # torn file, foreign file
            raise CheckpointError(f"{path}: not a readable general model ({type(e).__name__}: {e})") from e

    @classmethod
    def load(cls, path: str | os.PathLike, source: str = "cache") -> GeneralModel:
        """Read a model :meth:`save` wrote; CheckpointError for a torn, foreign or other-format file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise CheckpointError(f"{path}: general model format {meta.get('format')!r}, expected {FORMAT!r}")
                arrays = {k: z[k] for k in z.files if k != "meta"}
        except CheckpointError:
            raise
        except Exception as e:  # torn file, foreign file
            raise CheckpointError(f"{path}: not a readable general model ({type(e).__name__}: {e})") from e
        try:
            d = int(meta["feature_dim"])
            m = cls(meta["backbone"], meta["backbone_weights"], d, meta["encoder"], meta["method"],
                    list(meta["templates"]), meta["hparams"], meta["selection"], source=source, path=Path(path))
            m.categories = [str(c) for c in arrays["categories"]]
            m.known_protos, m.known_text, m._reference = (arrays["known_protos"], arrays["known_text"],
                                                          arrays["reference"])
            m.ridge = arrays.get("ridge")
            if "dem.w1" in arrays:
                m.dem = DemArrays(*(arrays[f"dem.{k}"] for k in _DEM_KEYS), float(arrays["dem.fusion"]),
                                  bool(arrays["dem.relu_out"]))
            want = {"categories": (1000,), "known_protos": (1000, d), "known_text": (1000, 384),
                    "reference": (1000, d)}
            if m.ridge is not None:
                want["ridge"] = (385, d)
            bad = [f"{k} {arrays[k].shape} (expected {v})" for k, v in want.items() if arrays[k].shape != v]
            if m.dem is not None and (m.dem.w1.shape[1] != 384 or m.dem.w2.shape != (d, m.dem.w1.shape[0])):
                bad.append(f"dem layers {m.dem.w1.shape}, {m.dem.w2.shape}")
            missing = [f"no {k} arrays" for k in m.hparams["mix"]
                       if (k == "ridge" and m.ridge is None) or (k == "dem" and m.dem is None)]
        except Exception as e:
            raise CheckpointError(f"{path}: general model state does not load ({type(e).__name__}: {e})") from e
        if bad or missing:
            raise CheckpointError(f"{path}: general model arrays do not fit: {', '.join(bad + missing)}")
        return m
