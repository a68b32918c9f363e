"""The general zero-shot model: text -> the backbone's own visual space, built without one image.

A backbone trained on ImageNet carries 1000 visual class prototypes: the rows of its classifier
weight matrix ``W`` (1000, D) live in the pooled-feature space the index stores (the classifier
scores an image feature f by ``W f + b``). The 1000 category names (torchvision's list) give
their text embeddings. A map text (384) -> prototype (D) learnt on these pairs turns any name or
description into a query vector for a raw-feature index: a virtual classifier row for a class the
backbone was never trained on.

One concern per module (each one's docstring says more):

    imagenet.py  the backbone's ImageNet head (W, b, weights id) and the 1000 category names
    lexicon.py   WordNet from timm's tables: lemma -> definitions, the 1000 classes' lemmas, definition words
    glosses.py   how a text is read: prompt templates (ensembles) and a name's WordNet definitions
    anchors.py   known-name anchors: the ImageNet classes a name names, pulled into its query
    maps.py      the text -> visual maps: DEM, ridge, semantic neighbours, ConSE; their mix
    heldout.py   the class split and the held-out scores every choice is made with
    model.py     GeneralModel (embed_texts, nearest_classes, reference, correction) and its numpy file
    build.py     the protocol: every choice on val classes, step by step, then the refit on all 1000
    cache.py     where a model comes from (data folder, shipped/ in the package, a build): load_general_model

Every name callers used from the former single module is re-exported here.
"""
from .anchors import ANCHOR_LEMMAS, ANCHOR_WEIGHTS, EXACT_ANCHOR, apply_anchors, category_queries, name_anchors
from .build import (CONSE_T, CONSE_TAU, DEM_EVAL_EVERY, DEM_MAX_EPOCHS, DEM_WEIGHT_DECAYS, MIXES, NBR_T, NBR_TAU,
                    RIDGE_ALPHAS, build_general_model)
from .cache import cached_general_model, general_model_path, load_general_model, model_key, shipped_model_path
from .glosses import (ATTRIBUTE_TEMPLATE, ATTRIBUTE_TEMPLATES, GLOSS_WEIGHTS, TEMPLATES, gloss_embeddings, mix_glosses,
                      prompt_embeddings, with_glosses)
from .heldout import SPLIT_SIZES, category_map, gallery_scores, heldout_retrieval, prototype_top1, split_classes
from .imagenet import HEAD_BACKBONES, head_backbone, head_weights_id, imagenet_categories, imagenet_head
from .lexicon import DESCRIPTION_WORDS, description_words, glosses_of, imagenet_lemmas, wordnet_glosses
from .maps import DEM_HIDDEN, MAPS, DemArrays, Neighbours, _predict, apply_ridge, conse_embed, fit_ridge, neighbour_map
from .model import FORMAT, GeneralModel
from .vectors import _unit, softmax

__all__ = ["ANCHOR_LEMMAS", "ANCHOR_WEIGHTS", "ATTRIBUTE_TEMPLATE", "ATTRIBUTE_TEMPLATES", "CONSE_T", "CONSE_TAU",
           "DEM_EVAL_EVERY", "DEM_HIDDEN", "DEM_MAX_EPOCHS", "DEM_WEIGHT_DECAYS", "DESCRIPTION_WORDS", "DemArrays",
           "EXACT_ANCHOR", "FORMAT", "GLOSS_WEIGHTS", "GeneralModel", "HEAD_BACKBONES", "MAPS", "MIXES", "NBR_T",
           "NBR_TAU", "Neighbours", "RIDGE_ALPHAS", "SPLIT_SIZES", "TEMPLATES", "_predict", "_unit", "apply_anchors",
           "apply_ridge", "build_general_model", "cached_general_model", "category_map", "category_queries",
           "conse_embed", "description_words", "fit_ridge", "gallery_scores", "general_model_path", "gloss_embeddings",
           "glosses_of", "head_backbone", "head_weights_id", "heldout_retrieval", "imagenet_categories",
           "imagenet_head", "imagenet_lemmas", "load_general_model", "mix_glosses", "model_key", "name_anchors",
           "neighbour_map", "prompt_embeddings", "prototype_top1", "shipped_model_path", "softmax", "split_classes",
           "with_glosses", "wordnet_glosses"]
