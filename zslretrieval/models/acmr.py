"""ACMR: Aligned Cross-Modal Representations (Fang et al., "Learning Aligned Cross-Modal
Representation for Generalized Zero-Shot Classification", AAAI 2022), built on CADA-VAE
(Schonfeld et al., CVPR 2019).

One VAE per modality maps images (D) and class descriptors (A) to Gaussians in a shared
latent space (Z). Per training image x of class y with descriptor s = s_y the loss is

    recon    |x - Dv(zv)|_1 + |s - Ds(zs)|_1                (zv ~ Ev(x), zs ~ Es(s))
    cross    |x - Dv(zs)|_1 + |s - Ds(zv)|_1                 cross-reconstruction, weight gamma
    kl       KL(Ev(x) || N(0, I)) + KL(Es(s) || N(0, I))     weight beta
    align    W2(Ev(x), Es(s)) = sqrt(|mu_v - mu_s|^2 + |sigma_v - sigma_s|^2)   (closed form for
             diagonal Gaussians, as in CADA-VAE), weight delta
    vsa      Vision-Semantic Alignment: one linear softmax classifier over the seen classes is
             trained on the latent samples of *both* modalities (CE on zv and zs), so the two
             encoders must put an image and its class descriptor on the same side of the same
             learned decision boundaries -- alignment guided by class structure, not only by
             moment matching. The classifier has one row per seen class, so it exists only during
             ``fit`` (it plays no part in retrieval and is never checkpointed).
    iem      Information Enhancement Module. We chose a Deep-InfoMax style mutual-information
             lower bound (Jensen-Shannon estimator) between each input and its latent mean: a
             bilinear critic T(u, mu) = <P u, mu> must tell joint pairs (x_i, mu_v(x_i)) from
             shuffled pairs (x_i, mu_v(x_j)) of *other* classes, likewise for (s, mu_s). Why: the KL
             and alignment terms both pull latents toward an uninformative common code ("latent
             collapse"); maximising I(input; latent) pushes back directly on the means that
             retrieval uses, and restricting negatives to other classes (semantic rows repeat
             within a class) makes the preserved information class-discriminative.

The KL, cross and alignment weights warm up linearly over ``warmup_epochs`` as in CADA-VAE, by
absolute epoch so an e-epoch run is the prefix of a longer one (the protocol chooses e on val).

Retrieval: ``embed_images`` = mu_v(x), ``embed_classes`` = mu_s(s), cosine (``metric="ip"``).
GZSL: :meth:`gzsl_scores` follows CADA-VAE/ACMR and classifies visual latents with a softmax
classifier trained on latent *samples* -- see :meth:`latent_classifier`. :meth:`scores` stays the
cosine of latent means (consistent with the index and the embedding-based evaluation).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InvalidInputError
from . import MODELS
from .base import Hparams
from .layers import PCAReduce, mlp
from .training import IterativeModel, TrainingSetup, check_embed_input, minibatches

__all__ = ["ACMR", "ACMRHparams"]


@dataclasses.dataclass
class ACMRHparams(Hparams):
    pca_dim: int = 256             # input PCA fitted on the training images (models.layers.PCAReduce); 0 = off
    latent_dim: int = 64
    visual_hidden_dim: int = 256   # encoder and decoder hidden width of the visual VAE
    semantic_hidden_dim: int = 256
    beta: float = 0.25             # KL weight (CADA-VAE)
    cross_weight: float = 2.0      # gamma, cross-reconstruction
    align_weight: float = 8.0      # delta, Wasserstein distance between the two posteriors
    vsa_weight: float = 1.0
    iem_weight: float = 1.0
    warmup_epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 20
    # GZSL latent classifier (scores): samples drawn per class from its semantic posterior.
    cls_samples_per_class: int = 200
    cls_epochs: int = 20
    cls_lr: float = 1e-3
    cls_seed: int = 0


def _kl_std_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """(B,) KL(N(mu, exp(logvar)) || N(0, I)) per row."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def _w2_diag(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """(B,) 2-Wasserstein distance between diagonal Gaussians, row by row."""
    d2 = (mu1 - mu2).pow(2).sum(1) + ((0.5 * logvar1).exp() - (0.5 * logvar2).exp()).pow(2).sum(1)
    # The epsilon keeps the sqrt's gradient finite when the two posteriors coincide.
    return (d2 + 1e-8).sqrt()


def _jsd_mi_loss(critic: nn.Linear, u: Tensor, mu: Tensor, y: Tensor, perm: Tensor) -> Tensor:
    """Negative Jensen-Shannon MI lower bound between inputs u (B, K) and latent means mu (B, Z);
    negatives pair u_i with mu_perm(i), kept only where the classes differ."""
    pu = critic(u)
    pos = (pu * mu).sum(1)
    neg = (pu * mu[perm]).sum(1)
    keep = (y != y[perm]).float()
    neg_term = (F.softplus(neg) * keep).sum() / keep.sum().clamp_min(1.0)
    return F.softplus(-pos).mean() + neg_term


class _GaussianEncoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int, latent: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x)
        return self.mu(h), self.logvar(h)


@MODELS.register("acmr")
class ACMR(IterativeModel):
    """Two VAEs with cross-reconstruction, W2 alignment, VSA classifier and IEM; latent-mean retrieval."""

    name = "acmr"
    metric = "ip"
    Hparams = ACMRHparams

    def __init__(self, feature_dim: int, semantic_dims: Sequence[int] | int,
                 hparams: ACMRHparams | dict | None = None):
        super().__init__(feature_dim, semantic_dims, hparams)
        hp = self.hparams
        self._require_positive("latent_dim", "visual_hidden_dim", "semantic_hidden_dim", "batch_size",
                               "cls_samples_per_class", "epochs")
        if hp.warmup_epochs < 0:
            raise InvalidInputError(f"acmr: warmup_epochs={hp.warmup_epochs}; expected >= 0")
        self.reduce = PCAReduce([self.feature_dim], hp.pca_dim)
        D, A, Z = self.reduce.out_dim, self.semantic_dim, hp.latent_dim
        self.enc_v = _GaussianEncoder(D, hp.visual_hidden_dim, Z)
        self.enc_s = _GaussianEncoder(A, hp.semantic_hidden_dim, Z)
        self.dec_v = mlp([Z, hp.visual_hidden_dim, D])
        self.dec_s = mlp([Z, hp.semantic_hidden_dim, A])
        # IEM critics: bilinear T(u, mu) = <P u, mu>.
        self.critic_v = nn.Linear(D, Z, bias=False)
        self.critic_s = nn.Linear(A, Z, bias=False)
        # Centre and one global scale per modality, fitted on the training data. Why: with raw
        # features of magnitude ~0.01 (Hellinger histograms) the L1 likelihood is so flat that the
        # KL term wins and every posterior collapses onto the prior. A single scale (not one per
        # dimension) keeps rare, near-constant histogram bins from being blown up into noise.
        self.register_buffer("x_mean", torch.zeros(D))
        self.register_buffer("x_scale", torch.ones(()))
        self.register_buffer("s_mean", torch.zeros(A))
        self.register_buffer("s_scale", torch.ones(()))
        self._cls_cache: tuple[Any, nn.Linear] | None = None

    @classmethod
    def search_space(cls) -> list[dict[str, Any]]:
        return [{"align_weight": 8.0, "vsa_weight": 1.0}, {"align_weight": 2.0, "vsa_weight": 1.0},
                {"align_weight": 8.0, "vsa_weight": 0.3}]

    # -- embeddings -------------------------------------------------------------------------
    def _nx(self, x: Tensor) -> Tensor:
        return (x - self.x_mean) / self.x_scale

    def _ns(self, s: Tensor) -> Tensor:
        return (s - self.s_mean) / self.s_scale

    def embed_images(self, x: Tensor) -> Tensor:
        """(N, D) -> (N, Z) visual posterior means."""
        x = check_embed_input(self, x, self.feature_dim, "image features")
        return self.enc_v(self._nx(self.reduce(x)))[0]

    def embed_classes(self, s: Tensor) -> Tensor:
        """(C, A) -> (C, Z) semantic posterior means."""
        return self.enc_s(self._ns(check_embed_input(self, s, self.semantic_dim, "class semantics")))[0]

    @torch.no_grad()
    def _fit_normalisation(self, x: Tensor, s: Tensor) -> None:
        for data, mean, scale in ((x, self.x_mean, self.x_scale), (s, self.s_mean, self.s_scale)):
            mean.copy_(data.mean(0))
            rms = (data - mean).pow(2).mean().sqrt()
            scale.copy_(rms if rms > 0 else torch.ones(()))

    # -- training ---------------------------------------------------------------------------
    def _warm(self, epoch: int) -> float:
        w = self.hparams.warmup_epochs
        return 1.0 if w == 0 else min(1.0, epoch / w)

    def prepare_inputs(self, x: Tensor) -> Tensor:
        return self.reduce(x)

    def loss_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None,
                   vsa_head: nn.Linear | None = None, perm: Tensor | None = None,
                   reduced: bool = False) -> dict[str, Tensor]:
        """Loss of one batch: x (B, D) (or (B, pca_dim) when ``reduced``), y (B,) rows of s (C, A).
        ``epoch`` sets the warm-up (None: fully warm); ``vsa_head`` (Z -> C) enables the VSA term;
        ``perm`` (B,) pairs IEM negatives (default: a roll by one). Returns each raw term and
        ``loss`` (the weighted total)."""
        return super().loss_terms(x, y, s, epoch=epoch, reduced=reduced, vsa_head=vsa_head, perm=perm)

    def compute_terms(self, x: Tensor, y: Tensor, s: Tensor, *, epoch: int | None = None,
                      vsa_head: nn.Linear | None = None, perm: Tensor | None = None,
                      **objects: Any) -> dict[str, Tensor]:
        """x (B, D') PCA-reduced (raw scale), y (B,) rows of s. Reconstruction is measured on the
        normalised scale. Terms: recon, cross, kl, align, iem, vsa."""
        x, sy = self._nx(x), self._ns(s[y])
        mu_v, lv_v = self.enc_v(x)
        mu_s, lv_s = self.enc_s(sy)
        z_v = mu_v + torch.randn_like(mu_v) * (0.5 * lv_v).exp()
        z_s = mu_s + torch.randn_like(mu_s) * (0.5 * lv_s).exp()
        terms = {
            "recon": ((self.dec_v(z_v) - x).abs().sum(1) + (self.dec_s(z_s) - sy).abs().sum(1)).mean(),
            "cross": ((self.dec_v(z_s) - x).abs().sum(1) + (self.dec_s(z_v) - sy).abs().sum(1)).mean(),
            "kl": (_kl_std_normal(mu_v, lv_v) + _kl_std_normal(mu_s, lv_s)).mean(),
            "align": _w2_diag(mu_v, lv_v, mu_s, lv_s).mean(),
        }
        if perm is None:
            perm = torch.roll(torch.arange(len(y), device=x.device), 1)
        terms["iem"] = _jsd_mi_loss(self.critic_v, x, mu_v, y, perm) + _jsd_mi_loss(self.critic_s, sy, mu_s, y, perm)
        terms["vsa"] = (F.cross_entropy(vsa_head(z_v), y) + F.cross_entropy(vsa_head(z_s), y)
                        if vsa_head is not None else torch.zeros((), device=x.device))
        return terms

    def loss_weights(self, epoch: int | None) -> dict[str, float]:
        hp = self.hparams
        warm = 1.0 if epoch is None else self._warm(epoch)
        return {"recon": 1.0, "cross": warm * hp.cross_weight, "kl": warm * hp.beta, "align": warm * hp.align_weight,
                "vsa": hp.vsa_weight, "iem": hp.iem_weight}

    def setup_training(self, x: Tensor, y: Tensor, s: Tensor, gen: torch.Generator, *,
                       seed: int) -> TrainingSetup:
        self._cls_cache = None
        self.reduce.fit(x, gen)
        xr = self.reduce.transform(x)
        self._fit_normalisation(xr, s[y])
        # Training-only: one row per seen class, discarded after fit (see module docstring).
        vsa_head = nn.Linear(self.hparams.latent_dim, s.shape[0]).to(x.device)
        return TrainingSetup(x=xr, objects={"vsa_head": vsa_head}, params=list(vsa_head.parameters()))

    def batch_objects(self, n: int, gen: torch.Generator) -> dict[str, Any]:
        # IEM negatives: a fresh pairing per batch, drawn from the training generator
        return {"perm": torch.randperm(n, generator=gen)}

    # -- GZSL latent classifier -------------------------------------------------------------
    @torch.no_grad()
    def _latent_samples(self, s: Tensor, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        mu, lv = self.enc_s(self._ns(s))
        eps = torch.randn(s.shape[0], n, mu.shape[1], generator=gen)
        z = (mu[:, None] + eps * (0.5 * lv).exp()[:, None]).reshape(-1, mu.shape[1])
        return z, torch.arange(s.shape[0]).repeat_interleave(n)

    def latent_classifier(self, s: Tensor, *, seen_x: Tensor | None = None,
                          seen_y: Tensor | None = None) -> nn.Linear:
        """Softmax classifier Z -> C over the classes s (C, A), trained as in CADA-VAE on latent
        samples: ``cls_samples_per_class`` draws from each class's semantic posterior Es(s_c), plus --
        when given -- visual posterior samples of real seen images ``seen_x`` (M, D) with labels
        ``seen_y`` (M,) indexing rows of s. Deterministic: samples and init come from ``cls_seed``."""
        hp = self.hparams
        s = check_embed_input(self, s, self.semantic_dim, "class semantics")
        self.eval()
        gen = torch.Generator().manual_seed(hp.cls_seed)
        z, zy = self._latent_samples(s, hp.cls_samples_per_class, gen)
        if seen_x is not None:
            if seen_y is None:
                raise InvalidInputError("acmr: seen_x given without seen_y; pass both or neither")
            seen_x = check_embed_input(self, seen_x, self.feature_dim, "seen image features")
            seen_y = torch.as_tensor(seen_y, dtype=torch.int64)
            with torch.no_grad():
                mu, lv = self.enc_v(self._nx(self.reduce(seen_x)))
                zx = mu + torch.randn(mu.shape, generator=gen) * (0.5 * lv).exp()
            z, zy = torch.cat([z, zx]), torch.cat([zy, seen_y])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp.cls_seed)
            head = nn.Linear(z.shape[1], s.shape[0])
        opt = torch.optim.Adam(head.parameters(), lr=hp.cls_lr)
        with torch.enable_grad():
            for _ in range(hp.cls_epochs):
                for idx in minibatches(len(z), 256, gen):
                    loss = F.cross_entropy(head(z[idx]), zy[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
        head.eval()
        return head

    def _state_key(self, *tensors: Tensor | None) -> tuple:
        # Parameters change in place (optimiser steps, load_state_dict), which bumps _version.
        digest = hashlib.sha1()
        for t in tensors:
            if t is not None:
                t = torch.as_tensor(t).detach().cpu().contiguous()
                digest.update(str((t.dtype, tuple(t.shape))).encode())
                digest.update(t.numpy().tobytes())
            digest.update(b"|")
        return (digest.hexdigest(), tuple((p.data_ptr(), p._version) for p in self.parameters()))

    @torch.no_grad()
    def gzsl_scores(self, x: Tensor, s: Tensor, *, seen_x: Tensor | None = None,
                    seen_y: Tensor | None = None) -> Tensor:
        """(N, C) logits of the CADA-VAE/ACMR latent softmax classifier over the classes s (C, A),
        applied to the visual posterior means of x (N, D). The classifier (:meth:`latent_classifier`)
        is fitted lazily and cached while the weights, s and the seen data are unchanged, so calling
        this batch by batch costs one fit. Without ``seen_x`` every class is represented the same way
        (semantic samples), which carries no bias toward the seen classes.

        :meth:`scores` stays the cosine of the latent means, the same rule the index and the
        protocol's embedding-based evaluation use, so hyper-parameters chosen with ``scores`` on val
        are the ones evaluated on test."""
        s = check_embed_input(self, s, self.semantic_dim, "class semantics")
        key = self._state_key(s, seen_x, seen_y)
        if self._cls_cache is None or self._cls_cache[0] != key:
            self._cls_cache = (key, self.latent_classifier(s, seen_x=seen_x, seen_y=seen_y))
        self.eval()
        return self._cls_cache[1](self.embed_images(x))
