"""Exact brute-force search in torch: a low-precision scan, then an exact fp32 re-rank.

Layout: the database is stored twice on the device -- in fp16/bf16 (``lo``, scanned by every query)
and in fp32 (``hi``, read only for the few candidates of each query; ``rerank_store="host"`` keeps it
in pinned host memory instead). The scan reads half the bytes of an fp32 scan and runs on tensor
cores; the re-rank makes the answer the fp32 exact one.

Why the answer is exact (ties aside). Let s_j be the exact score of stored vector j for query q and
ŝ_j the scan's score. Inputs are rounded to the storage type (unit roundoff u: 2^-11 fp16, 2^-8 bf16,
plus an absolute 2^-25 per fp16 element for subnormals), products are accumulated in fp32 (worst
case error d*2^-24 of sum|x_i q_i|), and, only on the fallback path without fp32 matmul output, the
result is rounded once more (u). With X = max_j ||x_j|| this gives, for every j,

    |ŝ_j - s_j| <= eps(q) = (2u + u^2 + u_out + 2 d 2^-24) X ||q|| + a (1+u) sqrt(d) (||q|| + X) + a^2 d

(the second d 2^-24 covers the fp32 re-rank itself; for l2 the ranking score is 2 x.q - ||x||^2 with
the norms kept in fp32, so the bound doubles). The scan keeps the k' = k + margin best ŝ; every other
vector has ŝ_j <= tau, the smallest kept ŝ, hence s_j <= tau + eps. After re-ranking the candidates
exactly, if the k-th exact score is >= tau + eps, no vector outside the candidates can enter the
top-k: the result is certified. Queries that fail the check are re-scanned with k' four times larger
(finally the whole database), so the returned top-k is always the exact fp32 top-k up to ties within
fp32 rounding. ``stats["widened"]`` counts such re-scans. The default margin, max(16, k), certifies
nearly all queries at once on real embeddings: eps is ~1.2e-3 for unit fp16 vectors (d = 2048; bf16:
~8.2e-3), below the usual gap between the k-th and 2k-th neighbour.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from ...errors import IncompatibleError, InvalidInputError
from ...scoring import Searcher

DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
_U = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8, torch.float32: 2.0 ** -24}
# half the spacing of the smallest subnormals: the absolute rounding error near zero
_A = {torch.float16: 2.0 ** -25, torch.bfloat16: 2.0 ** -134, torch.float32: 2.0 ** -150}
_MAX = {torch.float16: 65504.0, torch.bfloat16: 3.38e38, torch.float32: 3.4e38}
_U32 = 2.0 ** -24


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> cuda when available, else cpu; validates explicit devices."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInputError(f"device {device!r}; accepted: auto, cpu, cuda, cuda:N") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise IncompatibleError(f"device {device!r} but torch sees no CUDA GPU; use device 'cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    return dev


@contextlib.contextmanager
def _fp32_matmul_exact() -> Iterator[None]:
    """fp32 matmuls in true fp32 (no TF32 / bf16 passes) for the re-rank and the full ranking."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@contextlib.contextmanager
def _no_reduced_precision_reduction() -> Iterator[None]:
    """cuBLAS may otherwise reduce split-K partial sums in fp16/bf16, outside our error bound."""
    m = torch.backends.cuda.matmul
    old = (m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction)
    m.allow_fp16_reduced_precision_reduction = m.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        m.allow_fp16_reduced_precision_reduction, m.allow_bf16_reduced_precision_reduction = old


class TorchSearcher(Searcher):
    """Exact search on a torch device (CUDA in production; CPU works, for tests).

    Args:
        dim, metric: see :class:`Searcher`.
        index_type: only ``"Flat"`` (this backend is exact).
        device: ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        dtype: scan precision: ``"fp16"`` (default), ``"bf16"`` or ``"fp32"``.
        rerank: re-rank candidates with exact fp32 scores (default); ``False`` returns the raw
            low-precision top-k (approximate; for benchmarks only).
        rerank_store: where the fp32 copy lives, ``"device"`` (fast) or ``"host"`` (pinned RAM,
            saves 2/3 of the device memory; candidates cross PCIe).
        margin: extra candidates k' - k for the first scan; default max(16, k).
        workspace_bytes: scratch memory per chunk (scores, gathered candidates); default 1 GiB on
            CUDA, 128 MiB on CPU.
    """

    def __init__(self, dim: int, metric: str = "ip", *, index_type: str = "Flat", device: str | None = "auto",
                 dtype: str = "fp16", rerank: bool = True, rerank_store: str = "device",
                 margin: int | None = None, workspace_bytes: int | None = None):
        super().__init__(dim, metric)
        if index_type.lower() != "flat":
            raise InvalidInputError(f"torch searcher is exact only: index_type {index_type!r}; accepted: 'Flat' "
                                    "(use --searcher faiss for approximate index types)")
        if dtype not in DTYPES:
            raise InvalidInputError(f"dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
        if rerank_store not in ("device", "host"):
            raise InvalidInputError(f"rerank_store {rerank_store!r}; accepted: device, host")
        if margin is not None and margin < 0:
            raise InvalidInputError(f"margin={margin}; expected an integer >= 0")
        self.device = resolve_device(device)
        self.dtype = DTYPES[dtype]
        self.rerank = bool(rerank)
        self.margin = margin
        cuda = self.device.type == "cuda"
        self.workspace_bytes = int(workspace_bytes or ((1 << 30) if cuda else (128 << 20)))
        # fp32 storage needs no second copy: the scanned vectors are the exact ones
        self._hi_device = self.device if (rerank_store == "device" or not cuda) else torch.device("cpu")
        self._pin = cuda and self._hi_device.type == "cpu"
        self._n = 0
        self._lo = torch.empty((0, self.dim), dtype=self.dtype, device=self.device)
        self._hi: torch.Tensor | None = (None if self.dtype == torch.float32 else
                                         torch.empty((0, self.dim), dtype=torch.float32, device=self._hi_device))
        self._sq = torch.empty(0, dtype=torch.float32, device=self.device)  # ||x||^2, fp32
        self._ids = np.zeros(0, np.int64)
        self._max_norm = 0.0
        self._max_sq = 0.0
        self._force_lowp_output = False  # tests: exercise the fallback that rounds scan output
        self.stats = {"queries": 0, "widened": 0, "exact_fallback": 0}

    # -- storage -----------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._n

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held by the stored vectors: {"device": ..., "host": ...}."""
        out = {"device": 0, "host": 0}
        for t in (self._lo, self._hi, self._sq):
            if t is not None:
                out["host" if t.device.type == "cpu" and self.device.type == "cuda" else "device"] += (
                    t.numel() * t.element_size())
        return out

    def reserve(self, n: int) -> None:
        """Pre-allocate room for ``n`` vectors so large adds do not reallocate (peak memory 1x)."""
        if n <= self._lo.shape[0]:
            return
        def grow(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
            new = torch.empty(shape, dtype=t.dtype, device=t.device,
                              pin_memory=self._pin and t.device.type == "cpu")
            new[: self._n] = t[: self._n]
            return new
        self._lo = grow(self._lo, (n, self.dim))
        if self._hi is not None:
            self._hi = grow(self._hi, (n, self.dim))
        self._sq = grow(self._sq, (n,))

    def add(self, xb: np.ndarray | torch.Tensor, ids: np.ndarray) -> None:
        """Add (n, d) float vectors (numpy, or a torch tensor already on the device) under (n,) ids."""
        if isinstance(xb, torch.Tensor):
            if xb.ndim != 2 or xb.shape[1] != self.dim or not xb.is_floating_point():
                raise InvalidInputError(f"xb tensor shape {tuple(xb.shape)} dtype {xb.dtype}; "
                                        f"expected (n, {self.dim}) floating point")
            n = xb.shape[0]
        else:
            xb = self._check(xb, "xb")
            n = len(xb)
        ids = self._check_ids(ids, n)
        if n == 0:
            return
        if self._n + n > self._lo.shape[0]:
            self.reserve(max(self._n + n, int(self._lo.shape[0] * 1.5), 1024))
        rows = max(1, (256 << 20) // (4 * self.dim))  # convert in slices: bounded scratch memory
        for r0 in range(0, n, rows):
            x = xb[r0:r0 + rows]
            x = (x if isinstance(x, torch.Tensor) else torch.from_numpy(x)).to(self.device, torch.float32)
            if not bool(torch.isfinite(x).all()):
                raise InvalidInputError("xb contains NaN or inf; only finite vectors can be searched")
            amax = float(x.abs().max())
            if amax > _MAX[self.dtype]:
                raise InvalidInputError(f"xb has |value| {amax:.3g} > {_MAX[self.dtype]:.0f}, the {self.dtype} "
                                        "range; use dtype 'bf16' or 'fp32'")
            i0, i1 = self._n + r0, self._n + r0 + len(x)
            sq = (x * x).sum(1)
            self._lo[i0:i1] = x.to(self.dtype)
            if self._hi is not None:
                self._hi[i0:i1] = x.to(self._hi_device)
            self._sq[i0:i1] = sq
            self._max_sq = max(self._max_sq, float(sq.max()))
        self._max_norm = math.sqrt(self._max_sq)
        self._ids = np.concatenate([self._ids, ids])
        self._n += n

    @property
    def _exact_vectors(self) -> torch.Tensor:
        return self._lo if self._hi is None else self._hi

    # -- search ------------------------------------------------------------------------------------
    def search(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        xq = self._check(xq, "xq")
        k = self._check_k(k)
        nq, n = len(xq), self._n
        D = np.full((nq, k), -np.inf, np.float32)
        I = np.full((nq, k), -1, np.int64)
        if nq == 0 or n == 0:
            return D, I
        kk = min(k, n)
        self.stats["queries"] += nq
        q = torch.from_numpy(xq).to(self.device)
        qb_rows = max(1, min(nq, 4096, self.workspace_bytes // (4 * min(n, 65536))))
        for b0 in range(0, nq, qb_rows):
            qb = q[b0:b0 + qb_rows]
            if self.rerank:
                s, p = self._search_exact(qb, kk)
            else:
                s, p = self._scan_topk(qb, kk)
            D[b0:b0 + len(qb), :kk] = self._to_similarity(s, qb).cpu().numpy()
            I[b0:b0 + len(qb), :kk] = self._ids[p.cpu().numpy()]
        return D, I

    def rank_all(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact fp32 (nq, ntotal) ranking: full scores in chunks, one stable sort per query."""
        xq = self._check(xq, "xq")
        nq, n = len(xq), self._n
        D = np.empty((nq, n), np.float32)
        I = np.empty((nq, n), np.int64)
        if nq == 0 or n == 0:
            return D, I
        q = torch.from_numpy(xq).to(self.device)
        # scores fp32 + sorted values fp32 + indices int64 per element
        qb_rows = max(1, min(nq, self.workspace_bytes // (16 * n)))
        for b0 in range(0, nq, qb_rows):
            qb = q[b0:b0 + qb_rows]
            s = self._exact_scores_all(qb)
            s, p = torch.sort(s, dim=1, descending=True, stable=True)
            D[b0:b0 + len(qb)] = self._to_similarity(s, qb).cpu().numpy()
            I[b0:b0 + len(qb)] = self._ids[p.cpu().numpy()]
        return D, I

    # -- internals ---------------------------------------------------------------------------------
    def _to_similarity(self, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Ranking score -> reported score: l2 ranks by 2 x.q - ||x||^2 and reports -||x - q||^2."""
        if self.metric == "ip":
            return s
        return s - (q * q).sum(1, keepdim=True)

    def _rows_per_chunk(self, nq: int, bytes_per_cell: int) -> int:
        return int(min(self._n, max(1024, self.workspace_bytes // max(1, bytes_per_cell * nq))))

    def _scan_scores(self, qlo: torch.Tensor, qscale: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
        """(b, r1 - r0) fp32 ranking scores of the low-precision scan (before any re-rank)."""
        blk = self._lo[r0:r1]
        if self.dtype == torch.float32:
            s = qlo @ blk.T
        elif self.device.type == "cuda" and not self._force_lowp_output:
            try:
                s = torch.mm(qlo, blk.T, out_dtype=torch.float32)
            except (TypeError, RuntimeError):  # torch without mm(out_dtype=): rounded fp16/bf16 output
                self._force_lowp_output = True
                with _no_reduced_precision_reduction():
                    s = torch.mm(qlo, blk.T).float()
        elif self._force_lowp_output:
            with _no_reduced_precision_reduction():
                s = torch.mm(qlo, blk.T).float()
        else:
            # CPU: half inputs, fp32 products and sums -- the same arithmetic as cuBLAS with fp32 output
            s = qlo.float() @ blk.float().T
        if self.metric == "l2":
            s.mul_((2 * qscale)[:, None]).sub_(self._sq[r0:r1])
        else:
            s.mul_(qscale[:, None])  # exact (a power of two); keeps reported scores in query units
        return s

    def _lowp_query(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cast (b, d) fp32 queries to the scan type, scaled per row by a power of two so that
        max |q_i| is in [1, 2): no fp16 overflow, no subnormals; the scale is exact and undone in fp32."""
        amax = q.abs().amax(1)
        e = torch.where(amax > 0, torch.floor(torch.log2(amax.clamp_min(1e-30))), torch.zeros_like(amax))
        scale = torch.exp2(e)
        return (q / scale[:, None]).to(self.dtype), scale

    def _scan_topk(self, q: torch.Tensor, kp: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-precision scan: (b, kp) fp32 approximate ranking scores (desc) and int64 positions."""
        qlo, scale = self._lowp_query(q)
        rows = self._rows_per_chunk(len(q), 8)  # fp32 score + topk scratch per cell
        if self.device.type == "cpu":  # the CPU path also upcasts the block to fp32
            rows = min(rows, max(1024, self.workspace_bytes // (4 * self.dim)))
        best_v = best_p = None
        for r0 in range(0, self._n, rows):
            r1 = min(self._n, r0 + rows)
            s = self._scan_scores(qlo, scale, r0, r1)
            v, p = torch.topk(s, min(kp, r1 - r0), dim=1)
            p += r0
            if best_v is not None:
                v, p = torch.cat([best_v, v], 1), torch.cat([best_p, p], 1)
                v, j = torch.topk(v, min(kp, v.shape[1]), dim=1)
                p = torch.gather(p, 1, j)
            best_v, best_p = v, p
        return best_v, best_p

    def _eps(self, q: torch.Tensor) -> torch.Tensor:
        """(b,) bound on |scan score - exact score| in ranking-score units (see module doc)."""
        d = self.dim
        if self.dtype == torch.float32:
            prec = torch.get_float32_matmul_precision()
            u = 0.0 if (prec == "highest" or self.device.type == "cpu") else (2.0 ** -11 if prec == "high" else 2.0 ** -8)
            a = 0.0
        else:
            u, a = _U[self.dtype], _A[self.dtype]
        u_out = u if (self._force_lowp_output and self.dtype != torch.float32) else 0.0
        gamma = 1.01 * d * _U32 / (1 - d * _U32)
        qn = q.norm(dim=1)
        X = self._max_norm
        eps = (2 * u + u * u + u_out * (1 + 3 * u) + 2 * gamma) * X * qn
        if a:
            scale = self._lowp_query(q)[1]
            eps = eps + a * (1 + u) * math.sqrt(d) * (qn + X * scale) + a * a * d * scale
        eps = eps * 1.01 + 4 * _U32 * self._max_sq * (self.metric == "l2")  # rounding of the comparison itself
        return eps * (2.0 if self.metric == "l2" else 1.0)

    def _rerank(self, q: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """(b, kp) exact fp32 ranking scores of candidate positions, computed from the fp32 copy."""
        b, kp = pos.shape
        out = torch.empty((b, kp), dtype=torch.float32, device=self.device)
        step = max(1, self.workspace_bytes // (8 * kp * self.dim))
        vecs = self._exact_vectors
        with _fp32_matmul_exact():
            for i0 in range(0, b, step):
                p = pos[i0:i0 + step]
                x = vecs[p.to(vecs.device)].to(self.device, torch.float32, non_blocking=True)  # (s, kp, d)
                s = torch.bmm(x, q[i0:i0 + step, :, None]).squeeze(2)
                if self.metric == "l2":
                    s = 2 * s - self._sq[p]
                out[i0:i0 + step] = s
        return out

    def _exact_scores_all(self, q: torch.Tensor) -> torch.Tensor:
        """(b, n) exact fp32 ranking scores against every stored vector, in chunks."""
        vecs = self._exact_vectors
        s = torch.empty((len(q), self._n), dtype=torch.float32, device=self.device)
        rows = max(1024, (256 << 20) // (4 * self.dim))
        with _fp32_matmul_exact():
            for r0 in range(0, self._n, rows):
                r1 = min(self._n, r0 + rows)
                blk = vecs[r0:r1].to(self.device, torch.float32, non_blocking=True)
                s[:, r0:r1] = q @ blk.T
                if self.metric == "l2":
                    s[:, r0:r1].mul_(2).sub_(self._sq[r0:r1])
        return s

    def _search_exact(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, k) exact fp32 ranking scores and positions: scan, re-rank, certify, widen."""
        b, n = len(q), self._n
        out_s = torch.empty((b, k), dtype=torch.float32, device=self.device)
        out_p = torch.empty((b, k), dtype=torch.int64, device=self.device)
        pending = torch.arange(b, device=self.device)
        kp = min(n, k + (self.margin if self.margin is not None else max(16, k)))
        eps_all = self._eps(q)
        while len(pending):
            qp = q[pending]
            # big candidate lists cost more to gather than a full exact scoring
            if kp * 2 >= n or kp * self.dim * 8 > self.workspace_bytes:
                self.stats["exact_fallback"] += len(pending)
                v, p = torch.topk(self._exact_scores_all(qp), k, dim=1)
                out_s[pending], out_p[pending] = v, p
                break
            approx, cand = self._scan_topk(qp, kp)
            exact = self._rerank(qp, cand)
            v, j = torch.sort(exact, dim=1, descending=True, stable=True)
            v, p = v[:, :k], torch.gather(cand, 1, j[:, :k])
            ok = v[:, k - 1] >= approx[:, -1] + eps_all[pending]
            done = pending[ok]
            out_s[done], out_p[done] = v[ok], p[ok]
            pending = pending[~ok]
            self.stats["widened"] += len(pending)
            kp = min(n, kp * 4)
        return out_s, out_p
