"""The one training loop of the iterative models, and the base of the closed-form ones.

Every model checks its fit inputs and counts epochs the same way (:func:`check_fit_inputs`,
:func:`resolve_epochs`). An iterative model (:class:`IterativeModel`; dem, ssl, acmr, dml) declares

* :meth:`~IterativeModel.setup_training` -- fit data-dependent transforms (PCA, whitening, scales)
  and create training-only modules (heads with one row per seen class), in the model's own order;
* :meth:`~IterativeModel.compute_terms` -- the raw loss terms of one batch, by name;
* :meth:`~IterativeModel.loss_weights` -- the weight of each term (may depend on the epoch);

and the base class owns the loop: seeded initialisation (:func:`seeded_training`), the optimiser,
shuffled minibatches, the weighted sum of the terms, backward/step, per-epoch mean loss and the
``on_epoch`` callback the protocol uses to choose the training length on val. A closed-form model
(:class:`ClosedFormModel`; eszsl, sae) declares a solver of the sufficient statistics and how one
hyper-parameter set is solved from it; the base fits one candidate or a whole grid sharing solvers.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InvalidInputError
from .base import ZslModel

__all__ = ["ClosedFormModel", "IterativeModel", "TrainingSetup", "check_embed_input", "check_fit_inputs",
           "gram", "minibatches", "resolve_epochs", "seeded_training"]


def check_fit_inputs(model: ZslModel, x: Tensor, y: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validate and convert fit inputs: x (N, D) float32, y (N,) int64 in [0, C), s (C, A) float32."""
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(y, dtype=torch.int64)
    s = torch.as_tensor(s, dtype=torch.float32)
    if x.ndim != 2 or x.shape[1] != model.feature_dim:
        raise InvalidInputError(f"{model.name}: image features of shape {tuple(x.shape)}; "
                                f"expected (N, {model.feature_dim})")
    if s.ndim != 2 or s.shape[1] != model.semantic_dim:
        raise InvalidInputError(f"{model.name}: class semantics of shape {tuple(s.shape)}; "
                                f"expected (C, {model.semantic_dim})")
    if y.shape != (x.shape[0],):
        raise InvalidInputError(f"{model.name}: labels of shape {tuple(y.shape)}; expected ({x.shape[0]},)")
    if len(y) == 0:
        raise InvalidInputError(f"{model.name}: no training images; expected at least one")
    if int(y.min()) < 0 or int(y.max()) >= s.shape[0]:
        raise InvalidInputError(f"{model.name}: labels must index the {s.shape[0]} rows of s, i.e. "
                                f"[0, {s.shape[0] - 1}]; got [{int(y.min())}, {int(y.max())}]")
    if not (torch.isfinite(x).all() and torch.isfinite(s).all()):
        raise InvalidInputError(f"{model.name}: non-finite values in image features or semantics; expected finite")
    return x, y, s


def check_embed_input(model: ZslModel, t: Tensor, width: int, what: str) -> Tensor:
    """(N, width) float32 or InvalidInputError naming the shape."""
    t = torch.as_tensor(t, dtype=torch.float32)
    if t.ndim != 2 or t.shape[1] != width:
        raise InvalidInputError(f"{model.name}: {what} of shape {tuple(t.shape)}; expected (N, {width})")
    return t


def resolve_epochs(model: ZslModel, epochs: int | None) -> int:
    """The one epoch rule: ``epochs`` (else the ``epochs`` hyper-parameter) must be an integer >= 1."""
    n = getattr(model.hparams, "epochs", 1) if epochs is None else epochs
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise InvalidInputError(f"{model.name}: epochs={n!r}; expected an integer >= 1")
    return int(n)


def minibatches(n: int, batch_size: int, generator: torch.Generator, *, merge_lone: bool = True) -> Iterator[Tensor]:
    """Shuffled index batches (int64) covering range(n) once. With ``merge_lone`` a last batch of 1
    is merged into the previous one so batch statistics (and in-batch negatives) never see a lone sample."""
    perm = torch.randperm(n, generator=generator)
    starts = list(range(0, n, batch_size))
    if merge_lone and len(starts) > 1 and n - starts[-1] < 2:
        starts.pop()
    for i, a in enumerate(starts):
        b = starts[i + 1] if i + 1 < len(starts) else n
        yield perm[a:b]


@contextlib.contextmanager
def seeded_training(model: nn.Module, seed: int) -> Iterator[torch.Generator]:
    """Re-initialise ``model`` from ``seed`` and isolate the global RNG, so ``fit(seed=s)`` gives the
    same weights whatever happened before, and the first e epochs of a longer run equal an e-epoch
    run (the protocol picks the epoch count on val, then refits). Yields a generator for shuffling."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        yield torch.Generator().manual_seed(seed)


@dataclasses.dataclass
class TrainingSetup:
    """What :meth:`IterativeModel.setup_training` hands to the loop.

    x: (N, D') training inputs after the fitted transforms (fed to ``compute_terms`` by batch);
    objects: training-only things passed to ``compute_terms`` as keyword arguments (heads, loss
    objects); params: their trainable parameters, optimised with the model's own.
    """

    x: Tensor
    objects: dict[str, Any] = dataclasses.field(default_factory=dict)
    params: list[nn.Parameter] = dataclasses.field(default_factory=list)


class IterativeModel(ZslModel):
    """A model trained by minibatch gradient descent; the base class owns the loop (module docstring)."""

    iterative = True
    # False: keep a last batch of one image (DEM's official loop does); True merges it (see minibatches).
    merge_lone_batch: ClassVar[bool] = True

    # -- what a model declares ------------------------------------------------------------------
    def setup_training(self, x: Tensor, y: Tensor, s: Tensor, gen: torch.Generator, *, seed: int) -> TrainingSetup:
        """Fit data-dependent transforms on the training data (``gen``: the training generator, ``seed``:
        the fit's seed, for transforms with their own sampling); default: train on x as given."""
        return TrainingSetup(x=x)

    def prepare_inputs(self, x: Tensor) -> Tensor:
        """(N, D) raw features -> what ``compute_terms`` takes (the fitted transforms); default identity."""
        return x

    def compute_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None,
                      **objects: Any) -> dict[str, Tensor]:
        """Raw loss terms of one batch: x (B, D') prepared inputs, y (B,) rows of s (C, A)."""
        raise NotImplementedError

    def loss_weights(self, epoch: int | None) -> dict[str, float]:
        """Weight of each term in the total at ``epoch`` (None: fully warmed up); 0 drops a term."""
        raise NotImplementedError

    def batch_objects(self, n: int, gen: torch.Generator) -> dict[str, Any]:
        """Per-batch random inputs of ``compute_terms`` drawn from the training generator; default none."""
        return {}

    def make_optimizer(self, extra: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.Adam(list(self.parameters()) + list(extra), lr=hp.lr,
                                weight_decay=getattr(hp, "weight_decay", 0.0))

    def step_context(self) -> contextlib.AbstractContextManager:
        """Context around the batches of one epoch (DEM limits torch threads there)."""
        return contextlib.nullcontext()

    def epoch_loss(self, mean_batch_loss: float) -> float:
        """The reported loss of an epoch from the mean weighted batch loss."""
        return mean_batch_loss

    # -- what the base class does ---------------------------------------------------------------
    def total_loss(self, terms: dict[str, Tensor], epoch: int | None) -> Tensor:
        """Sum of weight * term over the declared weights (terms with weight 0 are left out)."""
        total: Tensor | None = None
        for name, w in self.loss_weights(epoch).items():
            if w == 0:
                continue
            part = w * terms[name]
            total = part if total is None else total + part
        if total is None:
            raise InvalidInputError(f"{self.name}: every loss weight is 0; nothing to train")
        return total

    def loss_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None, reduced: bool = False,
                   **objects: Any) -> dict[str, Tensor]:
        """Terms of one batch plus ``loss`` (their weighted total): x (B, D) raw features, or already
        prepared when ``reduced``; y (B,) rows of s (C, A)."""
        terms = self.compute_terms(x if reduced else self.prepare_inputs(x), y, s, epoch=epoch, **objects)
        terms["loss"] = self.total_loss(terms, epoch)
        return terms

    def _device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")

    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Train on seen classes: x (N, D), y (N,) indices into s (C_seen, A). Returns per-epoch loss.

        ``on_epoch(e)`` runs after epoch e in eval mode; its random draws are undone so it cannot
        perturb training."""
        x, y, s = check_fit_inputs(self, x, y, s)
        n_epochs = resolve_epochs(self, epochs)
        dev = self._device()
        x, y, s = x.to(dev), y.to(dev), s.to(dev)
        hp = self.hparams
        losses: list[float] = []
        with seeded_training(self, seed) as gen:
            setup = self.setup_training(x, y, s, gen, seed=seed)
            opt = self.make_optimizer(setup.params)
            for epoch in range(1, n_epochs + 1):
                self.train()
                total, count = 0.0, 0
                with self.step_context():
                    for idx in minibatches(len(setup.x), hp.batch_size, gen, merge_lone=self.merge_lone_batch):
                        idx = idx.to(dev)
                        terms = self.compute_terms(setup.x[idx], y[idx], s, epoch=epoch, **setup.objects,
                                                   **self.batch_objects(len(idx), gen))
                        loss = self.total_loss(terms, epoch)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        total += float(loss.detach()) * len(idx)
                        count += len(idx)
                self.eval()
                with torch.no_grad():
                    losses.append(float(self.epoch_loss(total / count)))
                if on_epoch is not None:
                    state = torch.get_rng_state()
                    on_epoch(epoch)
                    torch.set_rng_state(state)
        self.eval()
        return losses


def gram(x: Tensor) -> np.ndarray:
    """X^T X for row-sample x (N, D) -> (D, D) float64.

    The float32 product (one BLAS call on all cores) is ~2x faster than float64 and its relative
    error (~1e-6) is far below any ridge the grids use.
    """
    g = x.detach().to(torch.float32).cpu()
    return (g.T @ g).to(torch.float64).numpy()



class ClosedFormModel(ZslModel):
    """A model solved in closed form from sufficient statistics of the training set (eszsl, sae).

    Subclasses give :meth:`make_solver` (statistics that do not depend on the hyper-parameters in
    :meth:`solver_key`) and :meth:`fit_from` (solve one hyper-parameter set). Candidates with the same
    ``solver_key`` share one solver in :meth:`fit_grid`, which the protocol uses for whole grids.
    """

    iterative = False

    @classmethod
    def make_solver(cls, x: Tensor, y: Tensor, s: Tensor, hparams: Any, *, seed: int = 0) -> Any:
        """Sufficient statistics of one training set; ``seed`` for fitted maps that sample (landmarks)."""
        raise NotImplementedError

    def solver_key(self) -> Hashable:
        """Hyper-parameters the solver depends on (default: none)."""
        return None

    def fit_from(self, solver: Any) -> list[float]:
        """Set the parameters from ``solver``; returns [objective per image]."""
        raise NotImplementedError

    def fit(self, x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0, epochs: int | None = None,
            on_epoch: Callable[[int], None] | None = None) -> list[float]:
        """Closed form; ``seed`` only seeds sampling inside the solver (ESZSL's kernel landmarks);
        ``epochs`` must be None or 1."""
        if epochs is not None:
            resolve_epochs(self, epochs)
        x, y, s = check_fit_inputs(self, x, y, s)
        losses = self.fit_from(self.make_solver(x, y, s, self.hparams, seed=seed))
        self.eval()
        if on_epoch is not None:
            on_epoch(1)
        return losses

    @classmethod
    def fit_grid(cls, feature_dim: int, semantic_dims: Sequence[int] | int, candidates: Sequence[dict],
                 x: Tensor, y: Tensor, s: Tensor, *, seed: int = 0) -> Iterator[tuple[ZslModel, list[float]]]:
        """Fit each candidate on the same data, sharing solvers; yields ``(model, losses)`` in order.
        Each model equals ``fit`` on its own."""
        solvers: dict[Hashable, Any] = {}
        checked = None
        for hp in candidates:
            model = cls(feature_dim, semantic_dims, hp)
            if checked is None:
                checked = check_fit_inputs(model, x, y, s)
            key = model.solver_key()
            if key not in solvers:
                # one solver at a time: each holds D x D matrices
                solvers.clear()
                solvers[key] = cls.make_solver(*checked, model.hparams, seed=seed)
            losses = model.fit_from(solvers[key])
            model.eval()
            yield model, losses
