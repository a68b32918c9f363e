"""Building the general model: choose everything on held-out val ImageNet classes, then refit on all 1000.

Protocol (zero-shot honesty, everything seeded):
* the 1000 classes are split class-disjointly into train (600) / val (200) / test (200);
* a name is read in prompt templates (one, or an ensemble whose embeddings are averaged) and, with
  a weight chosen on val, the WordNet definitions of the synsets it names (*glosses*, ``glosses.py``);
* the prompt templates, the gloss weight, the ridge alpha, DEM's
  weight decay and epochs and ConSE's T are chosen by held-out *prototype retrieval* on val: for
  each val class, rank the true (unit) prototypes of all val classes by cosine to the prediction;
  top-1 = the true one ranks first (chance 1/200), mean reciprocal rank breaks ties;
* a third map needs no fitting: *semantic neighbours* (the dual of ConSE) -- a text's query is the
  softmax(tau x cosine)-weighted mean of the prototypes of its T nearest known names (text cosine),
  T and tau chosen on val with the train names as the known ones;
* the deployed map -- one of DEM, ridge, neighbours or an even average of two (``hparams["mix"]``:
  each map's share of the summed unit outputs) -- and its *hubness correction* are chosen together on val: the held-out prototypes act as the
  gallery, and each one's per-item terms (``correction.ScoreCorrection``: CSLS-like stacking or
  per-item z-scores) come from its scores against a reference vocabulary of queries, the
  projected names of the *train* classes. A correction must beat ``none`` on val to be chosen.
  Deployed, the reference vocabulary is the 1000 ImageNet names' projected queries
  (``GeneralModel.reference``) and an index stores each image's terms (``index/stats.py``);
* the test classes are only reported (``test_top1``), never used to choose;
* the chosen configuration is refit on all 1000 classes and saved as numpy arrays in
  ``<data root>/general/<backbone>-<key>.npz`` (key: weights id, encoder id, format version; ``cache.py``);
  ``scripts/build_general_model.py`` runs this same build to write the copy shipped in the package.

Attribute words (``--attributes stripes,water``) are a list of words, each projected alone and the
unit outputs summed with their weights. How a word is read is chosen on val with word lists whose
answer is known: each val class is described by the first ``DESCRIPTION_WORDS`` content words of its
first WordNet definition, its own name's words left out ("any of several fleet black-and-white
striped African equines" -> fleet, black-and-white, striped, african, equines), and that list must
retrieve the class's prototype among the val prototypes, with the deployed map fitted on the train
classes and its correction. Candidates: ``ATTRIBUTE_TEMPLATES``. Glosses are not applied to
attribute words.

Known-name anchors (``anchors.py``): the hyponym share and which lemmas a kind may end are chosen on
val category words, anchored on train classes only; the WordNet hierarchy anchors of names with
neither (``hierarchy.py``) on val WordNet categories with no train class under them, anchored on
train classes only.

Baselines measured in the same run: ridge (closed form, text -> unit prototype) and ConSE
(Norouzi et al. 2014, ``maps.py``).

:func:`build_general_model` runs the steps below in order; each ``choose_*`` function says what it
chooses on val and returns every candidate's row (val and test figures) with the chosen one. Among
equals the candidate listed first wins: candidates are listed simplest first.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .anchors import (ANCHOR_LEMMAS, ANCHOR_WEIGHTS, TREE_DECAYS, TREE_MAX_UP, TREE_SHARES, apply_anchors,
                      category_queries)
from .glosses import ATTRIBUTE_TEMPLATES, GLOSS_WEIGHTS, TEMPLATES, gloss_embeddings, mix_glosses, prompt_embeddings
from .heldout import category_map, heldout_retrieval, split_classes
from .imagenet import imagenet_categories, imagenet_head
from .lexicon import description_words, imagenet_lemmas
from .maps import (DemArrays, Neighbours, _dem_predict, _fit_dem, _method_of, _predict, apply_ridge, conse_embed,
                   fit_ridge, neighbour_map)
from .model import GeneralModel
from .vectors import _unit, softmax

if TYPE_CHECKING:
    from ...correction import ScoreCorrection
    from ...models.dem import Dem

# Deployed-map candidates: each map's share of the summed unit outputs (simplest first: they win ties).
MIXES = ({"dem": 1.0}, {"ridge": 1.0}, {"nbr": 1.0}, {"dem": 0.5, "ridge": 0.5}, {"dem": 0.5, "nbr": 0.5},
         {"ridge": 0.5, "nbr": 0.5})
NBR_T = (3, 10, 30)        # semantic neighbours: how many known names a text is made of
NBR_TAU = (5.0, 10.0, 20.0)  # and the softmax temperature over their text cosines
RIDGE_ALPHAS = (0.1, 1.0, 10.0)
DEM_WEIGHT_DECAYS = (1e-4, 1e-3)
DEM_MAX_EPOCHS = 60
DEM_EVAL_EVERY = 10
CONSE_T = (1, 3, 10)
CONSE_TAU = 10.0

Row = dict[str, Any]   # one candidate's settings and its val/test figures, as stored in ``selection``


@dataclasses.dataclass(frozen=True)
class HeldOutClasses:
    """What every step scores against: the 1000 names, their unit prototypes (1000, D) and the
    train/val/test class indices; ``cache_dir`` keeps the build's sentence embeddings on disk."""

    names: list[str]
    protos: np.ndarray
    tr: np.ndarray
    va: np.ndarray
    te: np.ndarray
    cache_dir: str | os.PathLike | None

    def encode(self, texts: list[str], template: str = "{}") -> np.ndarray:
        """(n, 384) embeddings of ``texts`` in ``template``, cached (``text.encoder.encode_vocabulary``)."""
        from ..encoder import encode_vocabulary
        return encode_vocabulary(texts, template=template, cache_dir=self.cache_dir)

    def score(self, pred_va: np.ndarray, pred_te: np.ndarray, ref: np.ndarray | None = None,
              corr: ScoreCorrection | None = None) -> Row:
        """Held-out prototype retrieval of val and test predictions (val chooses, test is reported)."""
        v = heldout_retrieval(pred_va, self.protos[self.va], ref, corr)
        s = heldout_retrieval(pred_te, self.protos[self.te], ref, corr)
        return {"val_top1": v["top1"], "val_mrr": round(v["mrr"], 4), "test_top1": s["top1"],
                "test_mrr": round(s["mrr"], 4), "val_n1_skew": round(v["n1_skew"], 3),
                "test_n1_skew": round(s["n1_skew"], 3)}


@dataclasses.dataclass(frozen=True)
class TrainMaps:
    """The maps fitted on the train classes with their chosen settings (steps 5-7 predict with them)."""

    ridge: np.ndarray
    dem: Dem
    nbr: Neighbours

    def predict(self, mix: dict[str, float], t: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Unit (n, D) queries of texts t (n, 384) through the maps of ``mix`` (:func:`maps._predict`)."""
        return _predict(mix, self.ridge, self.dem, self.nbr, t, exclude_self=exclude_self)


def _val_key(r: Row) -> tuple[float, float]:
    """How candidates are compared: val top-1, then val MRR (``max`` keeps the first of equals)."""
    return r["val_top1"], r["val_mrr"]


def name_readings(data: HeldOutClasses) -> dict[tuple[tuple[str, ...], float], np.ndarray]:
    """Every candidate reading of the 1000 names, (prompt templates, gloss weight) -> (1000, 384).
    Chooses nothing: step 1 chooses among them."""
    by_template = {tpl: data.encode(data.names, tpl) for tpls in TEMPLATES for tpl in tpls}
    prompted = {tpls: prompt_embeddings(by_template.__getitem__, tpls) for tpls in TEMPLATES}
    name_glosses = gloss_embeddings(data.names, data.encode)
    return {(tpls, g): mix_glosses(t, *name_glosses, g) for tpls, t in prompted.items() for g in GLOSS_WEIGHTS}


def choose_reading_and_ridge(texts: dict[tuple[tuple[str, ...], float], np.ndarray],
                             data: HeldOutClasses) -> tuple[list[Row], Row]:
    """Step 1 chooses on val the prompt templates, the gloss weight and the ridge alpha, together
    (ridge is closed form, so every reading can be tried with it: the cheap map decides the reading)."""
    tr, va, te, protos = data.tr, data.va, data.te, data.protos
    rows = []
    for (tpls, gloss), t in texts.items():
        for alpha in RIDGE_ALPHAS:
            m = fit_ridge(t[tr], protos[tr], alpha)
            rows.append({"templates": list(tpls), "gloss": gloss, "alpha": alpha,
                         **data.score(apply_ridge(m, t[va]), apply_ridge(m, t[te]))})
    return rows, max(rows, key=_val_key)     # first of equals wins: candidates are listed simplest first


def choose_dem(t: np.ndarray, data: HeldOutClasses, seed: int) -> tuple[list[Row], Row]:
    """Step 2 chooses on val DEM's weight decay and its epochs (scored every ``DEM_EVAL_EVERY`` epochs
    of one run per weight decay; among equals, fewer epochs)."""
    tr, va, te, protos = data.tr, data.va, data.te, data.protos
    rows = []
    for wd in DEM_WEIGHT_DECAYS:
        curve: list[tuple[int, Row]] = []

        def probe(ep: int, model: Dem) -> None:
            if ep % DEM_EVAL_EVERY == 0:
                curve.append((ep, data.score(_dem_predict(model, t[va]), _dem_predict(model, t[te]))))
        _fit_dem(t[tr], protos[tr], {"weight_decay": wd}, DEM_MAX_EPOCHS, seed, probe)
        ep, r = max(curve, key=lambda c: (*_val_key(c[1]), -c[0]))
        rows.append({"weight_decay": wd, "epochs": ep, **r,
                     "curve": [[e, round(c["val_top1"], 4)] for e, c in curve]})
    return rows, max(rows, key=_val_key)


def choose_neighbours(t: np.ndarray, data: HeldOutClasses) -> tuple[list[Row], Row]:
    """Step 3 chooses on val the semantic neighbours' T and tau, the train names being the known ones."""
    tr, va, te, protos = data.tr, data.va, data.te, data.protos
    rows = []
    for top in NBR_T:
        for tau in NBR_TAU:
            rows.append({"T": top, "tau": tau, **data.score(neighbour_map(t[va], t[tr], protos[tr], top, tau),
                                                            neighbour_map(t[te], t[tr], protos[tr], top, tau))})
    return rows, max(rows, key=_val_key)


def conse_baseline(t: np.ndarray, data: HeldOutClasses) -> tuple[list[Row], Row]:
    """Step 4 chooses on val ConSE's T (a baseline, never deployed): the held-out prototype is the
    "image", its class probabilities a softmax over cosine to the train prototypes; it is scored
    in text space (the predicted embedding against the held-out names' embeddings)."""
    tr, va, te, protos = data.tr, data.va, data.te, data.protos
    rows = []
    for top in CONSE_T:
        def conse(classes: np.ndarray) -> np.ndarray:
            p = softmax(CONSE_TAU * (protos[classes] @ protos[tr].T))
            return conse_embed(p, t[tr], top)
        v, s = heldout_retrieval(conse(va), t[va]), heldout_retrieval(conse(te), t[te])
        rows.append({"T": top, "val_top1": v["top1"], "val_mrr": round(v["mrr"], 4),
                     "test_top1": s["top1"], "test_mrr": round(s["mrr"], 4)})
    return rows, max(rows, key=_val_key)


def choose_deployed(t: np.ndarray, data: HeldOutClasses, best_r: Row, best_d: Row, best_n: Row,
                    seed: int) -> tuple[list[Row], Row, TrainMaps, dict[str, np.ndarray]]:
    """Step 5 chooses on val the deployed map (one of ``MIXES``) and its hubness correction together.

    The reference vocabulary is the train names' projected queries, each without itself as a
    neighbour (deployed: all 1000 names', the same way). A correction must beat "none" of the same
    map on val (``chosen_ok``); among what may be chosen, best val (ties: listed first). Returns the
    rows, the chosen one, the maps fitted on train and each map's reference queries (``refs``,
    keyed by method, reused by steps 6 and 7 for the chosen one).
    """
    from ...correction import candidates as correction_candidates
    tr, va, te, protos = data.tr, data.va, data.te, data.protos
    ridge_tr = fit_ridge(t[tr], protos[tr], best_r["alpha"])
    dem_tr = _fit_dem(t[tr], protos[tr], {"weight_decay": best_d["weight_decay"]}, best_d["epochs"], seed)
    dem_tr.eval()
    maps = TrainMaps(ridge_tr, dem_tr, Neighbours(t[tr], protos[tr], best_n["T"], best_n["tau"]))
    rows = []
    refs = {}
    for mix in map(dict, MIXES):
        meth = _method_of(mix)
        pva, pte = (maps.predict(mix, t[classes]) for classes in (va, te))
        ptr = refs[meth] = maps.predict(mix, t[tr], exclude_self=True)
        base = None
        for corr in correction_candidates():
            r = {"mix": mix, "method": meth, "correction": corr.to_dict(), **data.score(pva, pte, ptr, corr)}
            base = r if base is None else base
            r["chosen_ok"] = not corr.active or _val_key(r) > _val_key(base)
            rows.append(r)
    return rows, max((r for r in rows if r["chosen_ok"]), key=_val_key), maps, refs


def choose_attribute_template(data: HeldOutClasses, maps: TrainMaps, mix: dict[str, float], ptr: np.ndarray,
                              corr: ScoreCorrection) -> tuple[list[Row], Row]:
    """Step 6 chooses on val how attribute words are read (one of ``ATTRIBUTE_TEMPLATES``): each val
    class described by words of its definition (``lexicon.description_words``; classes without a
    synset left out) must retrieve its prototype, through the train-fitted deployed map ``mix``
    and its correction (reference queries ``ptr``)."""
    va, te, protos, names = data.va, data.te, data.protos, data.names
    desc = {int(i): description_words(names[i]) for i in np.concatenate([va, te])}
    rows_out = []
    for tpl in ATTRIBUTE_TEMPLATES:
        r = {"template": tpl}
        for part, rows in (("val", va), ("test", te)):
            rows = np.array([i for i in rows if desc[int(i)]])
            vocab = sorted({x for i in rows for x in desc[int(i)]})
            proj = dict(zip(vocab, maps.predict(mix, data.encode(vocab, tpl))))
            pred = _unit(np.stack([np.sum([proj[x] for x in desc[int(i)]], axis=0) for i in rows]))
            h = heldout_retrieval(pred, protos[rows], ptr, corr)
            r.update({f"{part}_top1": h["top1"], f"{part}_mrr": round(h["mrr"], 4), f"{part}_classes": len(rows)})
        rows_out.append(r)
    return rows_out, max(rows_out, key=_val_key)


def choose_anchors(t: np.ndarray, data: HeldOutClasses, maps: TrainMaps, mix: dict[str, float], ptr: np.ndarray,
                   corr: ScoreCorrection, tpls: tuple[str, ...], gloss: float) -> tuple[list[Row], Row]:
    """Step 7 chooses on val the hyponym anchors' share (``ANCHOR_WEIGHTS``) and which lemmas a kind
    may end (``ANCHOR_LEMMAS``): category words with known answers, anchored on train classes only
    (the words read exactly as a user's name is: prompt ``tpls`` and definitions at ``gloss``; the
    held-out names are ``t``, the chosen reading of the 1000 names), scored
    by mAP over the val prototypes; a share may not lower the val top-1 of the plain held-out names
    (``anchor_ok``). Best val mAP among what may be chosen, ties: listed first."""
    tr, va, te, protos, names = data.tr, data.va, data.te, data.protos, data.names
    lemmas = imagenet_lemmas()
    parts = {}
    for part, rows in (("val", va), ("test", te)):
        cat = category_queries(lemmas, tr, rows)
        words = list(cat)
        qt = mix_glosses(prompt_embeddings(lambda tpl: data.encode(words, tpl), tpls),
                         *gloss_embeddings(words, data.encode), gloss)
        parts[part] = (rows, words, [cat[w] for w in words], maps.predict(mix, qt), maps.predict(mix, t[rows]))
    anchor_rows = []
    # share 0 once (which lemmas then changes nothing), then every share with each lemma choice
    for which, a in [(ANCHOR_LEMMAS[0], 0.0)] + [(x, a) for x in ANCHOR_LEMMAS for a in ANCHOR_WEIGHTS if a]:
        r = {"lemmas": which, "weight": a}
        for part, (rows, words, positives, pred_words, pred_names) in parts.items():
            q, _ = apply_anchors(pred_words, words, protos, a, known=tr, hyponyms=which)
            r[f"{part}_map"] = round(category_map(q, positives, protos, rows, ptr, corr), 4)
            r[f"{part}_queries"] = len(words)
            q, _ = apply_anchors(pred_names, [names[i] for i in rows], protos, a, known=tr, hyponyms=which)
            r[f"{part}_leaf_top1"] = heldout_retrieval(q, protos[rows], ptr, corr)["top1"]
        r["anchor_ok"] = r["val_leaf_top1"] >= (anchor_rows[0] if anchor_rows else r)["val_leaf_top1"]
        anchor_rows.append(r)
    return anchor_rows, max((r for r in anchor_rows if r["anchor_ok"]), key=lambda r: r["val_map"])


def choose_hierarchy(t: np.ndarray, data: HeldOutClasses, maps: TrainMaps, mix: dict[str, float], ptr: np.ndarray,
                     corr: ScoreCorrection, tpls: tuple[str, ...], gloss: float, best_an: Row) -> tuple[list[Row], Row]:
    """Step 8 chooses on val the WordNet hierarchy anchors (``hierarchy.py``): their share
    (``TREE_SHARES``, 0 first), distance decay (``TREE_DECAYS``) and reach (``TREE_MAX_UP``). Queries
    with known answers, as step 7's: every WordNet category with val classes under it and no train
    class (``hierarchy.category_words``: "woodpecker" is to ImageNet what these are to the train
    classes) is a word whose positives are those val classes, read as a user's word (prompt ``tpls``,
    definitions at ``gloss``), anchored as deployed (step 7's exact and hyponym anchors; else its
    nearest *train* relatives in WordNet) and scored by mAP over the val prototypes with the deployed
    correction. The plain val names, anchored the same way, may not lose val top-1 (``tree_ok``). Best
    val mAP among what may be chosen; ties: listed first, so share 0 must be beaten. Without WordNet
    there are no such words and share 0 is chosen."""
    from .hierarchy import category_words
    tr, va, te, protos, names = data.tr, data.va, data.te, data.protos, data.names
    parts = {}
    for part, rows in (("val", va), ("test", te)):
        cat = category_words(tr, rows)
        words = list(cat)
        qt = mix_glosses(prompt_embeddings(lambda tpl: data.encode(words, tpl), tpls),
                         *gloss_embeddings(words, data.encode), gloss) if words else np.zeros((0, t.shape[1]))
        parts[part] = (rows, words, [cat[w] for w in words], maps.predict(mix, qt) if words else None,
                       maps.predict(mix, t[rows]))
    grid = [(0.0, TREE_DECAYS[0], TREE_MAX_UP[0])] + [
        (a, d, u) for a in TREE_SHARES if a for d in TREE_DECAYS for u in TREE_MAX_UP]
    rows_out: list[Row] = []
    for share, decay, up in grid:
        r: Row = {"share": share, "decay": decay, "max_up": up}
        for part, (rows, words, positives, pred_words, pred_names) in parts.items():
            kw = {"known": tr, "hyponyms": best_an["lemmas"], "tree": (share, decay, up)}
            if words:
                q, found = apply_anchors(pred_words, words, protos, best_an["weight"], **kw)
                r[f"{part}_map"] = round(category_map(q, positives, protos, rows, ptr, corr), 4)
                r[f"{part}_tree_words"] = sum(rule == "hierarchy" for _, rule in found)
            else:
                r[f"{part}_map"], r[f"{part}_tree_words"] = 0.0, 0
            r[f"{part}_queries"] = len(words)
            q, found = apply_anchors(pred_names, [names[i] for i in rows], protos, best_an["weight"], **kw)
            r[f"{part}_leaf_top1"] = heldout_retrieval(q, protos[rows], ptr, corr)["top1"]
            r[f"{part}_tree_names"] = sum(rule == "hierarchy" for _, rule in found)
        r["tree_ok"] = r["val_leaf_top1"] >= (rows_out[0] if rows_out else r)["val_leaf_top1"]
        rows_out.append(r)
    return rows_out, max((r for r in rows_out if r["tree_ok"]), key=lambda r: r["val_map"])


def refit(name: str, weights_id: str, t: np.ndarray, protos: np.ndarray, mix: dict[str, float], method: str,
          tpls: tuple[str, ...], hp: dict[str, Any], best_r: Row, best_d: Row, best_n: Row, seed: int,
          sel: dict[str, Any], names: list[str]) -> GeneralModel:
    """Step 9 chooses nothing: the maps of the chosen ``mix`` refit on all 1000 classes with their
    chosen settings (added to ``hp``); the reference = the 1000 names' queries, each without itself."""
    from ..encoder import encoder_id
    ridge = dem = None
    if "ridge" in mix:
        hp["alpha"] = best_r["alpha"]
        ridge = fit_ridge(t, protos, best_r["alpha"])
    if "dem" in mix:
        hp.update(weight_decay=best_d["weight_decay"], epochs=best_d["epochs"])
        dem = _fit_dem(t, protos, {"weight_decay": best_d["weight_decay"]}, best_d["epochs"], seed)
        dem.eval()
    if "nbr" in mix:
        hp.update(nbr_T=best_n["T"], nbr_tau=best_n["tau"])
    # the model keeps DEM as numpy arrays (a query imports no torch); its reference vocabulary is derived
    # from known_text through these very arrays (``GeneralModel.reference``)
    return GeneralModel(name, weights_id, protos.shape[1], encoder_id(), method, list(tpls), hp, sel, ridge=ridge,
                        dem=None if dem is None else DemArrays.from_dem(dem), known_text=t.copy(),
                        known_protos=protos, categories=list(names))


def build_general_model(backbone: str = "efficientnet-lite0", *, seed: int = 0,
                        cache_dir: str | os.PathLike | None = None,
                        log: Callable[[str], None] | None = None) -> GeneralModel:
    """Select (on val classes) and fit the general model for ``backbone``; see the module docstring.

    ``selection`` records every step's candidates (val and test figures) and what was chosen;
    ``cache_dir`` keeps the sentence embeddings; ``log`` hears one line per step.
    """
    from ...correction import ScoreCorrection
    from ...features.backbones import canonical_backbone
    say = log or (lambda _m: None)
    t0 = time.perf_counter()
    name = canonical_backbone(backbone)
    w, _, weights_id = imagenet_head(name)
    names = imagenet_categories()
    protos = _unit(w).astype(np.float32)          # unit rows: the norm of a class row is a calibration, not a look
    tr, va, te = split_classes(len(names), seed)
    data = HeldOutClasses(names, protos, tr, va, te, cache_dir)
    texts = name_readings(data)
    sel: dict[str, Any] = {"seed": seed, "split": {"train": len(tr), "val": len(va), "test": len(te)},
                           "chance": 1.0 / len(va), "metric": "held-out prototype retrieval top-1 (cosine)"}

    ridge_rows, best_r = choose_reading_and_ridge(texts, data)
    tpls, gloss = tuple(best_r["templates"]), best_r["gloss"]
    t = texts[(tpls, gloss)]
    say(f"ridge: templates {list(tpls)} gloss weight {gloss:g} alpha {best_r['alpha']} "
        f"val top-1 {best_r['val_top1']:.3f}")

    dem_rows, best_d = choose_dem(t, data, seed)
    say(f"dem: weight_decay {best_d['weight_decay']} epochs {best_d['epochs']} val top-1 {best_d['val_top1']:.3f}")

    nbr_rows, best_n = choose_neighbours(t, data)
    say(f"neighbours: T {best_n['T']} tau {best_n['tau']:g} val top-1 {best_n['val_top1']:.3f}")

    conse_rows, best_c = conse_baseline(t, data)

    mix_rows, best_m, maps, refs = choose_deployed(t, data, best_r, best_d, best_n, seed)
    mix, method = best_m["mix"], best_m["method"]
    sel.update(templates=list(tpls), gloss=gloss, ridge=ridge_rows, dem=dem_rows, neighbours=nbr_rows, conse=conse_rows,
               deployed=[{k: v for k, v in r.items() if k != "chosen_ok"} for r in mix_rows],
               best={"ridge": {k: v for k, v in best_r.items()},
                     "dem": {k: v for k, v in best_d.items() if k != "curve"}, "neighbours": best_n,
                     "conse": best_c, "deployed": {k: v for k, v in best_m.items() if k != "chosen_ok"}},
               retrieval_correction=best_m["correction"], chosen=method)
    say(f"chosen: {method} ({mix}) with correction {best_m['correction']['kind']} "
        f"(val top-1 {best_m['val_top1']:.3f}; dem {best_d['val_top1']:.3f}, ridge {best_r['val_top1']:.3f} uncorrected)")

    corr, ptr = ScoreCorrection.from_dict(best_m["correction"]), refs[method]
    attr_rows, best_a = choose_attribute_template(data, maps, mix, ptr, corr)
    sel.update(attribute_words=attr_rows, attribute_template=best_a["template"])
    sel["best"]["attribute_words"] = best_a
    say(f"attribute words: read as {best_a['template']!r} (val top-1 {best_a['val_top1']:.3f} over "
        f"{best_a['val_classes']} classes described by definition words)")

    anchor_rows, best_an = choose_anchors(t, data, maps, mix, ptr, corr, tpls, gloss)
    sel.update(anchors=anchor_rows, anchor=best_an["weight"], anchor_lemmas=best_an["lemmas"])
    sel["best"]["anchors"] = best_an
    say(f"anchors: hyponym share {best_an['weight']:g} over {best_an['lemmas']} lemmas (category-word val mAP "
        f"{best_an['val_map']:.3f} over {best_an['val_queries']} words; {anchor_rows[0]['val_map']:.3f} unanchored)")

    tree_rows, best_t = choose_hierarchy(t, data, maps, mix, ptr, corr, tpls, gloss, best_an)
    sel.update(hierarchy=tree_rows)
    sel["best"]["hierarchy"] = best_t
    say(f"hierarchy anchors: share {best_t['share']:g} decay {best_t['decay']:g} max_up {best_t['max_up']} "
        f"(category-word val mAP {best_t['val_map']:.3f} over {best_t['val_queries']} words, "
        f"{tree_rows[0]['val_map']:.3f} without; val names' top-1 {best_t['val_leaf_top1']:.3f}, "
        f"{tree_rows[0]['val_leaf_top1']:.3f} without)")

    hp: dict[str, Any] = {"mix": mix, "gloss": gloss, "attribute_template": best_a["template"],
                          "anchor": best_an["weight"], "anchor_lemmas": best_an["lemmas"],
                          "tree": [best_t["share"], best_t["decay"], best_t["max_up"]]}
    model = refit(name, weights_id, t, protos, mix, method, tpls, hp, best_r, best_d, best_n, seed, sel, names)
    sel["build_seconds"] = round(time.perf_counter() - t0, 1)
    return model
