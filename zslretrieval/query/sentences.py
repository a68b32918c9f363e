"""Free-text queries on a model index through a map learned from the training photos' own sentences.

    smap, record = fit_sentence_map(dataset, model, card, seed=0)      # chosen on val classes
    save_checkpoint(model, card, path, class_semantics, sentence_map=smap.to_tensors())
    d, resolved = sentence_descriptor(spec, model.sentence_map, card, class_semantics)  # at query time

The map turns a sentence embedding ``e`` (384, ``zslretrieval.text``) into a class descriptor in the
model's own layout (``card.semantic_modalities`` side by side, each block unit length like the training
semantics), which the model then projects like any class descriptor:

* every block: a ridge ``e W + b`` fitted on image-level pairs -- each sentence written about a training photo
  against its photo's class descriptor (CUB trainval: ~70,000 sentences of ~7,000 photos);
* the ``descriptions`` block (class means of such sentences): ``beta * e + (1 - beta) * unit(e W + b)_desc``, the
  sentence itself being a one-sentence description of its class;
* class anchors: a share ``gamma`` of the descriptor is the mix of every class's descriptor weighted by
  ``softmax(cos(e, the class's mean description) / tau)`` -- the classes the text reads most like. Class
  descriptions are side information, like attribute rows, for unseen classes too (the CUB "sent" setting).
  The anchors' scope is every class, or only the classes the model was not trained on (zero-shot retrieval's
  candidate set, as in the per-class top-1 among unseen classes; at selection: the val classes).

Chosen on the val classes (the protocol of ``protocol.selection``): the map is fitted on the sentences of
the ``train`` photos, the model is refitted on ``train`` with its chosen hyper-parameters and epochs, and
each (``lam``, ``beta``) is scored by the mean AP of single val-photo sentences (a seeded sample) over the
val gallery, ranked by that model. The chosen map is refitted on the ``trainval`` sentences.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import IncompatibleError, InvalidInputError

LAMBDAS = (0.1, 1.0, 10.0, 100.0)
BETAS = (0.0, 0.5, 1.0)
# (gamma, tau, scope) of the class anchors; gamma 0 = the ridge alone. Scope "unseen": only the classes the model
# was not trained on (at selection: the val classes), the candidate set of zero-shot retrieval; "all": every class
ANCHORS = ((0.0, 0.05, "all"),
           *((g, t, scope) for scope in ("all", "unseen") for g, t in ((0.5, 0.02), (1.0, 0.01), (1.0, 0.02), (1.0, 0.05))))
VAL_SENTENCES = 1000
NEAREST = 5


def _unit_blocks(d: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    out = np.empty_like(d)
    start = 0
    for w in dims:
        blk = d[:, start:start + w]
        out[:, start:start + w] = blk / np.maximum(np.linalg.norm(blk, axis=1, keepdims=True), 1e-12)
        start += w
    return out


@dataclass
class SentenceMap:
    """``e`` (n, 384) -> class descriptors (n, S) in ``modalities`` order (see the module docstring)."""

    W: np.ndarray            # (384, S)
    b: np.ndarray            # (S,)
    modalities: list[str]
    dims: list[int]
    beta: float = 0.0
    lam: float = 1.0
    encoder: str = ""
    selection: dict[str, Any] = field(default_factory=dict)
    # class anchors: every class's mean description (C, 384) and descriptor (C, S); a share ``gamma`` of the
    # query is the softmax(cosine / tau)-weighted mix of the descriptors of the classes its text is nearest to
    class_text: np.ndarray | None = None
    class_sem: np.ndarray | None = None
    gamma: float = 0.0
    tau: float = 0.05
    scope: str = "all"
    anchor_mask: np.ndarray | None = None   # (C,) bool: the classes anchors may use (scope "unseen")

    def class_weights(self, e: np.ndarray) -> np.ndarray:
        """(n, C) softmax(cos(e, class mean description) / tau)."""
        z = (np.asarray(e, np.float32) @ self.class_text.T) / self.tau
        if self.scope == "unseen" and self.anchor_mask is not None:
            z = np.where(self.anchor_mask[None, :], z, -np.inf)
        z = np.exp(z - z.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True)

    def descriptors(self, e: np.ndarray, ridge: np.ndarray | None = None) -> np.ndarray:
        e = np.asarray(e, np.float32)
        d = e @ self.W + self.b if ridge is None else ridge.copy()
        if "descriptions" in self.modalities and self.beta > 0:
            start = int(sum(self.dims[:self.modalities.index("descriptions")]))
            w = self.dims[self.modalities.index("descriptions")]
            blk = d[:, start:start + w]
            blk = blk / np.maximum(np.linalg.norm(blk, axis=1, keepdims=True), 1e-12)
            d[:, start:start + w] = self.beta * e + (1 - self.beta) * blk
        d = _unit_blocks(d, self.dims)
        if self.gamma > 0 and self.class_text is not None:
            d = (1 - self.gamma) * d + self.gamma * (self.class_weights(e) @ self.class_sem)
            d = _unit_blocks(d, self.dims)
        return d.astype(np.float32)

    def to_tensors(self) -> dict:
        import torch
        meta = {"modalities": self.modalities, "dims": self.dims, "beta": self.beta, "lam": self.lam,
                "gamma": self.gamma, "tau": self.tau, "scope": self.scope, "encoder": self.encoder, "selection": self.selection}
        blob = json.dumps(meta, sort_keys=True).encode()
        out = {"W": torch.from_numpy(np.ascontiguousarray(self.W, np.float32)),
               "b": torch.from_numpy(np.ascontiguousarray(self.b, np.float32)),
               "meta": torch.tensor(list(blob), dtype=torch.uint8)}
        if self.class_text is not None:
            out["class_text"] = torch.from_numpy(np.ascontiguousarray(self.class_text, np.float32))
            out["class_sem"] = torch.from_numpy(np.ascontiguousarray(self.class_sem, np.float32))
        if self.anchor_mask is not None:
            out["anchor_mask"] = torch.from_numpy(np.asarray(self.anchor_mask, bool))
        return out

    @classmethod
    def from_tensors(cls, t: dict) -> "SentenceMap":
        meta = json.loads(bytes(t["meta"].numpy().tolist()).decode())
        return cls(W=t["W"].numpy().astype(np.float32), b=t["b"].numpy().astype(np.float32),
                   modalities=list(meta["modalities"]), dims=[int(x) for x in meta["dims"]], beta=float(meta["beta"]),
                   lam=float(meta["lam"]), encoder=meta.get("encoder", ""), selection=meta.get("selection", {}),
                   class_text=t["class_text"].numpy() if "class_text" in t else None,
                   class_sem=t["class_sem"].numpy() if "class_sem" in t else None,
                   gamma=float(meta.get("gamma", 0.0)), tau=float(meta.get("tau", 0.05)),
                   scope=meta.get("scope", "all"),
                   anchor_mask=t["anchor_mask"].numpy().astype(bool) if "anchor_mask" in t else None)


class _Ridge:
    """Ridge ``e -> target`` for many lambdas from one eigendecomposition of the centred Gram matrix."""

    def __init__(self, e: np.ndarray, t: np.ndarray):
        e = e.astype(np.float64)
        t = t.astype(np.float64)
        self.mu_e, self.mu_t = e.mean(0), t.mean(0)
        ec = e - self.mu_e
        self.vals, self.vecs = np.linalg.eigh(ec.T @ ec)
        self.proj = self.vecs.T @ (ec.T @ (t - self.mu_t))     # (384, S)

    def solve(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        W = self.vecs @ (self.proj / (self.vals + lam)[:, None])
        return W.astype(np.float32), (self.mu_t - self.mu_e @ W).astype(np.float32)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP of each column of ``scores`` (N, Q) for the boolean ``relevant`` (N, Q) (higher score = better)."""
    order = np.argsort(-scores, axis=0, kind="stable")
    rel = np.take_along_axis(relevant, order, axis=0).astype(np.float64)
    hits = np.cumsum(rel, axis=0)
    prec = hits / np.arange(1, len(rel) + 1)[:, None]
    return (prec * rel).sum(0) / np.maximum(rel.sum(0), 1)


def query_scores(model, x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(N, Q) scores of images ``x`` (N, D) for descriptors ``d`` (Q, S) by the model's own metric."""
    import torch
    with torch.inference_mode():
        return model.scores(torch.from_numpy(np.ascontiguousarray(x, np.float32)),
                            torch.from_numpy(np.ascontiguousarray(d, np.float32))).float().numpy()


def sample_sentences(photo_rows: np.ndarray, photo_of_sentence: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` sentence ids (seeded) about the photos ``photo_rows``, at most one per photo while photos last."""
    rng = np.random.default_rng(seed)
    in_set = np.isin(photo_of_sentence, photo_rows)
    ids = np.flatnonzero(in_set)
    rng.shuffle(ids)
    # one sentence per photo first, so a few photos cannot dominate the sample
    _, first = np.unique(photo_of_sentence[ids], return_index=True)
    pick = ids[np.sort(first)]
    rng.shuffle(pick)
    if len(pick) < n:
        rest = np.setdiff1d(ids, pick)
        rng.shuffle(rest)
        pick = np.concatenate([pick, rest[:n - len(pick)]])
    return pick[:n]


def refit_on_train(dataset, card, sem: np.ndarray, *, seed: int = 0, device: str = "cpu"):
    """The card's model refitted on the ``train`` split only (its chosen hyper-parameters and epochs)."""
    import torch

    from ..models import get_model_class

    cls = get_model_class(card.model)
    train_idx = dataset.split_indices("train")
    train_c = dataset.split_classes("train")
    pos = np.full(len(dataset.class_names), -1)
    pos[train_c] = np.arange(len(train_c))
    model = cls(dataset.feature_dim, card.semantic_dims, card.hparams)
    kw = {"epochs": card.selection.get("epochs")} if cls.iterative and card.selection.get("epochs") else {}
    model.fit(torch.from_numpy(dataset.features[train_idx]).to(device),
              torch.from_numpy(pos[dataset.labels[train_idx]]).to(device),
              torch.from_numpy(sem[train_c]).to(device), seed=seed, **kw)
    return model.cpu().eval()


def fit_sentence_map(dataset, card, *, train_model=None, seed: int = 0, lambdas: Sequence[float] = LAMBDAS,
                     betas: Sequence[float] | None = None, anchors: Sequence[tuple[float, float, str]] = ANCHORS,
                     n_val: int = VAL_SENTENCES, log=None) -> SentenceMap:
    """Choose (lam, beta, gamma, tau, scope) on the val classes and refit on trainval (module docstring).

    ``train_model``: the card's model fitted on ``train`` (refitted here when None).
    """
    from ..data.base import semantic_matrix
    from ..data.descriptions import class_descriptions, dataset_sentences
    from ..text import encoder_id

    log = log or (lambda m: None)
    mods = list(card.semantic_modalities or ["attributes"])
    sem, dims = semantic_matrix(dataset, mods)
    texts, emb = dataset_sentences(dataset)
    slabels = dataset.labels[texts.photo]
    if train_model is None:
        log("sentence map: refitting the model on train for the val choice")
        train_model = refit_on_train(dataset, card, sem, seed=seed)
    if betas is None:
        betas = BETAS if "descriptions" in mods else (0.0,)

    def rows_of(split: str) -> np.ndarray:
        return np.isin(texts.photo, dataset.split_indices(split))

    fit_rows = rows_of("train")
    ridge = _Ridge(emb[fit_rows], sem[slabels[fit_rows]])
    # every class's mean description: side information like its attribute row (unseen classes included)
    class_text = class_descriptions(emb, texts.photo, dataset.labels, len(dataset.class_names))
    val_idx = dataset.split_indices("val")
    val_mask = np.isin(np.arange(len(dataset.class_names)), dataset.split_classes("val"))
    q = sample_sentences(val_idx, texts.photo, n_val, seed)
    x_val = dataset.features[val_idx]
    rel = dataset.labels[val_idx][:, None] == slabels[q][None, :]
    table = []
    best = (-1.0, None)
    for lam in lambdas:
        W, b = ridge.solve(lam)
        pred = emb[q] @ W + b
        for beta in betas:
            for gamma, tau, scope in anchors:
                smap = SentenceMap(W, b, mods, list(dims), beta=float(beta), lam=float(lam), class_text=class_text,
                                   class_sem=sem, gamma=float(gamma), tau=float(tau), scope=scope, anchor_mask=val_mask)
                d = smap.descriptors(emb[q], ridge=pred)
                ap = float(average_precision(query_scores(train_model, x_val, d), rel).mean())
                table.append({"lam": float(lam), "beta": float(beta), "gamma": float(gamma), "tau": float(tau),
                              "scope": scope,
                              "val_map": round(ap, 5)})
                if ap > best[0]:
                    best = (ap, table[-1])
        log(f"sentence map: lam={lam:g} best val mAP so far {best[0]:.4f} ({best[1]})")
    chosen = {k: best[1][k] for k in ("lam", "beta", "gamma", "tau", "scope")}
    # at query time the not-trained classes are the unseen ones (the val ones were trained on at the refit)
    seen = set(card.seen_classes)
    unseen_mask = np.array([c not in seen for c in dataset.class_names])
    tv = rows_of("trainval")
    W, b = _Ridge(emb[tv], sem[slabels[tv]]).solve(chosen["lam"])
    selection = {"criterion": "mAP of single val-photo sentences over the val gallery (model refitted on train)",
                 "n_val_sentences": int(len(q)), "n_fit_sentences": int(fit_rows.sum()),
                 "n_refit_sentences": int(tv.sum()), "candidates": table, "chosen": chosen,
                 "val_map": round(best[0], 5)}
    return SentenceMap(W, b, mods, list(dims), encoder=encoder_id(), selection=selection, class_text=class_text,
                       class_sem=sem, anchor_mask=unseen_mask, **chosen)


def _embed_classes(model, s: np.ndarray) -> np.ndarray:
    import torch
    with torch.inference_mode():
        return model.embed_classes(torch.from_numpy(np.ascontiguousarray(s, np.float32))).float().numpy()


def read_as(d: np.ndarray, card, class_semantics, k: int = NEAREST, model=None) -> dict[str, Any]:
    """What a descriptor ``d`` (S,) was read as: its strongest attributes, and its nearest classes -- by the
    cosine of their embeddings in the model's space when ``model`` is given (what the ranking sees), else of
    the descriptors."""
    out: dict[str, Any] = {}
    mods = list(card.semantic_modalities or ["attributes"])
    if "attributes" in mods and card.vocabulary:
        start = int(sum(card.semantic_dims[:mods.index("attributes")]))
        a = d[start:start + len(card.vocabulary)]
        top = [int(j) for j in np.argsort(-a, kind="stable")[:k] if a[j] > 0]
        out["nearest_attributes"] = [{"name": card.vocabulary[j], "weight": round(float(a[j]), 3)} for j in top]
    if class_semantics is not None and len(card.class_names):
        s = np.asarray(class_semantics, np.float32)
        q = d
        if model is not None:
            emb = _embed_classes(model, np.concatenate([d[None], s]))
            q, s = emb[0], emb[1:]
        cos = s @ q / np.maximum(np.linalg.norm(s, axis=1) * np.linalg.norm(q), 1e-12)
        seen = set(card.seen_classes)
        out["nearest_classes"] = [{"name": card.class_names[int(j)], "cosine": round(float(cos[j]), 3),
                                   "seen": card.class_names[int(j)] in seen}
                                  for j in np.argsort(-cos, kind="stable")[:k]]
    return out


def sentence_descriptor(spec, tensors: dict, card, class_semantics, model=None) -> tuple[np.ndarray, dict[str, Any]]:
    """The (S,) descriptor of a --text query on a model whose checkpoint holds a sentence map; ``model``
    (optional) places its nearest classes in the model's embedding space."""
    from ..text import encode_texts, encoder_id
    from .textual import query_texts

    smap = SentenceMap.from_tensors(tensors)
    if list(card.semantic_dims) != smap.dims:
        raise IncompatibleError(f"sentence map gives {smap.dims} descriptors; model {card.model!r} reads "
                                f"{card.semantic_dims}")
    if smap.encoder and smap.encoder != encoder_id():
        raise IncompatibleError(f"the sentence map of model {card.model!r} was fitted on {smap.encoder} embeddings; "
                                f"{encoder_id()} is installed")
    texts, weights, resolved = query_texts(spec)
    e = encode_texts(texts)
    d = smap.descriptors(e)
    v = (np.asarray(weights, np.float32)[:, None] * d).sum(0)
    if float(np.linalg.norm(v)) < 1e-6:
        raise InvalidInputError(f"query {str(spec)!r} cancels out to the zero vector; change its weights")
    v = _unit_blocks(v[None], smap.dims)[0]
    how = read_as(v, card, class_semantics, model=model)
    if smap.class_text is not None:
        # the classes whose people-written descriptions the text reads most like (encoder space)
        cos = e @ smap.class_text.T
        cos = (np.asarray(weights, np.float32)[:, None] * cos).sum(0)
        how["reads_like"] = [{"name": card.class_names[int(j)], "cosine": round(float(cos[j]), 3)}
                             for j in np.argsort(-cos, kind="stable")[:3]]
    label = (f"{card.model} sentence map (ridge lam={smap.lam:g}, beta={smap.beta:g}, "
             f"class anchors gamma={smap.gamma:g} tau={smap.tau:g} over {smap.scope} classes)")
    if how.get("nearest_attributes"):
        label += "; read as " + ", ".join(a["name"] for a in how["nearest_attributes"])
    if how.get("nearest_classes"):
        label += "; nearest classes " + ", ".join(f"{c['name']} ({c['cosine']:.2f}{'' if c['seen'] else ', unseen'})"
                                                  for c in how["nearest_classes"][:3])
    resolved["understood_as"] = {"model": label, "texts": texts, **how}
    return v, resolved


__all__ = ["SentenceMap", "average_precision", "fit_sentence_map", "query_scores", "read_as", "refit_on_train",
           "sample_sentences", "sentence_descriptor"]
