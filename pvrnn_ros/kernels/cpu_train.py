"""Fused CPU training step: the loss and its hand-derived gradients w.r.t. every trainable flat
weight and the adaptive vectors A, for a batch of N sequences with a step mask (variable
lengths). One iteration, no optimiser (`CpuAdam` below applies torch's Adam update).
`free_energy` on the autograd `posterior_forward` (pvrnn_ros.core.model) is the ground truth this
is tested against.

Split (the math of `pvrnn_ros.kernels.cpu`, for all weights and a batch of sequences; float32,
losses summed in float64):
  * Numba `_recur`, four sequences at a time: the recurrence (d_{t-1} [W_rec | W_q] as one
    register-blocked matrix-vector product over the four, posterior for "d+A", the hidden tanh as
    a vectorisable rational approximation). Posterior "A" and the prior's nonlinearities are
    elementwise over all (t, n) (`_posterior_act`, `_prior_act`); `_loss` computes the KL and
    reconstruction terms and every direct gradient (prior, output, KL: no recurrence needed).
  * `_brecur`: BPTT of dL/du_t and dL/dA, four sequences at a time; the direct dL/dd_t (prior at
    t+1, output at t) rides in the recurrent matrix-vector product ([W_rec^T ; W_p^T ; W_o^T]).
  * BLAS over all (t, n) rows (the prior and output pre-activations come out of `_recur`'s
    product): every weight gradient in one product X^T R with
    X = [d_{t-1} | z_t] and R = [g_u_t | g_prior_t | g_raw_{t-1} | g_A_t] (see `_run`).
  * `threads` > 1: contiguous parts of the sequences run all of the above on their own threads
    (the kernels release the GIL); the per-part products and sums are added.

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
from . import _kernel_cache  # noqa: F401  (before any cached kernel: one stamp for all kernel sources)
from numba import njit

from pvrnn_ros.core.model import FlatWeights

from .cpu import _mva as _matvec_acc  # one blocked x @ W kernel for ER and training
from .cpu import _dot, _tanh32, one_class_dims  # shared with the ER kernel

_FM = {"contract"}  # allow FMA contraction only (no reassociation): results stay deterministic


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1): one exp
    return 1.0 - 2.0 / (math.exp(2.0 * x) + 1.0)



@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _posterior_unit(a, pre, e, use_eps, lmin, lmax, fast):
    """(mu_q, clamped log sigma_q, sigma_q, clamp-gradient mask, z) of one unit."""
    mq = _tanh32(a) if fast else _tanh(a)
    # the clamp is written out here and in the two loops below: calling cpu._clamp_ok instead
    # measured ~2x slower for those loops (86 vs 46 us per epoch-sized pass)
    ok = 1.0
    if pre < lmin:
        pre = lmin
        ok = 0.0
    elif pre > lmax:
        pre = lmax
        ok = 0.0
    s = math.exp(pre)
    z = mq + s * e if use_eps else mq
    return mq, pre, s, ok, z


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _posterior_act(amu, als, lmin, lmax, fast, MUQ, LSQ, OKQ):
    """Posterior "A" without the exp: mu_q = tanh(A_mu), clamped log sigma and its gradient mask,
    from batch-major [N, T, Z] into time-major [T, N, Z]."""
    N, T, Z = amu.shape
    for t in range(T):
        for n in range(N):
            for i in range(Z):
                a = amu[n, t, i]
                MUQ[t, n, i] = _tanh32(a) if fast else _tanh(a)
                pre = als[n, t, i]
                ok = 1.0
                if pre < lmin:
                    pre = lmin
                    ok = 0.0
                elif pre > lmax:
                    pre = lmax
                    ok = 0.0
                LSQ[t, n, i] = pre
                OKQ[t, n, i] = ok


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _posterior_z(MUQ, SQ, use_eps, eps, X, Dsum):
    """z_t = mu_q + sigma eps (posterior "A") into X[t, n, Dsum:Dsum+Z]."""
    T, N, Z = MUQ.shape
    for t in range(T):
        for n in range(N):
            for i in range(Z):
                X[t, n, Dsum + i] = MUQ[t, n, i] + SQ[t, n, i] * eps[n, t, i] if use_eps else MUQ[t, n, i]


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _prior_act(P, b_p, lmin, lmax, fast, first_unit, MP, LP, OKP):
    """Prior from its pre-activations P + b_p (P [T, N, 2Z]): mu_p = tanh, clamped log sigma, and the
    gradient masks OKP [T, N, 2Z] (0 for the unit prior at t = 0 and where the clamp is active)."""
    T, N, Z2 = P.shape
    Z = Z2 // 2
    for t in range(T):
        unit = first_unit and t == 0
        for n in range(N):
            for i in range(Z):
                if unit:
                    MP[t, n, i] = 0.0
                    LP[t, n, i] = 0.0
                    OKP[t, n, i] = 0.0
                    OKP[t, n, Z + i] = 0.0
                    continue
                a = P[t, n, i] + b_p[i]
                MP[t, n, i] = _tanh32(a) if fast else _tanh(a)
                pre = P[t, n, Z + i] + b_p[Z + i]
                ok = 1.0
                if pre < lmin:
                    pre = lmin
                    ok = 0.0
                elif pre > lmax:
                    pre = lmax
                    ok = 0.0
                LP[t, n, i] = pre
                OKP[t, n, i] = 1.0
                OKP[t, n, Z + i] = ok


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _mv4(V, x0, x1, x2, x3, W, n):
    """V[k, :] += x_k[:n] @ W[:n] for four vectors at once: each pass over two rows of W feeds
    eight FMAs per loaded W element pair (the recurrences' matrix-vector products, batched over
    four sequences)."""
    nc = W.shape[1]
    v0 = V[0]
    v1 = V[1]
    v2 = V[2]
    v3 = V[3]
    r = 0
    while r + 2 <= n:
        w0 = W[r]
        w1 = W[r + 1]
        a0 = x0[r]
        a1 = x0[r + 1]
        b0 = x1[r]
        b1 = x1[r + 1]
        c0 = x2[r]
        c1 = x2[r + 1]
        e0 = x3[r]
        e1 = x3[r + 1]
        for c in range(nc):
            y0 = w0[c]
            y1 = w1[c]
            v0[c] += a0 * y0 + a1 * y1
            v1[c] += b0 * y0 + b1 * y1
            v2[c] += c0 * y0 + c1 * y1
            v3[c] += e0 * y0 + e1 * y1
        r += 2
    if r < n:
        w0 = W[r]
        a0 = x0[r]
        b0 = x1[r]
        c0 = x2[r]
        e0 = x3[r]
        for c in range(nc):
            y0 = w0[c]
            v0[c] += a0 * y0
            v1[c] += b0 * y0
            v2[c] += c0 * y0
            v3[c] += e0 * y0


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _mv2(V, x0, x1, W, n):
    """As `_mv4` for two vectors (a block's last one or two sequences: half the work of `_mv4`)."""
    nc = W.shape[1]
    v0 = V[0]
    v1 = V[1]
    r = 0
    while r + 2 <= n:
        w0 = W[r]
        w1 = W[r + 1]
        a0 = x0[r]
        a1 = x0[r + 1]
        b0 = x1[r]
        b1 = x1[r + 1]
        for c in range(nc):
            y0 = w0[c]
            y1 = w1[c]
            v0[c] += a0 * y0 + a1 * y1
            v1[c] += b0 * y0 + b1 * y1
        r += 2
    if r < n:
        w0 = W[r]
        a0 = x0[r]
        b0 = x1[r]
        for c in range(nc):
            y0 = w0[c]
            v0[c] += a0 * y0
            v1[c] += b0 * y0


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _recur(W_rqz, W_zd, b_h, b_q, inv_tau, has_q, amu, als, use_eps, eps, lmin, lmax, fast,
           X, MUQ, LSQ, SQ, OKQ, PO):
    """The forward recurrence of every sequence from the zero state, four sequences at a time.
    W_rqz = [W_rec | W_q | W_po ; W_zd | 0 | 0] (one matrix-vector product gives u, the posterior
    pre-activations and PO[t] = d_{t-1} W_po, i.e. the prior pre-activations at t and the output
    raw_{t-1}, bias-free; for posterior "A" it takes [d_{t-1} | z_t], z_t being known beforehand).
    Posterior "A": z_t is precomputed in X[t, :, Dsum:Dsum+Z]; "d+A": the posterior is computed
    here. X [T+1, N, >= Dsum + Z]: X[t, :, :Dsum] = the d step t reads (row 0: zero state),
    X[t, :, Dsum:Dsum+Z] = z_t (row T: 0)."""
    N, T, Z = amu.shape
    Dsum = W_zd.shape[1]
    PW = PO.shape[2]
    Wc = Dsum + (2 * Z if has_q else 0)  # (W_rqz's columns beyond Wc + PW: zero padding)
    nr = Dsum if has_q else Dsum + W_zd.shape[0]  # posterior "A": z_t is known, W_zd joins the product
    dt = W_rqz.dtype
    V = np.empty((4, W_rqz.shape[1]), dt)
    H = np.empty((4, Dsum), dt)
    for n in range(N):
        for c in range(Dsum):
            X[0, n, c] = 0.0
        for c in range(Dsum + Z):
            X[T, n, c] = 0.0
    for n0 in range(0, N, 4):
        nk = min(4, N - n0)  # a last partial block repeats its last sequence (results discarded)
        i1, i2, i3 = n0 + min(1, nk - 1), n0 + min(2, nk - 1), n0 + min(3, nk - 1)
        H[:, :] = 0.0
        for t in range(T):
            for k in range(4):
                for c in range(Dsum):
                    V[k, c] = b_h[c]
                if has_q:
                    for c in range(2 * Z):
                        V[k, Dsum + c] = b_q[c]
                for c in range(PW):
                    V[k, Wc + c] = 0.0
            if nk > 2:
                _mv4(V, X[t, n0, :nr], X[t, i1, :nr], X[t, i2, :nr], X[t, i3, :nr], W_rqz, nr)
            else:
                _mv2(V, X[t, n0, :nr], X[t, i1, :nr], W_rqz, nr)
            for k in range(nk):
                n = n0 + k
                v = V[k]
                h = H[k]
                for c in range(PW):
                    PO[t, n, c] = v[Wc + c]
                if has_q:
                    for i in range(Z):
                        e = eps[n, t, i] if use_eps else 0.0
                        mq, ls, s, ok, z = _posterior_unit(v[Dsum + i] + amu[n, t, i], v[Dsum + Z + i] + als[n, t, i],
                                                           e, use_eps, lmin, lmax, fast)
                        MUQ[t, n, i] = mq
                        LSQ[t, n, i] = ls
                        SQ[t, n, i] = s
                        OKQ[t, n, i] = ok
                        X[t, n, Dsum + i] = z
                if has_q:
                    _matvec_acc(v, X[t, n, Dsum:Dsum + Z], W_zd, Z)
                for c in range(Dsum):
                    h[c] += inv_tau[c] * (v[c] - h[c])
                dn = X[t + 1, n, :Dsum]
                if fast:
                    for c in range(Dsum):
                        dn[c] = _tanh32(h[c])
                else:
                    for c in range(Dsum):
                        dn[c] = _tanh(h[c])
        # PO[T] = d_{T-1} W_po (the last output)
        V[:, :] = 0.0
        if nk > 2:
            _mv4(V, X[T, n0, :Dsum], X[T, i1, :Dsum], X[T, i2, :Dsum], X[T, i3, :Dsum], W_rqz, Dsum)
        else:
            _mv2(V, X[T, n0, :Dsum], X[T, i1, :Dsum], W_rqz, Dsum)
        for k in range(nk):
            for c in range(PW):
                PO[T, n0 + k, c] = V[k, Wc + c]


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _loss(MP, LP, OKP, INV2P, RAW, b_o, MUQ, LSQ, SQ, fast, first_unit, kl_w, kl_w1, z_layer, inv_zl,
          softmax, tgt, jmask, smask, offs, nbins, refs, has_data, data, inv_N, op, KMU, KLS, R, stats):
    """KL and reconstruction terms of every (t, n) and their direct gradients (no recurrence).
    MP, LP, INV2P [T, N, Z]: prior mu, clamped log sigma, sigma^-2 (row 0 the unit prior if
    first_unit); OKP [T, N, 2Z]: gradient masks of the prior pre-activations (0 for the unit prior
    and where the log sigma clamp is active); RAW [T, N, O] outputs. Writes KMU, KLS (dL/dmu_q, dL/dlog
    sigma_q) [T, N, Z], R[t, :, op-2Z:op] = dL/d(prior pre-activations at t), R[t+1, :, op:op+O] =
    dL/draw_t. stats (float64): rec sum, weighted KL sum, decoded squared error, then per layer
    the unweighted KL / z_l (all summed over sequences)."""
    T, N, Z = MUQ.shape
    O = RAW.shape[2]
    D = jmask.shape[2]
    Dsum = op - 2 * Z
    inv_D = 1.0 / D
    ex = np.empty(tgt.shape[3])
    raw = np.empty(O, RAW.dtype)
    for t in range(T):
        unit = first_unit and t == 0
        for n in range(N):
            sm = smask[n, t]
            wsm = sm * inv_N
            kls = 0.0
            for i in range(Z):
                w = kl_w1[i] if unit else kl_w[i]
                mp = MP[t, n, i]
                lp = LP[t, n, i]
                sq = SQ[t, n, i]
                inv2p = INV2P[t, n, i]
                dm = MUQ[t, n, i] - mp
                sq2 = sq * sq
                kl = (lp - LSQ[t, n, i] + (sq2 + dm * dm) * inv2p * 0.5 - 0.5) * sm
                kls += w * kl
                stats[3 + z_layer[i]] += kl * inv_zl[z_layer[i]]
                wm = w * wsm
                kmu = wm * dm * inv2p
                KMU[t, n, i] = kmu
                KLS[t, n, i] = wm * (sq2 * inv2p - 1.0)
                R[t, n, Dsum + i] = -kmu * (1.0 - mp * mp) * OKP[t, n, i]
                R[t, n, Dsum + Z + i] = wm * (1.0 - (sq2 + dm * dm) * inv2p) * OKP[t, n, Z + i]
            stats[1] += kls
            for o in range(O):
                raw[o] = RAW[t, n, o] + b_o[o]
            g_out = R[t + 1, n, op:op + O]
            rec = 0.0
            sqe = 0.0
            gs = wsm * inv_D
            if softmax:
                # rec_j = sum_k p_k log p_k - sum_k p_k raw_k + (sum_k p_k) logsumexp(raw_j); a group
                # of one unit is a tanh dimension (modalities beside softmax-coded joints)
                for j in range(D):
                    off = offs[j]
                    nb = nbins[j]
                    mj = jmask[n, t, j]
                    if nb == 1:
                        y = _tanh32(raw[off]) if fast else _tanh(raw[off])
                        g_out[off] = 0.0
                        if mj != 0.0:
                            diff = y - tgt[n, t, j, 0]
                            rec += mj * 0.5 * diff * diff
                            g_out[off] = mj * diff * (1.0 - y * y) * gs
                        if has_data:
                            e2 = y - data[n, t, j]
                            sqe += e2 * e2
                        continue
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
                    mj = jmask[n, t, j]
                    if mj != 0.0:  # mj weights the dimension (core.modalities); 0 = not recorded
                        diff = y - tgt[n, t, j, 0]
                        rec += mj * 0.5 * diff * diff
                        g_out[j] = mj * diff * (1.0 - y * y) * gs
                    if has_data:
                        e2 = y - data[n, t, j]
                        sqe += e2 * e2
            stats[0] += rec * inv_D * sm
            stats[2] += sqe * sm
    for n in range(N):
        for c in range(O):
            R[0, n, op + c] = 0.0
        for c in range(op):
            R[T, n, c] = 0.0


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _brecur(W_bk, W_zd, inv_tau, has_q, W_qT, use_eps, eps, X, MUQ, SQ, OKQ, KMU, KLS, op, oq, R):
    """BPTT of every sequence, four at a time. W_bk = [W_rec^T ; W_p^T ; W_o^T zero-padded]
    [op + O, Dsum]: R[t+1, n, :op+O] = [g_u_{t+1} | g_prior_{t+1} | g_raw_t] times W_bk is
    dL/dd_t (the recurrent and the direct terms in one product). Writes R[t, n, :Dsum] = dL/du_t
    (1/tau included, so dL/dW_rec = sum_t d_{t-1}^T g_u_t) and R[t, n, oq:oq+2Z] = dL/d(posterior
    pre-activations) = dL/dA (row T of R: g_u and g_prior zero, g_A zero)."""
    T, N, Z = MUQ.shape
    Dsum = W_bk.shape[1]
    nr = W_bk.shape[0]
    dt = W_bk.dtype
    GD = np.empty((4, Dsum), dt)
    GC = np.empty((4, Dsum), dt)
    for n0 in range(0, N, 4):
        nk = min(4, N - n0)
        GC[:, :] = 0.0
        i1, i2, i3 = n0 + min(1, nk - 1), n0 + min(2, nk - 1), n0 + min(3, nk - 1)
        for t in range(T - 1, -1, -1):
            GD[:, :] = 0.0
            if nk > 2:
                _mv4(GD, R[t + 1, n0, :nr], R[t + 1, i1, :nr], R[t + 1, i2, :nr], R[t + 1, i3, :nr], W_bk, nr)
            else:
                _mv2(GD, R[t + 1, n0, :nr], R[t + 1, i1, :nr], W_bk, nr)
            if has_q:
                for k in range(nk):
                    _matvec_acc(GD[k], R[t + 1, n0 + k, oq:oq + 2 * Z], W_qT, 2 * Z)
            for k in range(nk):
                n = n0 + k
                gd = GD[k]
                gcarry = GC[k]
                dn = X[t + 1, n, :Dsum]
                gu = R[t, n, :Dsum]
                for c in range(Dsum):
                    gh = gd[c] * (1.0 - dn[c] * dn[c]) + gcarry[c]
                    g = gh * inv_tau[c]
                    gu[c] = g
                    gcarry[c] = gh - g
                Gt = R[t, n]
                for i in range(Z):
                    gz = _dot(gu, W_zd[i])
                    mq = MUQ[t, n, i]
                    gls = KLS[t, n, i]
                    if use_eps:
                        gls += gz * eps[n, t, i] * SQ[t, n, i]
                    Gt[oq + i] = (gz + KMU[t, n, i]) * (1.0 - mq * mq)
                    Gt[oq + Z + i] = gls * OKQ[t, n, i]


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
            self.offs = np.zeros(coding.n_dims, dtype=np.int64)
            self.nbins = np.ones(coding.n_dims, dtype=np.int64)
            self.refs = np.zeros((coding.n_dims, 1))
        self.silent_dims = one_class_dims(coding)
        self.z_layer = model.z_layer.cpu().numpy().astype(np.int64)
        self.inv_zl = 1.0 / np.asarray(model.z_sizes, dtype=np.float64)


def _consts(model) -> _Consts:
    hit = model.__dict__.get("_cpu_train_consts")
    if hit is None:
        hit = model.__dict__["_cpu_train_consts"] = _Consts(model)
    return hit


def _offsets(Dsum: int, Z: int, O: int) -> tuple[int, int, int, int]:
    """Column layout of the X and R buffers (see `_run`): (op, oq, XW, RW)."""
    op = Dsum + 2 * Z
    oq = -(-(op + O) // 8) * 8  # g_A columns start 8-aligned after g_raw
    return op, oq, -(-(Dsum + Z) // 8) * 8, oq + -(-2 * Z // 8) * 8


class _Weights(NamedTuple):
    """The flat weights as contiguous numpy arrays in the compute dtype, in the kernels' layout."""

    W_rq: np.ndarray  # [Dsum, Dsum (+ 2Z) + 2Z + O]: [W_rec | W_q | W_po] (a view of W_rqz)
    W_recT: np.ndarray  # [Dsum, Dsum]
    W_qT: np.ndarray  # [2Z, Dsum] (zeros without W_q)
    W_zd: np.ndarray  # [Z, Dsum]
    b_h: np.ndarray
    b_q: np.ndarray  # [2Z] (zeros without W_q)
    inv_tau: np.ndarray
    b_p: np.ndarray
    b_o: np.ndarray
    W_dir: np.ndarray  # [2Z + O, Dsum]: [W_p^T ; W_o^T zero-padded], for the direct dL/dd
    W_po: np.ndarray  # W_dir^T [Dsum, 2Z + O]: prior and output pre-activations (a view of W_rqz)
    has_q: bool
    d1: int
    W_bk: np.ndarray  # [W_recT ; W_dir] [Dsum + 2Z + O, Dsum] (W_recT and W_dir are views of it)
    W_rqz: np.ndarray  # [W_rq ; W_zd | 0] [Dsum + Z, Wc + 2Z + O] (W_rq, W_po are views of it)


def _weights_from_flat(fw: FlatWeights) -> _Weights:
    dtype = fw.W_rec.dtype

    def a(x):
        return np.ascontiguousarray(x.detach().cpu().to(dtype).numpy())

    Dsum = fw.W_rec.shape[0]
    Z2 = fw.W_p.shape[1]
    d1, O = fw.W_o.shape
    has_q = fw.W_q is not None
    W_rec = a(fw.W_rec)
    W_q = a(fw.W_q) if has_q else np.zeros((Dsum, Z2), W_rec.dtype)
    W_bk = np.zeros((Dsum + Z2 + O, Dsum), W_rec.dtype)
    W_bk[:Dsum] = W_rec.T
    W_dir = W_bk[Dsum:]
    W_dir[:Z2] = a(fw.W_p).T
    W_dir[Z2:, :d1] = a(fw.W_o).T
    W_zd = a(fw.W_zd)
    Wc = Dsum + (Z2 if has_q else 0)
    W_rqz = np.zeros((Dsum + W_zd.shape[0], -(-(Wc + Z2 + O) // 8) * 8), W_rec.dtype)
    W_rqz[:Dsum, :Dsum] = W_rec
    if has_q:
        W_rqz[:Dsum, Dsum:Wc] = W_q
    W_rqz[:Dsum, Wc:Wc + Z2 + O] = W_dir.T
    W_rqz[Dsum:, :Dsum] = W_zd
    return _Weights(W_rqz[:Dsum], W_bk[:Dsum], np.ascontiguousarray(W_q.T), W_zd, a(fw.b_h),
                    a(fw.b_q) if has_q else np.zeros(Z2, W_rec.dtype), a(fw.inv_tau), a(fw.b_p),
                    a(fw.b_o), W_dir, W_rqz[:Dsum, Wc:Wc + Z2 + O], has_q, d1, W_bk, W_rqz)


class _Layout:
    """`PVRNN.flat()` as numpy copies into persistent buffers (no autograd graph, a few µs) and its
    transpose for the gradients; cached on the model, rebuilt if its parameters are replaced."""

    def __init__(self, model):
        self.key = self._key(model)
        ds, zs = model.d_sizes, model.z_sizes
        doff = np.concatenate([[0], np.cumsum(ds)]).astype(int).tolist()
        zoff = np.concatenate([[0], np.cumsum(zs)]).astype(int).tolist()
        Dsum, Z = doff[-1], zoff[-1]
        d1, O = model.out.weight.shape[1], model.out.weight.shape[0]
        self.has_q = model.cfg.posterior == "d+A"
        npdt = model.inv_tau.detach().cpu().numpy().dtype
        Wc = Dsum + (2 * Z if self.has_q else 0)
        W_rqz = np.zeros((Dsum + Z, -(-(Wc + 2 * Z + O) // 8) * 8), npdt)  # columns padded to 8
        W_rq = W_rqz[:Dsum]  # (the views below only touch its first Wc columns)
        W_bk = np.zeros((Dsum + 2 * Z + O, Dsum), npdt)
        W_dir = W_bk[Dsum:]
        W_zd = np.zeros((Z, Dsum), npdt)
        b_h, b_p, b_q = np.zeros(Dsum, npdt), np.zeros(2 * Z, npdt), np.zeros(2 * Z, npdt)
        b_o = np.zeros(O, npdt)
        self.w = _Weights(W_rq, W_bk[:Dsum], np.zeros((2 * Z, Dsum), npdt), W_zd, b_h, b_q,
                          model.inv_tau.detach().cpu().numpy().astype(npdt), b_p, b_o, W_dir,
                          W_rqz[:Dsum, Wc:Wc + 2 * Z + O], self.has_q, d1, W_bk, W_rqz)
        self.bufs = {}  # persistent step buffers of _run, by shape and dtype
        cp = []  # (destination view, parameter, transpose, row slice of the parameter)
        gm = []  # (parameter, [(row slice of param, source: "M" or "b", rows, cols, transpose)])
        self.rec_blocks = []  # (dst rows, dst cols) of W_rec blocks, for W_recT
        for i, layer in enumerate(model.layers):
            d = slice(doff[i], doff[i + 1])
            z = slice(zoff[i], zoff[i + 1])
            zl = slice(Z + zoff[i], Z + zoff[i + 1])
            srcs = [(i, layer.rec.weight)]
            if layer.top is not None:
                srcs.append((i + 1, layer.top.weight))
            if layer.bottom is not None:
                srcs.append((i - 1, layer.bottom.weight))
            for src, p in srcs:
                rs = slice(doff[src], doff[src + 1])
                cp.append((W_rq[rs, d], p, True, slice(None)))
                self.rec_blocks.append((rs, d))
                gm.append((p, [(slice(None), "M", rs, d, True)]))
            cp.append((b_h[d], layer.rec.bias, False, slice(None)))
            gm.append((layer.rec.bias, [(slice(None), "b", None, d, False)]))
            cp.append((W_zd[z, d], layer.z_in.weight, True, slice(None)))
            gm.append((layer.z_in.weight, [(slice(None), "M", slice(Dsum + zoff[i], Dsum + zoff[i + 1]), d, True)]))
            zi = zs[i]
            heads = [(layer.prior, W_dir, b_p, 0, True)]  # prior weights live transposed in W_dir
            if self.has_q:
                heads.append((layer.posterior, W_rq, b_q, Dsum, False))
            for lin, Wd, bd, col0, in_dir in heads:
                gcol = Dsum if in_dir else _offsets(Dsum, Z, O)[1]  # R column of g_prior / g_A
                for half, zz in ((slice(0, zi), z), (slice(zi, 2 * zi), zl)):
                    if in_dir:
                        cp.append((Wd[zz, d], lin.weight, False, half))
                    else:
                        cp.append((Wd[d, col0 + zz.start:col0 + zz.stop], lin.weight, True, half))
                    cp.append((bd[zz], lin.bias, False, half))
                gm.append((lin.weight, [(slice(0, zi), "M", d, slice(gcol + z.start, gcol + z.stop), True),
                                        (slice(zi, 2 * zi), "M", d, slice(gcol + zl.start, gcol + zl.stop), True)]))
                gm.append((lin.bias, [(slice(0, zi), "b", None, slice(gcol + z.start, gcol + z.stop), False),
                                      (slice(zi, 2 * zi), "b", None, slice(gcol + zl.start, gcol + zl.stop), False)]))
        op = Dsum + 2 * Z
        cp.append((W_dir[2 * Z:, :d1], model.out.weight, False, slice(None)))
        cp.append((b_o, model.out.bias, False, slice(None)))
        gm.append((model.out.weight, [(slice(None), "M", slice(0, d1), slice(op, op + O), True)]))
        gm.append((model.out.bias, [(slice(None), "b", None, slice(op, op + O), False)]))
        self.copies, self.grad_map = cp, gm
        self.Dsum = Dsum

    @staticmethod
    def _key(model):
        return tuple((id(p), p.shape, p.dtype) for p in model.parameters()) + (model.cfg.posterior,)

    def valid_for(self, model) -> bool:
        """Cheap check (every step) that the model still holds the parameters this was built on."""
        first, last = self.key[0], self.key[-2]
        p0, p1 = model.layers[0].rec.weight, model.out.bias
        return first[0] == id(p0) and last[0] == id(p1) and first[2] == p0.dtype and first[1] == p0.shape

    def fill(self) -> _Weights:
        """Copy the current parameter values into the buffers."""
        for dst, p, transpose, rows in self.copies:
            src = p.detach().numpy()[rows]
            dst[...] = src.T if transpose else src
        w = self.w
        np.copyto(w.W_po, w.W_dir.T)  # (a view of W_rqz: the recurrence computes PO too)
        Dsum = self.Dsum
        for rs, d in self.rec_blocks:
            w.W_recT[d, rs] = w.W_rq[rs, d].T
        if self.has_q:
            w.W_qT[...] = w.W_rq[:, Dsum:Dsum + w.W_qT.shape[0]].T
        w.W_rqz[Dsum:, :Dsum] = w.W_zd
        return w

    def param_grads(self, M: np.ndarray, gb: np.ndarray) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        out = []
        for p, parts in self.grad_map:
            g = np.empty(tuple(p.shape), M.dtype)
            for prow, src, rows, cols, transpose in parts:
                block = M[rows, cols] if src == "M" else gb[cols]
                g[prow] = block.T if transpose else block
            out.append((p, torch.from_numpy(g)))
        return out


def _layout(model) -> _Layout:
    lay = model.__dict__.get("_cpu_train_layout")
    if lay is None or not lay.valid_for(model):
        lay = model.__dict__["_cpu_train_layout"] = _Layout(model)
    return lay


def _buffers(model, T, parts, Z, Dsum_Z, XW, RW, PW, npdt):
    """The step buffers of `_run`, persistent per model and shape (allocated zeroed once: the
    kernels rewrite the same entries every step, the padding and row T's unused parts stay 0).
    Returns (X and R of all sequences as [rows, width] tensors, per part a tuple of time-major
    views [T(+1), n1 - n0, width]): each part's rows are one contiguous block of the storage, so a
    thread owns its part and X^T R still runs over every row in one product."""
    cache = model.__dict__.setdefault("_cpu_train_bufs", {})
    key = (T, tuple(parts), Z, Dsum_Z, XW, RW, PW, np.dtype(npdt).str)
    hit = cache.get(key)
    if hit is None:
        if len(cache) > 4:
            cache.clear()
        N = parts[-1][1]
        tdt = torch.from_numpy(np.zeros(0, npdt)).dtype
        # X, R, MUQ, LSQ, SQ, OKQ, KMU, KLS, MP, LP, OKP, INV2P, PO
        shapes = [(T + 1, XW), (T + 1, RW), *[(T, Z)] * 8, (T, 2 * Z), (T, Z), (T + 1, PW)]
        # torch's allocator: 64-byte aligned storage for the vector loops
        store = [torch.zeros(rows * N * width, dtype=tdt).numpy() for rows, width in shapes]
        views = [tuple(buf[rows * n0 * width:rows * n1 * width].reshape(rows, n1 - n0, width)
                       for buf, (rows, width) in zip(store, shapes)) for n0, n1 in parts]
        Xf = torch.from_numpy(store[0]).view(-1, XW)
        if XW > Dsum_Z:  # a ones column in X's padding (no kernel writes it): the bias gradients come out of X^T R
            Xf[:, Dsum_Z] = 1.0
        hit = cache[key] = (Xf, torch.from_numpy(store[1]).view(-1, RW), views)
    return hit


def _parts(N: int, threads: int) -> list[tuple[int, int]]:
    """Split N sequences into at most `threads` contiguous ranges, as even as possible (the
    kernels take four sequences at a time and the last one or two at half the cost)."""
    k = max(1, min(threads, N // 2))  # (a thread gets at least two sequences)
    edges = [N * i // k for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


_POOL: list = [None, 0]  # (ThreadPoolExecutor, its workers), grown on demand


def _pool(workers: int):
    from concurrent.futures import ThreadPoolExecutor

    if _POOL[1] < workers:
        if _POOL[0] is not None:
            _POOL[0].shutdown(wait=False)
        threads = torch.get_num_threads()
        # a new thread starts with OpenMP's default team size, not the caller's (the torch ops here are tiny)
        _POOL[0] = ThreadPoolExecutor(workers, thread_name_prefix="pvrnn-train",
                                      initializer=torch.set_num_threads, initargs=(threads,))
        _POOL[1] = workers
    return _POOL[0]


def resolve_threads(threads: int) -> int:
    """`train.cpu_threads`: 0 means one per core this process may run on."""
    if threads > 0:
        return threads
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run(model, w: _Weights, a_mu, a_ls, eps, target, joint_mask, step_mask, kl_w, kl_w1, data,
         first_is_unit_prior, threads: int = 1):
    """Both kernels and the weight-gradient product. Returns (terms, M [Dsum+Z, Wr], gb [Wr],
    g_a [N, T, 2Z], column offsets (op, oq)) with M = X^T R (layout below). `threads` > 1 runs
    disjoint ranges of sequences in parallel (the kernels release the GIL); the sums over
    sequences are then taken in a different order, so results differ in the last bits."""
    npdt = w.W_recT.dtype
    dtype = torch.from_numpy(w.b_h[:0]).dtype
    N, T, Z = a_mu.shape
    Dsum = w.W_recT.shape[0]
    O = w.b_o.shape[0]
    has_q = w.has_q
    K = _consts(model)

    def n_(x):
        return x.detach().to(dtype).contiguous().numpy()

    use_eps = eps is not None
    ep = n_(eps) if use_eps else None
    tgt = target.detach().to(dtype)
    tgt = (tgt if K.softmax else tgt.unsqueeze(-1)).contiguous().numpy()
    has_data = data is not None
    dat = n_(data) if has_data else None
    no_rows = np.zeros((1, 1, 1), npdt)  # stands in for an absent eps / data
    inv_N = 1.0 / N
    # X [T+1, N, XW]: [d read at step t (Dsum) | z_t (Z) | pad]; R [T+1, N, RW]: [g_u (Dsum) |
    # g_prior (2Z) | g_raw (O) | pad | g_A (2Z)]; row t of R pairs with row t of X; widths padded
    # to multiples of 8 (the weight-gradient product is faster on aligned rows)
    op, oq, XW, RW = _offsets(Dsum, Z, O)
    parts = _parts(N, threads)
    Xf, Rf, views = _buffers(model, T, parts, Z, Dsum + Z, XW, RW, 2 * Z + O, npdt)
    ones = XW > Dsum + Z  # (the ones column of X: see _buffers)
    lmin, lmax, fast = float(model.cfg.logsigma_min), float(model.cfg.logsigma_max), npdt == np.float32
    first_unit = bool(first_is_unit_prior)
    amu, als, klw, klw1 = n_(a_mu), n_(a_ls), n_(kl_w), n_(kl_w1)
    jm, sm = n_(joint_mask), n_(step_mask)
    if K.silent_dims:
        jm = jm.copy()
        jm[..., K.silent_dims] = 0.0

    def part(i):
        n0, n1 = parts[i]
        X, R, MUQ, LSQ, SQ, OKQ, KMU, KLS, MP, LP, OKP, INV2P, PO = views[i]
        mu, ls = amu[n0:n1], als[n0:n1]
        e = ep[n0:n1] if use_eps else no_rows
        stats = np.zeros(3 + len(model.z_sizes))
        if not has_q:  # posterior "A" does not depend on d: all (t, n) at once, z_t into X
            _posterior_act(mu, ls, lmin, lmax, fast, MUQ, LSQ, OKQ)
            torch.exp(torch.from_numpy(LSQ), out=torch.from_numpy(SQ))
            _posterior_z(MUQ, SQ, use_eps, e, X, Dsum)
        _recur(w.W_rqz, w.W_zd, w.b_h, w.b_q, w.inv_tau, has_q, mu, ls, use_eps, e, lmin, lmax, fast,
               X, MUQ, LSQ, SQ, OKQ, PO)  # (PO: prior and output pre-activations, from the same product)
        _prior_act(PO[:T, :, :2 * Z], w.b_p, lmin, lmax, fast, first_unit, MP, LP, OKP)
        torch.exp(torch.from_numpy(LP).mul(-2.0), out=torch.from_numpy(INV2P))
        _loss(MP, LP, OKP, INV2P, PO[1:, :, 2 * Z:], w.b_o, MUQ, LSQ, SQ, fast, first_unit, klw, klw1,
              K.z_layer, K.inv_zl, K.softmax, tgt[n0:n1], jm[n0:n1], sm[n0:n1], K.offs, K.nbins, K.refs,
              has_data, dat[n0:n1] if has_data else no_rows, inv_N, op, KMU, KLS, R, stats)
        # BPTT; the direct dL/dd_t (prior at t+1, output at t) rides in the same product as W_rec^T
        _brecur(w.W_bk, w.W_zd, w.inv_tau, has_q, w.W_qT, use_eps, e, X, MUQ, SQ, OKQ, KMU, KLS, op, oq, R)
        # every weight gradient in one product over this part's (T+1) n rows (the g_A columns are
        # W_q's); with a ones column in X the bias gradients come out as its row
        Xp, Rp = torch.from_numpy(X).view(-1, XW), torch.from_numpy(R).view(-1, RW)
        return stats, Xp.t() @ (Rp if has_q else Rp[:, :oq])

    if len(parts) == 1:
        stats, M = part(0)
    else:
        rest = [_pool(len(parts) - 1).submit(part, i) for i in range(1, len(parts))]
        stats, M = part(0)
        for f in rest:
            s_i, M_i = f.result()
            stats += s_i
            M += M_i
    gb = M[Dsum + Z] if ones else (Rf if has_q else Rf[:, :oq]).sum(0)
    # [N, T, 2Z] (views of the persistent R)
    g_a = [torch.from_numpy(v[1][:T, :, oq:oq + 2 * Z]).transpose(0, 1) for v in views]
    terms = TrainTerms(float((stats[0] + stats[1]) * inv_N), float(stats[0] * inv_N),
                       torch.from_numpy(stats[3:] * inv_N).float(), float(stats[2]))
    return terms, M, gb, g_a, op, oq


@torch.no_grad()
def loss_and_grads(model, fw: FlatWeights, a_mu: torch.Tensor, a_ls: torch.Tensor, eps: torch.Tensor | None,
                   target: torch.Tensor, joint_mask: torch.Tensor, step_mask: torch.Tensor,
                   kl_w: torch.Tensor, kl_w1: torch.Tensor, data: torch.Tensor | None = None,
                   first_is_unit_prior: bool = True, threads: int = 1) -> tuple[TrainTerms, TrainGrads]:
    """`free_energy(model, model.posterior_forward(a_mu, a_ls, eps, fw=fw), target, joint_mask,
    step_mask, kl_w, kl_w1, first_is_unit_prior).total` and its gradients w.r.t. the trainable
    fields of `fw` and A, from the zero state.

    a_mu, a_ls, eps (None: z = mu_q): [N, T, Z]; target [N, T, D] (or coded [N, T, D, K]);
    joint_mask [N, T, D]; step_mask [N, T]; `data` (normalised [N, T, D]) adds the decoded-output
    squared error to the terms. CPU tensors; computed in the dtype of fw.W_rec (float32: the
    hidden-state tanh is a rational approximation, |error| < 3e-7; losses accumulate in float64).
    `threads` > 1 splits the sequences between that many threads."""
    w = _weights_from_flat(fw)
    terms, M, gb, g_a, op, oq = _run(model, w, a_mu, a_ls, eps, target, joint_mask, step_mask, kl_w, kl_w1,
                                     data, first_is_unit_prior, threads)
    Dsum, Z, d1, O = w.W_recT.shape[0], a_mu.shape[2], w.d1, w.b_o.shape[0]
    grads = TrainGrads(M[:Dsum, :Dsum], M[Dsum:Dsum + Z, :Dsum], gb[:Dsum], M[:Dsum, Dsum:op], gb[Dsum:op],
                       M[:Dsum, oq:oq + 2 * Z] if w.has_q else None, gb[oq:oq + 2 * Z] if w.has_q else None,
                       M[:d1, op:op + O], gb[op:op + O], *_split_a(g_a, Z))
    return terms, grads


def _split_a(g_a, Z):
    """dL/dA_mu, dL/dA_ls as fresh contiguous tensors (g_a: per part of the sequences, views of
    the persistent R)."""
    if len(g_a) == 1:
        return (g_a[0][..., :Z].clone(memory_format=torch.contiguous_format),
                g_a[0][..., Z:].clone(memory_format=torch.contiguous_format))
    return torch.cat([g[..., :Z] for g in g_a]), torch.cat([g[..., Z:] for g in g_a])


@torch.no_grad()
def model_grads(model, a_mu: torch.Tensor, a_ls: torch.Tensor, eps: torch.Tensor | None,
                target: torch.Tensor, joint_mask: torch.Tensor, step_mask: torch.Tensor,
                kl_w: torch.Tensor, kl_w1: torch.Tensor, data: torch.Tensor | None = None,
                first_is_unit_prior: bool = True, threads: int = 1):
    """As `loss_and_grads` on `model.flat()`, with the gradients mapped straight onto the model's
    parameters (no flat() assembly, no autograd): (terms, [(parameter, gradient)], dL/dA_mu,
    dL/dA_ls). This is the training fast path (`train.backend: cpu`)."""
    lay = _layout(model)
    terms, M, gb, g_a, _, _ = _run(model, lay.fill(), a_mu, a_ls, eps, target, joint_mask, step_mask,
                                   kl_w, kl_w1, data, first_is_unit_prior, threads)
    Z = a_mu.shape[2]
    return (terms, lay.param_grads(M.numpy(), gb.numpy()), *_split_a(g_a, Z))


@njit(cache=True, fastmath=_FM, error_model="numpy", nogil=True)
def _adam(p, g, m, v, step, scale, lr, b1, b2, eps):
    """torch.optim.Adam's update of one parameter in place (flat views; no weight decay or amsgrad),
    on the gradient g * scale (scale < 1: norm clipping); step [1] is the optimizer's step count."""
    s = step[0] + 1.0
    step[0] = s
    step_size = lr / (1.0 - b1 ** s)
    inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - b2 ** s)
    c1 = 1.0 - b1
    c2 = 1.0 - b2
    for i in range(p.shape[0]):
        gi = g[i] * scale
        mi = m[i] + (gi - m[i]) * c1  # (torch: exp_avg.lerp_(grad, 1 - beta1))
        vi = v[i] * b2 + c2 * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] -= step_size * mi / (math.sqrt(vi) * inv_bc2_sqrt + eps)


class CpuAdam:
    """Applies a `torch.optim.Adam`'s update with the gradients handed in, without setting .grad:
    one compiled loop per parameter instead of torch's per-step bookkeeping (~0.5 ms per step for
    the 15 tensors of a default model). The moments and step counts live in the optimizer's own
    state, in torch's layout, so `state_dict()` checkpoints and resumes exactly as before. Optional
    gradient-norm clipping as `torch.nn.utils.clip_grad_norm_` (over the gradients handed in)."""

    def __init__(self, optimizer: torch.optim.Adam):
        group = optimizer.param_groups[0]
        if len(optimizer.param_groups) != 1 or group["weight_decay"] or group["amsgrad"] or group["maximize"]:
            raise ValueError("CpuAdam supports one parameter group without weight_decay, amsgrad or maximize")
        self.optimizer = optimizer
        self._views: dict[int, tuple] = {}

    def _state(self, p: torch.Tensor):
        st = self.optimizer.state[p]
        if not st:  # as torch initialises it (float32 step tensor, zero moments)
            st["step"] = torch.zeros((), dtype=torch.float32)
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        hit = self._views.get(id(p))
        if hit is None or hit[0] is not st["exp_avg"] or hit[1] is not st["exp_avg_sq"] or hit[2] is not st["step"]:
            m, v, step = st["exp_avg"], st["exp_avg_sq"], st["step"]
            hit = (m, v, step, p.detach().numpy().reshape(-1), m.numpy().reshape(-1), v.numpy().reshape(-1),
                   step.view(1).numpy())
            self._views[id(p)] = hit
        return hit[3:]

    @torch.no_grad()
    def step(self, grads: list[tuple[torch.Tensor, torch.Tensor]], clip: float = 0.0) -> None:
        group = self.optimizer.param_groups[0]
        lr, (b1, b2), eps = float(group["lr"]), group["betas"], float(group["eps"])
        flat = [(p, g.numpy().reshape(-1)) for p, g in grads]
        scale = 1.0
        if clip > 0:
            norm = math.sqrt(sum(float(np.dot(g, g)) for _, g in flat))
            scale = min(1.0, clip / (norm + 1e-6))
        for p, g in flat:
            pv, m, v, step = self._state(p)
            _adam(pv, g, m, v, step, scale, lr, b1, b2, eps)


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

