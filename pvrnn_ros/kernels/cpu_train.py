"""Fused CPU training step: the loss and its hand-derived gradients w.r.t. every trainable flat
weight and the adaptive vectors A, for a batch of N sequences with a step mask (variable
lengths). One iteration, no optimiser: torch's Adam applies the update. `free_energy` on the
autograd `posterior_forward` (pvrnn_ros.core.model) is the ground truth this is tested against.

Split (the math of `pvrnn_ros.kernels.cpu`, for all weights and a batch of sequences):
  * Numba `_forward`, per sequence and step: posterior, z, MTRNN update, prior, KL, output and
    reconstruction, with every direct gradient (those of the prior, output and KL terms, which do
    not need the recurrence). `_backward`: BPTT of dL/dh, writing dL/du_t and dL/dA per (t, n).
    Matrix-vector products on float32 (the model dtype); losses accumulate in float64.
  * Torch, after the loops: every weight gradient as one matrix product over all (t, n) rows,
    e.g. dL/dW_rec = sum_{n,t} d_{t-1}^T g_u_t = Dprev^T @ G_u (with W_p, W_q in the same product).

Backward (g_x = dL/dx, "it" = 1/tau; Kmu, Kls: direct KL gradients w.r.t. mu_q, log sigma_q):
  g_d_t = g_raw_t W_o^T + [g_u_{t+1} W_rec^T + g_p_{t+1} W_p^T (+ g_q_{t+1} W_q^T)]
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


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1): one exp
    return 1.0 - 2.0 / (math.exp(2.0 * x) + 1.0)


_C = np.float32


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _tanh32(x):
    """float32 tanh as a [13/6] rational function on [-7.9, 7.9] (the Eigen/XLA approximation,
    |error| < 3e-7): pure arithmetic, so the loops calling it vectorise (libm exp does not).
    NaN propagates."""
    v = _C(7.90531110763549805) if x > _C(7.90531110763549805) else x
    v = _C(-7.90531110763549805) if v < _C(-7.90531110763549805) else v
    x2 = v * v
    p = x2 * _C(-2.76076847742355e-16) + _C(2.00018790482477e-13)
    p = x2 * p + _C(-8.60467152213735e-11)
    p = x2 * p + _C(5.12229709037114e-08)
    p = x2 * p + _C(1.48572235717979e-05)
    p = x2 * p + _C(6.37261928875436e-04)
    p = x2 * p + _C(4.89352455891786e-03)
    q = x2 * _C(1.19825839466702e-06) + _C(1.18534705686654e-04)
    q = x2 * q + _C(2.26843463243900e-03)
    q = x2 * q + _C(4.89352518554385e-03)
    return v * p / q


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _dot(a, b):
    """sum_i a[i] b[i] (1-D, same length); reassociation allowed so the reduction vectorises."""
    acc = a[0] * b[0] * 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _forward(W_rec, W_zd, b_h, inv_tau, W_pT, b_p, has_q, W_qT, b_q, W_oT, b_o,
             amu, als, use_eps, eps, lmin, lmax, fast, first_unit, kl_w, kl_w1, z_layer, inv_zl,
             softmax, tgt, jmask, smask, offs, nbins, refs, has_data, data, inv_N,
             X, MUQ, LSQ, SQ, OKQ, KMU, KLS, R, stats):
    """Forward of every sequence from the zero state, with the loss and its direct gradients.

    Inputs batch-major [N, T, ...]; buffers time-major, laid out so that every weight gradient is
    one product X^T R over the (T+1) N rows afterwards:
      X [T+1, N, Dsum + Z]: X[t, :, :Dsum] = the d step t reads (row 0: zero state; row t+1: d_t),
        X[t, :, Dsum:] = z_t (row T: 0);
      R [T+1, N, Dsum + 4Z + O]: R[t, :, Dsum:Dsum+2Z] = dL/d(prior pre-activation at t) (set
        here), [:Dsum] and [Dsum+2Z:Dsum+4Z] by `_backward`, R[t+1, :, Dsum+4Z:] = dL/draw_t.
    MUQ, LSQ, SQ, OKQ, KMU, KLS [T, N, Z]. stats (float64): rec sum, weighted KL sum, decoded
    squared error, then per layer the unweighted KL / z_l (all summed over sequences)."""
    N, T, Z = amu.shape
    Dsum = W_rec.shape[0]
    O, d1 = W_oT.shape
    D = jmask.shape[2]
    inv_D = 1.0 / D
    dt = W_rec.dtype
    oc = Dsum + 4 * Z
    u = np.empty(Dsum, dt)
    h = np.empty(Dsum, dt)
    q = np.zeros(2 * Z, dt)
    pr = np.zeros(2 * Z, dt)
    raw = np.empty(O, dt)
    ex = np.empty(tgt.shape[3])
    for n in range(N):
        for c in range(Dsum):
            h[c] = 0.0
        X[0, n, :] = 0.0
        X[T, n, Dsum:] = 0.0
        R[0, n, oc:] = 0.0
        R[T, n, :oc] = 0.0
        for t in range(T):
            dp = X[t, n, :Dsum]
            sm = smask[n, t]
            # posterior and z
            if has_q:
                for c in range(2 * Z):
                    q[c] = b_q[c] + _dot(dp, W_qT[c])
            for i in range(Z):
                a = q[i] + amu[n, t, i] if has_q else amu[n, t, i]
                mq = _tanh32(a) if fast else _tanh(a)
                pre = q[Z + i] + als[n, t, i] if has_q else als[n, t, i]
                ok = 1.0
                if pre < lmin:
                    pre = lmin
                    ok = 0.0
                elif pre > lmax:
                    pre = lmax
                    ok = 0.0
                s = math.exp(pre)
                MUQ[t, n, i] = mq
                LSQ[t, n, i] = pre
                SQ[t, n, i] = s
                OKQ[t, n, i] = ok
                X[t, n, Dsum + i] = mq + s * eps[n, t, i] if use_eps else mq
            # MTRNN update
            for c in range(Dsum):
                u[c] = b_h[c]
            for r in range(Dsum):
                x = dp[r]
                for c in range(Dsum):
                    u[c] += x * W_rec[r, c]
            for r in range(Z):
                x = X[t, n, Dsum + r]
                for c in range(Dsum):
                    u[c] += x * W_zd[r, c]
            dn = X[t + 1, n, :Dsum]
            for c in range(Dsum):
                h[c] += inv_tau[c] * (u[c] - h[c])
            if fast:
                for c in range(Dsum):
                    dn[c] = _tanh32(h[c])
            else:
                for c in range(Dsum):
                    dn[c] = _tanh(h[c])
            # prior from d_{t-1}, KL and its direct gradients
            unit = first_unit and t == 0
            if not unit:
                for c in range(2 * Z):
                    pr[c] = b_p[c] + _dot(dp, W_pT[c])
            for i in range(Z):
                mp = 0.0
                lp = 0.0
                okp = 0.0
                w = kl_w1[i]
                if not unit:
                    mp = _tanh32(pr[i]) if fast else _tanh(pr[i])
                    lp = pr[Z + i]
                    okp = 1.0
                    if lp < lmin:
                        lp = lmin
                        okp = 0.0
                    elif lp > lmax:
                        lp = lmax
                        okp = 0.0
                    w = kl_w[i]
                mq = MUQ[t, n, i]
                sq = SQ[t, n, i]
                inv2p = math.exp(-2.0 * lp)
                dm = mq - mp
                sq2 = sq * sq
                kl = (lp - LSQ[t, n, i] + (sq2 + dm * dm) * inv2p * 0.5 - 0.5) * sm
                stats[1] += w * kl
                stats[3 + z_layer[i]] += kl * inv_zl[z_layer[i]]
                wm = w * sm * inv_N
                kmu = wm * dm * inv2p
                KMU[t, n, i] = kmu
                KLS[t, n, i] = wm * (sq2 * inv2p - 1.0)
                if unit:  # N(0, I): no prior weights involved
                    R[t, n, Dsum + i] = 0.0
                    R[t, n, Dsum + Z + i] = 0.0
                else:
                    R[t, n, Dsum + i] = -kmu * (1.0 - mp * mp)
                    R[t, n, Dsum + Z + i] = wm * (1.0 - (sq2 + dm * dm) * inv2p) * okp
            # output and reconstruction
            d1v = dn[:d1]
            for o in range(O):
                raw[o] = b_o[o] + _dot(d1v, W_oT[o])
            g_out = R[t + 1, n, oc:]
            rec = 0.0
            sqe = 0.0
            gs = sm * inv_D * inv_N
            if softmax:
                # rec_j = sum_k p_k log p_k - sum_k p_k raw_k + (sum_k p_k) logsumexp(raw_j)
                for j in range(D):
                    off = offs[j]
                    nb = nbins[j]
                    mj = jmask[n, t, j]
                    mx = raw[off]
                    for k in range(1, nb):
                        if raw[off + k] > mx:
                            mx = raw[off + k]
                    se = 0.0
                    for k in range(nb):
                        e = math.exp(raw[off + k] - mx)
                        ex[k] = e
                        se += e
                    plogp = 0.0
                    psum = 0.0
                    praw = 0.0
                    dec = 0.0
                    for k in range(nb):
                        p = tgt[n, t, j, k]
                        if p != 0.0:
                            plogp += p * (math.log(p) if p > 1e-30 else math.log(1e-30))
                        psum += p
                        praw += p * raw[off + k]
                        dec += ex[k] * refs[j, k]
                    rec += mj * (plogp - praw + psum * (mx + math.log(se)))
                    if has_data:
                        e2 = dec / se - data[n, t, j]
                        sqe += e2 * e2
                    g = mj * gs
                    for k in range(nb):
                        g_out[off + k] = g * (psum * ex[k] / se - tgt[n, t, j, k])
            else:
                for j in range(D):
                    y = _tanh32(raw[j]) if fast else _tanh(raw[j])
                    g_out[j] = 0.0
                    if jmask[n, t, j] > 0:
                        diff = y - tgt[n, t, j, 0]
                        rec += 0.5 * diff * diff
                        g_out[j] = diff * (1.0 - y * y) * gs
                    if has_data:
                        e2 = y - data[n, t, j]
                        sqe += e2 * e2
            stats[0] += rec * inv_D * sm
            stats[2] += sqe * sm


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _backward(W_recT, W_zd, inv_tau, W_pT, has_q, W_qT, W_oT, use_eps, eps, X, MUQ, SQ, OKQ, KMU, KLS, R):
    """BPTT of every sequence from the buffers `_forward` filled. Writes R[t, n] columns [0, Dsum):
    dL/du_t (1/tau included, so dL/dW_rec = sum_t d_{t-1}^T g_u_t), [Dsum + 2Z, Dsum + 4Z):
    dL/d(posterior pre-activations) = dL/d[A_mu | A_ls] at t."""
    T, N, Z = MUQ.shape
    Dsum = W_recT.shape[0]
    O, d1 = W_oT.shape
    dt = W_recT.dtype
    gd = np.empty(Dsum, dt)
    gcarry = np.empty(Dsum, dt)
    oq = Dsum + 2 * Z
    oc = Dsum + 4 * Z
    for n in range(N):
        for c in range(Dsum):
            gd[c] = 0.0
            gcarry[c] = 0.0
        for t in range(T - 1, -1, -1):
            dn = X[t + 1, n, :Dsum]
            g_out = R[t + 1, n, oc:]
            for o in range(O):
                g = g_out[o]
                if g != 0.0:
                    for r in range(d1):
                        gd[r] += g * W_oT[o, r]
            Gt = R[t, n]
            for c in range(Dsum):
                gh = gd[c] * (1.0 - dn[c] * dn[c]) + gcarry[c]
                gu = gh * inv_tau[c]
                Gt[c] = gu
                gcarry[c] = gh - gu
            gu = Gt[:Dsum]
            for i in range(Z):
                gz = _dot(gu, W_zd[i])
                mq = MUQ[t, n, i]
                gls = KLS[t, n, i]
                if use_eps:
                    gls += gz * eps[n, t, i] * SQ[t, n, i]
                Gt[oq + i] = (gz + KMU[t, n, i]) * (1.0 - mq * mq)
                Gt[oq + Z + i] = gls * OKQ[t, n, i]
            if t == 0:
                break
            for r in range(Dsum):
                gd[r] = 0.0
            for c in range(Dsum):
                g = gu[c]
                for r in range(Dsum):
                    gd[r] += g * W_recT[c, r]
            for c in range(2 * Z):
                g = Gt[Dsum + c]
                if g != 0.0:
                    for r in range(Dsum):
                        gd[r] += g * W_pT[c, r]
            if has_q:
                for c in range(2 * Z):
                    g = Gt[oq + c]
                    for r in range(Dsum):
                        gd[r] += g * W_qT[c, r]


# ------------------------------------------------------------------------------------------------
class TrainTerms(NamedTuple):
    total: float  # mean over sequences of the summed negative ELBO (what the optimiser minimises)
    rec: float  # summed reconstruction term, mean over sequences
    kl_by_layer: torch.Tensor  # [L] summed unweighted KL / z_l, mean over sequences
    sq_err: float  # sum over (n, t, j) of step-masked (decoded output - data)^2 (0 without data)


class TrainGrads(NamedTuple):
    """dL/d(FlatWeights field) for the trainable fields (W_q, b_q None for posterior "A") and dL/dA."""

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


FIELDS = ("W_rec", "W_zd", "b_h", "W_p", "b_p", "W_q", "b_q", "W_o", "b_o")


class _Consts:
    """Coding and layer constants as numpy arrays."""

    def __init__(self, model):
        coding = model.coding
        self.softmax = coding.kind == "softmax"
        if self.softmax:
            self.offs = coding.index[:, 0].cpu().numpy().astype(np.int64)
            self.nbins = np.asarray(coding.bins, dtype=np.int64)
            self.refs = coding.refs.cpu().numpy().astype(np.float64)
        else:
            self.offs = np.zeros(coding.n_joints, dtype=np.int64)
            self.nbins = np.ones(coding.n_joints, dtype=np.int64)
            self.refs = np.zeros((coding.n_joints, 1))
        self.z_layer = model.z_layer.cpu().numpy().astype(np.int64)
        self.inv_zl = 1.0 / np.asarray(model.z_sizes, dtype=np.float64)


def _consts(model) -> _Consts:
    hit = model.__dict__.get("_cpu_train_consts")
    if hit is None:
        hit = model.__dict__["_cpu_train_consts"] = _Consts(model)
    return hit


@torch.no_grad()
def loss_and_grads(model, fw: FlatWeights, a_mu: torch.Tensor, a_ls: torch.Tensor, eps: torch.Tensor | None,
                   target: torch.Tensor, joint_mask: torch.Tensor, step_mask: torch.Tensor,
                   kl_w: torch.Tensor, kl_w1: torch.Tensor, data: torch.Tensor | None = None,
                   first_is_unit_prior: bool = True) -> tuple[TrainTerms, TrainGrads]:
    """`free_energy(model, model.posterior_forward(a_mu, a_ls, eps, fw=fw), target, joint_mask,
    step_mask, kl_w, kl_w1, first_is_unit_prior).total` and its gradients w.r.t. the trainable
    fields of `fw` and A, from the zero state.

    a_mu, a_ls, eps (None: z = mu_q): [N, T, Z]; target [N, T, D] (or coded [N, T, D, K]);
    joint_mask [N, T, D]; step_mask [N, T]; `data` (normalised [N, T, D]) adds the decoded-output
    squared error to the terms. CPU tensors; computed in the dtype of fw.W_rec (float32: the
    hidden-state tanh is a rational approximation, |error| < 3e-7; losses accumulate in float64)."""
    dtype = fw.W_rec.dtype
    N, T, Z = a_mu.shape
    Dsum = fw.W_rec.shape[0]
    d1, O = fw.W_o.shape
    has_q = fw.W_q is not None
    K = _consts(model)

    def c(x):
        return x.detach().to(dtype).contiguous()

    def n_(x):
        return c(x).numpy()

    W_rec = c(fw.W_rec)
    W_recT, W_pT, W_oT = n_(fw.W_rec.t()), n_(fw.W_p.t()), n_(fw.W_o.t())
    npdt = W_recT.dtype
    if has_q:
        W_qT, b_q = n_(fw.W_q.t()), n_(fw.b_q)
    else:
        W_qT, b_q = np.zeros((2 * Z, Dsum), npdt), np.zeros(2 * Z, npdt)
    use_eps = eps is not None
    ep = n_(eps) if use_eps else np.zeros((1, 1, 1), npdt)
    tgt = target.detach().to(dtype)
    tgt = (tgt if K.softmax else tgt.unsqueeze(-1)).contiguous().numpy()
    has_data = data is not None
    dat = n_(data) if has_data else np.zeros((1, 1, 1), npdt)
    inv_tau = n_(fw.inv_tau)
    W_zd = n_(fw.W_zd)
    inv_N = 1.0 / N

    oq, oc = Dsum + 2 * Z, Dsum + 4 * Z
    X = torch.empty(T + 1, N, Dsum + Z, dtype=dtype)
    R = torch.empty(T + 1, N, oc + O, dtype=dtype)
    MUQ, LSQ, SQ, OKQ, KMU, KLS = (np.empty((T, N, Z), npdt) for _ in range(6))
    stats = np.zeros(3 + len(model.z_sizes))
    Xn, Rn = X.numpy(), R.numpy()
    _forward(W_rec.numpy(), W_zd, n_(fw.b_h), inv_tau, W_pT, n_(fw.b_p), has_q, W_qT, b_q,
             W_oT, n_(fw.b_o), n_(a_mu), n_(a_ls), use_eps, ep,
             float(model.cfg.logsigma_min), float(model.cfg.logsigma_max), dtype == torch.float32,
             bool(first_is_unit_prior), n_(kl_w), n_(kl_w1), K.z_layer, K.inv_zl,
             K.softmax, tgt, n_(joint_mask), n_(step_mask), K.offs, K.nbins, K.refs, has_data, dat, inv_N,
             Xn, MUQ, LSQ, SQ, OKQ, KMU, KLS, Rn, stats)
    _backward(W_recT, W_zd, inv_tau, W_pT, has_q, W_qT, W_oT, use_eps, ep, Xn, MUQ, SQ, OKQ, KMU, KLS, Rn)

    # every weight gradient in one product over the (T+1) N rows, the biases as column sums
    Rf = R.view(-1, oc + O)
    M = X.view(-1, Dsum + Z).t() @ Rf  # [Dsum + Z, Dsum + 4Z + O]
    gb = Rf.sum(0)
    g_a = R[:T, :, oq:oc].transpose(0, 1)  # [N, T, 2Z]
    grads = TrainGrads(M[:Dsum, :Dsum], M[Dsum:, :Dsum], gb[:Dsum], M[:Dsum, Dsum:oq], gb[Dsum:oq],
                       M[:Dsum, oq:oc] if has_q else None, gb[oq:oc] if has_q else None,
                       M[:d1, oc:], gb[oc:], g_a[..., :Z].contiguous(), g_a[..., Z:].contiguous())
    terms = TrainTerms(float((stats[0] + stats[1]) * inv_N), float(stats[0] * inv_N),
                       torch.from_numpy(stats[3:] * inv_N).float(), float(stats[2]))
    return terms, grads


def flat_grads(grads: TrainGrads) -> list[tuple[str, torch.Tensor]]:
    """(FlatWeights field name, gradient) for every trainable field present."""
    return [(n, getattr(grads, n)) for n in FIELDS if getattr(grads, n) is not None]


def warmup() -> float:
    """Compile (or load from numba's on-disk cache) every specialisation training uses (float32 and
    float64, both codings, both posterior forms, with and without noise); returns seconds."""
    import time

    from pvrnn_ros.core.config import LayerConfig, ModelConfig
    from pvrnn_ros.core.model import PVRNN

    t0 = time.perf_counter()
    for dtype in (torch.float32, torch.float64):
        for output in ("tanh", "softmax"):
            for posterior in ("A", "d+A"):
                model = PVRNN(ModelConfig(layers=[LayerConfig(d=3, z=1)], output=output, softmax_bins=3,
                                          posterior=posterior), 2).to(dtype)
                a = torch.zeros(1, 2, 1, dtype=dtype)
                x = torch.zeros(1, 2, 2, dtype=dtype)
                for e in (a, None):
                    loss_and_grads(model, model.flat(), a, a, e, model.coding.target(x), torch.ones_like(x),
                                   torch.ones(1, 2, dtype=dtype), model.kl_w, model.kl_w1, data=x)
    return time.perf_counter() - t0
