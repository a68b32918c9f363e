"""A score ensemble of trained zero-shot models: the sum of their cosines, each on its own scale.

Score of image x for class s::

    sum_m  w_m cos(f_m(x), g_m(s))  /  (sqrt(M) ||w||)          w_m = 1 / std of member m's cosines

where ``f_m`` / ``g_m`` are member m's ``embed_images`` / ``embed_classes`` and the spread is
measured on the training images against the training classes once the member is fitted (one
standardisation per member: the score scales of ESZSL, DEM and the networks differ by orders of
magnitude, and per-image z-scores did no better on awa1-lampert, see docs/results.md). The ensemble
is itself a cosine model, so it indexes like any other: an image is the concatenation of its
members' unit image embeddings over sqrt(M) (a unit vector), a class the concatenation of its
members' unit class embeddings times w_m over ||w|| (a unit vector), and their inner product is the
score above. DEM (metric "l2") enters by the cosine of its embeddings: for a class query over images
(retrieval) that is its own ranking, as its images are unit vectors; for one image over classes it
leaves out DEM's prototype-norm term.

Which members to use is chosen on the validation classes like any hyper-parameter: every non-empty
subset of ``pool`` is a candidate (single models included, so the ensemble keeps the best single
model when no combination beats it on val). Each member's own hyper-parameters and training length
(``member_hparams``) are chosen on val first, by the member's own protocol run
(``protocol.select_and_train``); :meth:`Ensemble.fit_grid` then fits each member once and scores every
subset from the same fitted members.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from . import MODELS, get_model_class, list_models
from .base import Hparams, ZslModel
from .training import check_fit_inputs

DEFAULT_POOL = ("eszsl", "dem", "ssl", "acmr", "dml")
# Training images (x training classes) whose member cosines give each member's spread.
SCALE_SAMPLE = 2000


@dataclasses.dataclass
class EnsembleHparams(Hparams):
    pool: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_POOL))  # models whose subsets are tried
    members: list[str] | None = None          # the subset used (None: the whole pool)
    member_hparams: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> its chosen hparams


@MODELS.register("ensemble")
class Ensemble(ZslModel):
    """Cosine-sum ensemble of member models (module docstring); ``members`` are fitted by :meth:`fit`."""

    name = "ensemble"
    metric = "ip"
    Hparams = EnsembleHparams
    iterative = False   # members carry their own (val-chosen) epochs; the subset is the only choice
    # The protocol chooses each member's hyper-parameters on val before the subsets (protocol.selection).
    composite = True

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int, hparams: Hparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        names = self.member_names(hp)
        self.members = nn.ModuleList(
            get_model_class(n)(feature_dim, semantic_dims, dict(hp.member_hparams.get(n, {}))) for n in names)
        self.register_buffer("weights", torch.ones(len(names), dtype=torch.float64))

    @staticmethod
    def member_names(hp: EnsembleHparams) -> list[str]:
        """The members ``hp`` uses, checked: known models, no ensemble, no repeats, a subset of the pool."""
        valid = [n for n in list_models() if n != "ensemble"]
        pool = as_names(hp.pool)
        names = as_names(hp.members) if hp.members is not None else pool
        for n in (*pool, *names):
            if n not in valid:
                raise InvalidInputError(f"ensemble: member {n!r} is not a model an ensemble can hold; "
                                        f"valid: {', '.join(valid)}")
        if not names or len(set(names)) != len(names) or len(set(pool)) != len(pool):
            raise InvalidInputError(f"ensemble: members {names} / pool {pool}: need at least one model, each once")
        if not set(names) <= set(pool):
            raise InvalidInputError(f"ensemble: members {names} are not all in the pool {pool}")
        return names

    @classmethod
    def search_space_for(cls, fixed: dict[str, Any]) -> list[dict[str, Any]]:
        """Every non-empty subset of the pool, smallest first (ties on val go to fewer members)."""
        if fixed.get("members") is not None:
            return [{}]
        pool = as_names(fixed.get("pool", DEFAULT_POOL))
        return [{"members": list(c)} for r in range(1, len(pool) + 1) for c in itertools.combinations(pool, r)]

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Fit every member on (x, y, s) with its own hyper-parameters and epochs, then measure the
        members' spreads. Returns each member's final training loss (NaN where it reports none)."""
        if epochs not in (None, 1):
            raise InvalidInputError(f"ensemble: epochs={epochs}; each member trains for its own val-chosen epochs")
        x, y, s = check_fit_inputs(self, x, y, s)
        losses = [_fit_member(m, x, y, s, seed) for m in self.members]
        self.weights.copy_(torch.tensor([1.0 / member_spread(m, x, s, seed) for m in self.members],
                                        dtype=torch.float64))
        self.eval()
        if on_epoch is not None:
            on_epoch(1)
        return losses

    @classmethod
    def fit_grid(cls, feature_dim: int, semantic_dims: Sequence[int] | int, candidates: Sequence[dict],
                 x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0) -> Iterator[tuple[ZslModel, list[float]]]:
        """Each candidate subset built from members fitted once each on (x, y, s); yields
        ``(model, losses)`` in order, each equal to :meth:`fit` on its own."""
        fitted: dict[str, tuple[ZslModel, float, float]] = {}
        checked = None
        for hp in candidates:
            model = cls(feature_dim, semantic_dims, hp)
            names = cls.member_names(model.hparams)
            if checked is None:
                checked = check_fit_inputs(model, x, y, s)
            xs, ys, ss = checked
            for n, m in zip(names, model.members):
                if n not in fitted:
                    loss = _fit_member(m, xs, ys, ss, seed)
                    fitted[n] = (m, loss, member_spread(m, xs, ss, seed))
            model.members = nn.ModuleList(fitted[n][0] for n in names)
            model.weights.copy_(torch.tensor([1.0 / fitted[n][2] for n in names], dtype=torch.float64))
            model.eval()
            yield model, [fitted[n][1] for n in names]

    # -- embeddings ---------------------------------------------------------------------------------
    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, sum E_m) unit rows: the members' unit image embeddings over sqrt(M)."""
        parts = [nn.functional.normalize(m.embed_images(x).float(), dim=1) for m in self.members]
        return torch.cat(parts, dim=1) / math.sqrt(len(parts))

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, sum E_m) unit rows: the members' unit class embeddings times w_m over ||w||."""
        w = (self.weights / self.weights.norm()).float()
        parts = [nn.functional.normalize(m.embed_classes(s).float(), dim=1) * w[i] for i, m in enumerate(self.members)]
        return torch.cat(parts, dim=1)


def as_names(value: Any) -> list[str]:
    """A list of model names, or one string of them separated by commas (``--hparam pool=eszsl,dem``)."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(t, str) for t in value):
        return list(value)
    raise InvalidInputError(f"ensemble: {value!r} is not a list of model names; expected e.g. eszsl,dem")


def _fit_member(model: ZslModel, x: Tensor, y: Tensor, s: Tensor, seed: int) -> float:
    # seeded as the protocol seeds a model's own run, so a member fits as it does on its own
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    losses = model.fit(x, y, s, seed=seed)
    model.eval()
    return float(losses[-1]) if losses else float("nan")


@torch.no_grad()
def member_spread(model: ZslModel, x: Tensor, s: Tensor, seed: int, sample: int = SCALE_SAMPLE) -> float:
    """Standard deviation of a fitted member's cosines between (a seeded sample of) the training
    images ``x`` and the training classes ``s``: its score unit in the ensemble."""
    if len(x) > sample:
        rows = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False)))
        x = x[rows.to(x.device)]
    img = nn.functional.normalize(model.embed_images(x).double(), dim=1)
    cls = nn.functional.normalize(model.embed_classes(s).double(), dim=1)
    sd = float((img @ cls.T).std())
    if not math.isfinite(sd) or sd <= 0:
        raise InvalidInputError(f"ensemble: member {model.name!r} gives the same cosine to every training image "
                                f"and class (spread {sd}); it cannot be weighed against the others")
    return sd
