"""Fused CPU training step: loss and hand-derived gradients w.r.t. every trainable flat weight
and the adaptive vectors A, for a batch of N sequences with a step mask (one iteration, no
optimiser: torch's Adam applies the update). `pvrnn_ros.core.model.free_energy` on the autograd
`posterior_forward` is the ground truth this is tested against.

Split (same math as `pvrnn_ros.kernels.cpu`, batched over sequences):
  * Numba, per sequence, the two recurrent loops only: the forward of the posterior and the
    MTRNN update (d_t, z_t, mu_q, sigma_q), and the backward through time of dL/dh (g_u) and
    dL/d(posterior pre-activations) (g_q). Matrix-vector products, activations in the model dtype.
  * Torch, over all (n, t) at once: the prior, the KL, the output and reconstruction terms and
    their direct gradients (they do not feed the recurrence), then every weight gradient as one
    matrix product over all (n, t), e.g. dL/dW_rec = sum_{n,t} d_{t-1}^T g_u_t = Dprev^T @ G_u.

Backward (g_x = dL/dx, "it" = 1/tau, direct terms precomputed in torch):
  g_d_t = Gdir_t + g_u_{t+1} W_rec^T (+ g_q_{t+1} W_q^T),  Gdir_t = g_raw_t W_o^T + g_prior_{t+1} W_p^T
  g_h_t = g_d_t (1 - d_t^2) + g_h_{t+1} (1 - it),  g_u_t = it g_h_t,  g_z_t = g_u_t W_zd^T
  g_qmu_t = (g_z_t + Kmu_t) (1 - mu_q^2),  g_qls_t = (g_z_t eps s_q + Kls_t) [lmin <= pre <= lmax]
  (g_q is also dL/dA: A enters the posterior pre-activations additively.)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from numba import njit

from pvrnn_ros.core.model import FlatWeights

_FM = {"contract"}  # allow FMA contraction only (no reassociation): results stay deterministic


@njit(cache=True, fastmath=_FM, inline="always")
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1): one exp
    return 1.0 - 2.0 / (math.exp(2.0 * x) + 1.0)


@njit(cache=True, fastmath=_FM)
def _forward(W_rec, W_zd, b_h, inv_tau, has_q, W_q, b_q, amu, als, use_eps, eps, lmin, lmax,
             Dd, ZS, MUQ, LSQ, SQ, OKQ):
    """Posterior + MTRNN recurrence for every sequence from the zero state.
    Dd [N, T+1, Dsum]: row 0 = d_0 = 0, row t+1 = d_t.  ZS, MUQ, LSQ, SQ, OKQ: [N, T, Z]."""
    N, T, Z = amu.shape
    Dsum = W_rec.shape[0]
    dt = W_rec.dtype
    u = np.empty(Dsum, dt)
    h = np.empty(Dsum, dt)
    q = np.zeros(2 * Z, dt)
    for n in range(N):
        for c in range(Dsum):
            h[c] = 0.0
            Dd[n, 0, c] = 0.0
        for t in range(T):
            dp = Dd[n, t]
            if has_q:
                for c in range(2 * Z):
                    q[c] = b_q[c]
                for r in range(Dsum):
                    x = dp[r]
                    for c in range(2 * Z):
                        q[c] += x * W_q[r, c]
            for i in range(Z):
                mq = _tanh(q[i] + amu[n, t, i]) if has_q else _tanh(amu[n, t, i])
                pre = q[Z + i] + als[n, t, i] if has_q else als[n, t, i]
                if pre < lmin:
                    ls = lmin
                    ok = 0.0
                elif pre > lmax:
                    ls = lmax
                    ok = 0.0
                else:
                    ls = pre
                    ok = 1.0
                s = math.exp(ls)
                MUQ[n, t, i] = mq
                LSQ[n, t, i] = ls
                SQ[n, t, i] = s
                OKQ[n, t, i] = ok
                ZS[n, t, i] = mq + s * eps[n, t, i] if use_eps else mq
            for c in range(Dsum):
                u[c] = b_h[c]
            for r in range(Dsum):
                x = dp[r]
                for c in range(Dsum):
                    u[c] += x * W_rec[r, c]
            for r in range(Z):
                x = ZS[n, t, r]
                for c in range(Dsum):
                    u[c] += x * W_zd[r, c]
            dn = Dd[n, t + 1]
            for c in range(Dsum):
                hv = h[c] + inv_tau[c] * (u[c] - h[c])
                h[c] = hv
                dn[c] = _tanh(hv)


@njit(cache=True, fastmath=_FM)
def _backward(W_recT, W_zd, inv_tau, has_q, W_qT, use_eps, eps, Dd, MUQ, SQ, OKQ, KMU, KLS, GDIR, GU, GQ):
    """BPTT of the recurrence. GDIR [N, T, Dsum] direct dL/dd_t; KMU, KLS [N, T, Z] direct dL/dmu_q,
    dL/dls_q. Writes GU [N, T, Dsum] (dL/du_t incl. 1/tau) and GQ [N, T, 2Z] (dL/d posterior pre-act)."""
    N, T, Z = MUQ.shape
    Dsum = W_recT.shape[0]
    dt = W_recT.dtype
    gd = np.empty(Dsum, dt)
    gcarry = np.empty(Dsum, dt)
    for n in range(N):
        for c in range(Dsum):
            gd[c] = 0.0
            gcarry[c] = 0.0
        for t in range(T - 1, -1, -1):
            dn = Dd[n, t + 1]
            gdir = GDIR[n, t]
            gu = GU[n, t]
            for c in range(Dsum):
                gh = (gd[c] + gdir[c]) * (1.0 - dn[c] * dn[c]) + gcarry[c]
                gu[c] = gh * inv_tau[c]
                gcarry[c] = gh - gu[c]
            for i in range(Z):
                gz = 0.0
                for c in range(Dsum):
                    gz += gu[c] * W_zd[i, c]
                mq = MUQ[n, t, i]
                gmu = gz + KMU[n, t, i]
                gls = KLS[n, t, i]
                if use_eps:
                    gls += gz * eps[n, t, i] * SQ[n, t, i]
                GQ[n, t, i] = gmu * (1.0 - mq * mq)
                GQ[n, t, Z + i] = gls * OKQ[n, t, i]
            if t == 0:
                break
            for r in range(Dsum):
                gd[r] = 0.0
            for c in range(Dsum):
                g = gu[c]
                if g != 0.0:
                    for r in range(Dsum):
                        gd[r] += g * W_recT[c, r]
            if has_q:
                for c in range(2 * Z):
                    g = GQ[n, t, c]
                    for r in range(Dsum):
                        gd[r] += g * W_qT[c, r]


# ------------------------------------------------------------------------------------------------
class TrainTerms(NamedTuple):
    total: float  # mean over sequences of the summed negative ELBO (what the optimiser minimises)
    rec: float  # summed reconstruction term, mean over sequences
    kl_by_layer: torch.Tensor  # [L] summed unweighted KL / z_l, mean over sequences
    sq_err: float  # sum over (n, t, j) of step-masked (decoded output - data)^2 (0 if data is None)
    steps: float  # number of valid steps (step_mask sum)


class TrainGrads(NamedTuple):
    W_rec: torch.Tensor
    W_zd: torch.Tensor
    b_h: torch.Tensor
    W_p: torch.Tensor
    b_p: torch.Tensor
    W_q: torch.Tensor | None
    b_q: torch.Tensor | None
    W_o: torch.Tensor
    b_o: torch.Tensor
    a_mu: torch.Tensor  # [N, T, Z]
    a_ls: torch.Tensor


def _n(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


@torch.no_grad()
def loss_and_grads(model, fw: FlatWeights, a_mu: torch.Tensor, a_ls: torch.Tensor, eps: torch.Tensor | None,
                   target: torch.Tensor, joint_mask: torch.Tensor, step_mask: torch.Tensor,
                   kl_w: torch.Tensor, kl_w1: torch.Tensor, data: torch.Tensor | None = None,
                   first_is_unit_prior: bool = True) -> tuple[TrainTerms, TrainGrads]:
    """`free_energy(model, model.posterior_forward(a_mu, a_ls, eps, fw=fw), target, joint_mask,
    step_mask, kl_w, kl_w1).total` and its gradients w.r.t. the trainable fields of `fw` and A,
    from the zero state. a_mu, a_ls, eps: [N, T, Z]; target [N, T, D] (or coded [N, T, D, K]);
    joint_mask [N, T, D]; step_mask [N, T]. `data` (normalised [N, T, D]) adds the decoded-output
    squared error to the terms. CPU tensors; computed in the dtype of fw.W_rec."""
    dtype = fw.W_rec.dtype
    N, T, Z = a_mu.shape
    Dsum = fw.W_rec.shape[0]
    d1, O = fw.W_o.shape
    has_q = fw.W_q is not None

    def c(x):
        return x.detach().to(dtype).contiguous()

    W_rec, W_zd, b_h, inv_tau = c(fw.W_rec), c(fw.W_zd), c(fw.b_h), c(fw.inv_tau)
    W_p, b_p, W_o, b_o = c(fw.W_p), c(fw.b_p), c(fw.W_o), c(fw.b_o)
    if has_q:
        W_q, b_q = c(fw.W_q), c(fw.b_q)
    else:
        W_q, b_q = W_p.new_zeros(1, 1), W_p.new_zeros(1)
    amu, als = c(a_mu), c(a_ls)
    use_eps = eps is not None
    ep = c(eps) if use_eps else amu.new_zeros(1, 1, 1)
    lmin, lmax = float(model.cfg.logsigma_min), float(model.cfg.logsigma_max)

    # ---- forward recurrence (numba) ----------------------------------------------------------
    Dd = torch.empty(N, T + 1, Dsum, dtype=dtype)
    ZS, MUQ, LSQ, SQ, OKQ = (torch.empty(N, T, Z, dtype=dtype) for _ in range(5))
    _forward(_n(W_rec), _n(W_zd), _n(b_h), _n(inv_tau), has_q, _n(W_q), _n(b_q), _n(amu), _n(als),
             use_eps, _n(ep), lmin, lmax, _n(Dd), _n(ZS), _n(MUQ), _n(LSQ), _n(SQ), _n(OKQ))
    D_all = Dd[:, 1:]  # d_t      [N, T, Dsum]
    D_prev = Dd[:, :T]  # d_{t-1}

    sm = c(step_mask)
    inv_N = 1.0 / N
    coding = model.coding
    # ---- output and reconstruction ---------------------------------------------------------------
    raw = D_all[..., :d1] @ W_o + b_o  # [N, T, O]
    jm = c(joint_mask)
    Dj = coding.n_joints
    if coding.kind == "tanh":
        y = torch.tanh(raw)
        diff = torch.where(jm > 0, y - c(target), torch.zeros_like(raw))
        rec = 0.5 * (diff * diff).sum(-1) / Dj * sm  # [N, T]
        G_raw = diff * (1.0 - y * y) * (sm * (inv_N / Dj)).unsqueeze(-1)
        decoded = y
    else:
        tg = c(target)  # [N, T, D, K]
        logq = coding._grouped_log_softmax(raw)
        q = logq.exp()
        valid = coding.valid
        logp = torch.log(tg.clamp_min(1e-30))
        per_joint = torch.where(valid, tg * (logp - logq), torch.zeros_like(logq)).sum(-1)
        rec = (per_joint * jm).sum(-1) / Dj * sm
        scale = (jm * (sm * (inv_N / Dj)).unsqueeze(-1)).unsqueeze(-1)  # [N, T, D, 1]
        g_grouped = (tg.sum(-1, keepdim=True) * q - tg) * scale
        G_raw = g_grouped.reshape(N, T, -1)[..., _inverse_index(coding)]
        decoded = (q * coding.refs.to(dtype)).sum(-1)

    # ---- prior and KL ----------------------------------------------------------------------
    prior = D_prev @ W_p + b_p  # [N, T, 2Z]
    mu_p = torch.tanh(prior[..., :Z])
    ls_pre = prior[..., Z:]
    ls_p = ls_pre.clamp(lmin, lmax)
    okp = ((ls_pre >= lmin) & (ls_pre <= lmax)).to(dtype)
    w = c(kl_w).expand(T, Z).clone()
    if first_is_unit_prior:
        mu_p[:, 0] = 0.0
        ls_p[:, 0] = 0.0
        okp[:, 0] = 0.0
        w[0] = c(kl_w1)
    inv2p = torch.exp(-2.0 * ls_p)
    dm = MUQ - mu_p
    sq2 = SQ * SQ
    kl = (ls_p - LSQ + (sq2 + dm * dm) * inv2p * 0.5 - 0.5) * sm.unsqueeze(-1)  # [N, T, Z] unweighted
    wm = w * (sm * inv_N).unsqueeze(-1)  # [N, T, Z]
    KMU = wm * dm * inv2p
    KLS = wm * (sq2 * inv2p - 1.0)
    G_p = torch.cat([-KMU * (1.0 - mu_p * mu_p), wm * (1.0 - (sq2 + dm * dm) * inv2p) * okp], dim=-1)
    if first_is_unit_prior:
        G_p[:, 0] = 0.0  # N(0, I) at t = 1: no prior weights involved

    # ---- direct dL/dd_t: output at t, prior at t + 1 -------------------------------------------
    GDIR = torch.zeros(N, T, Dsum, dtype=dtype)
    GDIR[..., :d1] = G_raw @ W_o.t()
    if T > 1:
        GDIR[:, :-1] += G_p[:, 1:] @ W_p.t()

    # ---- backward recurrence (numba) -----------------------------------------------------------
    GU = torch.empty(N, T, Dsum, dtype=dtype)
    GQ = torch.empty(N, T, 2 * Z, dtype=dtype)
    _backward(_n(W_rec.t().contiguous()), _n(W_zd), _n(inv_tau), has_q, _n(W_q.t().contiguous()),
              use_eps, _n(ep), _n(Dd), _n(MUQ), _n(SQ), _n(OKQ), _n(KMU), _n(KLS), _n(GDIR), _n(GU), _n(GQ))

    # ---- weight gradients: one product over all (n, t) ---------------------------------------
    Dp = D_prev.reshape(N * T, Dsum)
    G_rhs = [GU.reshape(N * T, Dsum), G_p.reshape(N * T, 2 * Z)] + ([GQ.reshape(N * T, 2 * Z)] if has_q else [])
    G_cat = torch.cat(G_rhs, dim=1)
    gW = Dp.t() @ G_cat
    gb = G_cat.sum(0)
    gW_rec, gW_p = gW[:, :Dsum], gW[:, Dsum:Dsum + 2 * Z]
    gb_h, gb_p = gb[:Dsum], gb[Dsum:Dsum + 2 * Z]
    gW_q = gW[:, Dsum + 2 * Z:] if has_q else None
    gb_q = gb[Dsum + 2 * Z:] if has_q else None
    gW_zd = ZS.reshape(N * T, Z).t() @ G_cat[:, :Dsum]
    gW_o = D_all[..., :d1].reshape(N * T, d1).t() @ G_raw.reshape(N * T, O)
    gb_o = G_raw.reshape(N * T, O).sum(0)

    # ---- reported terms --------------------------------------------------------------------
    kl_sum = (kl * w).double().sum()
    rec_sum = rec.double().sum()
    L = len(model.z_sizes)
    kl_layer = torch.zeros(L, dtype=torch.float64).index_add_(0, model.z_layer.cpu(), kl.double().sum((0, 1)))
    kl_layer = kl_layer / torch.tensor(model.z_sizes, dtype=torch.float64) * inv_N
    sq_err = 0.0
    if data is not None:
        sq_err = float((((decoded - c(data)) ** 2) * sm.unsqueeze(-1)).double().sum())
    terms = TrainTerms(float((rec_sum + kl_sum) * inv_N), float(rec_sum * inv_N), kl_layer.float(),
                       sq_err, float(sm.double().sum()))
    grads = TrainGrads(gW_rec, gW_zd, gb_h, gW_p, gb_p, gW_q, gb_q, gW_o, gb_o,
                       GQ[..., :Z], GQ[..., Z:])
    return terms, grads


_INV_CACHE: dict[int, tuple[object, torch.Tensor]] = {}


def _inverse_index(coding) -> torch.Tensor:
    """For each softmax output unit o, its position in the flattened grouped [D * Kmax] layout."""
    hit = _INV_CACHE.get(id(coding))
    if hit is not None and hit[0] is coding:
        return hit[1]
    index = coding.index.cpu()
    D, K = index.shape
    inv = torch.empty(coding.out_dim, dtype=torch.long)
    for j in range(D):
        for k in range(K):
            o = int(index[j, k])
            if o < coding.out_dim:
                inv[o] = j * K + k
    _INV_CACHE[id(coding)] = (coding, inv)
    return inv


def flat_grads(grads: TrainGrads) -> list[tuple[str, torch.Tensor]]:
    """(FlatWeights field name, gradient) for every trainable field present."""
    names = ("W_rec", "W_zd", "b_h", "W_p", "b_p", "W_q", "b_q", "W_o", "b_o")
    return [(n, getattr(grads, n)) for n in names if getattr(grads, n) is not None]


def warmup() -> None:
    """Compile (or load from the on-disk cache) the kernels for float32 and float64."""
    for dt in (np.float32, np.float64):
        Dsum, Z, N, T = 3, 1, 1, 2
        W = np.zeros((Dsum, Dsum), dt)
        zz = np.zeros((N, T, Z), dt)
        Dd = np.zeros((N, T + 1, Dsum), dt)
        vec = np.zeros(Dsum, dt)
        Wq = np.zeros((Dsum, 2 * Z), dt)
        _forward(W, np.zeros((Z, Dsum), dt), vec, vec, True, Wq, np.zeros(2 * Z, dt), zz, zz, True, zz,
                 -1.0, 1.0, Dd, zz.copy(), zz.copy(), zz.copy(), zz.copy(), zz.copy())
        _backward(W, np.zeros((Z, Dsum), dt), vec, True, Wq.T.copy(), True, zz, Dd, zz, zz, zz, zz, zz,
                  np.zeros((N, T, Dsum), dt), np.zeros((N, T, Dsum), dt), np.zeros((N, T, 2 * Z), dt))
