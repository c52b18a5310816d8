"""Fused CPU ER backend: one Numba-compiled call runs a whole tick (K iterations of window
forward, hand-derived BPTT and Adam on A, for every window). Products in float32 (from 8 windows
on, and for outputs of 16 or more units, through SciPy's BLAS), per-unit-of-z terms in float64.

Layout and math are those of `pvrnn_ros.core.model` (flat weights, all layers concatenated);
`pvrnn_ros.kernels.reference` is the autograd ground truth this is tested against.

Backward, per window, t = W-1 .. 0 (g_x = dL/dx; "it" = 1/tau):
  g_d_t  = [from step t+1: g_u_{t+1} W_rec^T + g_p_{t+1} W_p^T (+ g_q_{t+1} W_q^T)] + g_raw_t W_o^T (first d_1 units)
  g_h_t  = g_d_t (1 - d_t^2) + g_h_{t+1} (1 - it),   g_u_t = it g_h_t,   g_z_t = g_u_t W_zd^T
  g_mu_q = g_z + w (mu_q - mu_p) / s_p^2,  g_ls_q = g_z eps s_q + w (s_q^2 / s_p^2 - 1)
  g_A_mu = g_mu_q (1 - mu_q^2),  g_A_ls = g_ls_q [lmin <= pre <= lmax]  (torch.clamp gradient)
  prior:  g_pmu = -w (mu_q - mu_p) / s_p^2 (1 - mu_p^2),  g_pls = w (1 - (s_q^2 + (mu_q - mu_p)^2) / s_p^2) [clamp]
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from . import _kernel_cache  # noqa: F401  (before any cached kernel: one stamp for all kernel sources)
from numba import njit, prange

from pvrnn_ros.core.window import AdamState, WindowPass, WindowProblem, WindowResult
from pvrnn_ros.core.model import State



def _one_thread_for_scipy_blas() -> None:
    """The batched kernels' products call SciPy's BLAS (numba's np.dot), from inside their own
    threads: that BLAS starting threads of its own oversubscribes the cores (B = 16 plans ran 1.5x
    slower, docs/performance.md session 11). Limit that library, and only it, to one thread; numpy's
    and torch's BLAS keep their settings. A SciPy linked to a shared system BLAS is left alone."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    from pathlib import Path

    for lib in ThreadpoolController().lib_controllers:
        if lib.user_api == "blas" and Path(lib.filepath).parent.name.startswith("scipy"):
            lib.set_num_threads(1)


_one_thread_for_scipy_blas()

# Compute dtype of the weights and the d/h/output activations (the matrix products). Everything
# per unit of z (A, Adam moments, KL terms), the targets and the loss accumulate in float64.
_F = np.float32

# the kernels' "targets already prepared" arguments when they are not (TG, PLOGP, PSUM, MASK, use_pre)
_NO_PREPARED_TARGETS = (np.zeros((1, 1), np.float32), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), False)


# ------------------------------------------------------------------------------------------------
# compiled core
# ------------------------------------------------------------------------------------------------
@njit(cache=True, fastmath=False, inline="always")
def _tanh(x):
    # 1 - 2 / (e^{2x} + 1): one exp (libm tanh is ~2.5x slower); absolute error ~1e-16 in float64
    return 1.0 - 2.0 / (math.exp(2.0 * x) + 1.0)


_C = np.float32
_FM = {"contract"}  # FMA contraction only (no reassociation): results stay deterministic

def host_cpu() -> tuple[str, str]:
    """The host CPU LLVM compiles the kernels for (e.g. "znver3") and its widest vector ISA
    ("avx512f", "avx2", "sse4.2" or "baseline"); ("unknown", "baseline") when llvmlite cannot say."""
    try:
        from llvmlite import binding as llvm

        features = llvm.get_host_cpu_features()
        name = llvm.get_host_cpu_name()
    except Exception:  # noqa: BLE001
        return "unknown", "baseline"
    return name, next((isa for isa in ("avx512f", "avx2", "sse4.2") if features.get(isa)), "baseline")


# From this many rows on (windows, rollouts), the kernels' per-step products go to BLAS (np.dot): below
# it the call's overhead outweighs the faster inner kernel. Where that crossover lies depends on the
# host (docs/performance.md, session 18): on the AVX-512 EPYC (znver4) of sessions 12-15 BLAS won from
# 8 rows; on an AVX2 EPYC (znver3) the in-house kernel was faster up to ~24 rows of a 120-wide product
# (16 rows: 10 vs 14 us), and B = 16 plans on two threads ran 1.8x faster without BLAS. numba's cache
# keeps one compiled copy per host CPU, so each host compiles in its own threshold.
BLAS_MIN_ROWS = 8 if host_cpu()[1] == "avx512f" else 32


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


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _expv(x, out, ib, n):
    """out[k] = exp(x[k]) for k < n, float32, x <= 0 (softmax after max subtraction; clamped at
    -87): Cephes' expf (range reduction by ln 2, degree-6 polynomial, ~1 ulp) as pure arithmetic,
    so the loops vectorise (libm exp does not); 2^n is built in the exponent bits (ib: int32
    scratch)."""
    for k in range(n):
        v = x[k]
        v = _C(-87.0) if v < _C(-87.0) else v
        fx = np.floor(v * _C(1.44269504088896341) + _C(0.5))
        r = v - fx * _C(0.693359375) - fx * _C(-2.12194440e-4)
        r2 = r * r
        y = _C(1.9875691500e-4) * r + _C(1.3981999507e-3)
        y = y * r + _C(8.3334519073e-3)
        y = y * r + _C(4.1665795894e-2)
        y = y * r + _C(1.6666665459e-1)
        y = y * r + _C(5.0000001201e-1)
        out[k] = y * r2 + r + _C(1.0)
        ib[k] = (np.int32(fx) + np.int32(127)) << np.int32(23)
    sc = ib.view(np.float32)
    for k in range(n):
        out[k] *= sc[k]


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _dot(a, b):
    """sum_i a[i] b[i] (1-D, same length); reassociation allowed so the reduction vectorises
    (a serial sum is one FMA latency per element)."""
    acc = a[0] * b[0] * 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(cache=True, fastmath=_FM, inline="always", error_model="numpy")
def _mva(v, x, W, n):
    """v[:W.shape[1]] += x[:n] @ W[:n], four rows of W per pass over v (one load and store of v
    per four multiply-adds instead of one per multiply-add)."""
    nc = W.shape[1]
    r = 0
    while r + 4 <= n:
        x0 = x[r]
        x1 = x[r + 1]
        x2 = x[r + 2]
        x3 = x[r + 3]
        w0 = W[r]
        w1 = W[r + 1]
        w2 = W[r + 2]
        w3 = W[r + 3]
        for c in range(nc):
            v[c] += (x0 * w0[c] + x1 * w1[c]) + (x2 * w2[c] + x3 * w3[c])
        r += 4
    while r < n:
        x0 = x[r]
        w0 = W[r]
        for c in range(nc):
            v[c] += x0 * w0[c]
        r += 1


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _times_plus(V, X, Wm, bias, use_blas):
    """V = X @ Wm + bias for every row of X (contiguous): one BLAS product when use_blas, else the
    blocked in-house kernel (for few rows and narrow outputs BLAS's call costs more than it saves)."""
    N, C = V.shape
    if use_blas:
        np.dot(X, Wm, V)
        for r in range(N):
            for c in range(C):
                V[r, c] += bias[c]
    else:
        for r in range(N):
            for c in range(C):
                V[r, c] = bias[c]
        _mma(V, 0, X, 0, N, Wm, Wm.shape[0])


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _forward(W_rec, W_zd, b_h, inv_tau, W_p, b_p, has_q, W_q, b_q, W_o, b_o,
             h0, d0, amu, als, use_eps, eps, lmin, lmax, first_unit,
             softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
             H, Dd, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, RAW, RAWT, XS, IB, GRAW, GRAWT, PLOGP, PSUM, ROWREC,
             need_grad):
    """One window's forward pass; fills the activation buffers, RAW [W, O] (output pre-activations;
    RAWT the same one column per step, for `_output_loss`) and, when need_grad, GRAW (dL/draw)
    and returns the window loss (targets and weights as `_target_prep` lays them out). Dd[t] /
    H[t] hold d_{t-1} / h_{t-1} (row 0 = carried state). The recurrence runs first; the output layer, which nothing feeds back from,
    then runs over all W steps at once."""
    W, Z = amu.shape
    Dsum = W_rec.shape[0]
    d1, O = W_o.shape
    for i in range(Dsum):
        Dd[0, i] = d0[i]
        H[0, i] = h0[i]
    u = np.empty(Dsum, W_rec.dtype)
    z = np.empty(Z, W_rec.dtype)
    q = np.empty(2 * Z, W_rec.dtype)
    loss = 0.0
    for t in range(W):
        dp = Dd[t]
        # posterior
        if has_q:
            for c in range(2 * Z):
                q[c] = b_q[c]
            _mva(q, dp, W_q, Dsum)
            for i in range(Z):
                MUQ[t, i] = _tanh(q[i] + amu[t, i])
                LSQ[t, i], OKQ[t, i] = _clamp_ok(q[Z + i] + als[t, i], lmin, lmax)
        else:
            for i in range(Z):
                MUQ[t, i] = _tanh(amu[t, i])
                LSQ[t, i], OKQ[t, i] = _clamp_ok(als[t, i], lmin, lmax)
        for i in range(Z):
            s = math.exp(LSQ[t, i])
            SQ[t, i] = s
            if use_eps:
                z[i] = MUQ[t, i] + s * eps[t, i]
            else:
                z[i] = MUQ[t, i]
        # MTRNN update
        for c in range(Dsum):
            u[c] = b_h[c]
        _mva(u, dp, W_rec, Dsum)
        _mva(u, z, W_zd, Z)
        hp = H[t]
        hn = H[t + 1]
        dn = Dd[t + 1]
        for c in range(Dsum):
            hv = hp[c] + inv_tau[c] * (u[c] - hp[c])
            hn[c] = hv
            dn[c] = _tanh32(hv)
        # prior from d_{t-1}
        unit = first_unit and t == 0
        if unit:
            for i in range(Z):
                MUP[t, i] = 0.0
                LSP[t, i] = 0.0
                OKP[t, i] = 0.0
        else:
            for c in range(2 * Z):
                q[c] = b_p[c]
            _mva(q, dp, W_p, Dsum)
            for i in range(Z):
                MUP[t, i] = _tanh(q[i])
                LSP[t, i], OKP[t, i] = _clamp_ok(q[Z + i], lmin, lmax)
        # KL
        klsum = 0.0
        for i in range(Z):
            w = kl_w1[i] if unit else kl_w[i]
            dm = MUQ[t, i] - MUP[t, i]
            sq = SQ[t, i]
            klsum += w * (LSP[t, i] - LSQ[t, i] + (sq * sq + dm * dm) * math.exp(-2.0 * LSP[t, i]) * 0.5 - 0.5)
        loss += klsum
    # output layer over all steps
    DX = np.empty((W, d1), W_rec.dtype)
    for t in range(W):
        for c in range(d1):
            DX[t, c] = Dd[t + 1, c]
    _times_plus(RAW, DX, W_o, b_o, O >= 16 or W >= BLAS_MIN_ROWS)  # wide softmax outputs: BLAS
    for t in range(W):
        for o in range(O):
            RAWT[o, t] = RAW[t, o]
    loss += _output_loss(softmax, RAWT, XS, IB, TG, MASK, offs, nbins, PLOGP, PSUM, GRAWT, need_grad, ROWREC)
    if need_grad:
        for t in range(W):
            for o in range(O):
                GRAW[t, o] = GRAWT[o, t]
    return loss


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _clamp_ok(pre, lmin, lmax):
    """(clamp(pre, lmin, lmax), 1.0 where the clamp passes the gradient else 0.0): torch.clamp's
    value and gradient mask, shared by the ER and training kernels."""
    if pre < lmin:
        return lmin, 0.0
    if pre > lmax:
        return lmax, 0.0
    return pre, 1.0


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _output_loss(softmax, RAW, XS, IB, TG, MASK, offs, nbins, PLOGP, PSUM, GRAW, need_grad, ROWREC):
    """Reconstruction loss of every column (step) of RAW [O, R], the output pre-activations laid out
    one column per step, against TG [O, R] (the target laid out as the outputs; for softmax joints
    already weighted by the mask, see _target_prep); GRAW [O, R] = dL/dRAW when need_grad, ROWREC [R]
    each column's share (the batched kernels' columns interleave windows). Columns past the real
    steps (padding, so the loops over columns run as whole vectors, see `_padded`) carry zero
    targets and weights and add nothing. Every loop runs along a column-contiguous row: per-joint
    sums over 7-31 bins become vector adds over all steps at once. Per-joint sums run in float32,
    the loss accumulates in float64."""
    O, R = RAW.shape
    D = MASK.shape[0]
    inv_D = 1.0 / D
    ROW = np.zeros(R)
    if softmax:
        # rec_tj = m_tj (sum_k p_k log p_k - sum_k p_k x_k + (sum_k p_k) log sum_k e^x_k), the mask m
        # folded into the target (PLOGP, PSUM, TG), x = raw - (the joint's max at that step): its max
        # bin gives e^0 = 1, so the sum neither overflows nor underflows
        # The running max and sums over a joint's bins are kept in memory, and the store-to-load
        # chain through them bounded these loops for short columns: four bins per pass.
        MX = np.empty(R, RAW.dtype)
        for j in range(D):
            off = offs[j]
            end = off + nbins[j]
            for r in range(R):
                MX[r] = RAW[off, r]
            k = off + 1
            while k + 4 <= end:
                for r in range(R):
                    m = max(max(RAW[k, r], RAW[k + 1, r]), max(RAW[k + 2, r], RAW[k + 3, r]))
                    MX[r] = m if m > MX[r] else MX[r]
                k += 4
            for k in range(k, end):
                for r in range(R):
                    v = RAW[k, r]
                    MX[r] = v if v > MX[r] else MX[r]
            for k in range(off, end):
                for r in range(R):
                    XS[k, r] = RAW[k, r] - MX[r]
        _expv(XS.reshape(O * R), GRAW.reshape(O * R), IB.reshape(O * R), O * R)
        SE = np.empty((D, R), np.float32)  # sum_k e^x_k per joint and step
        for j in range(D):
            off = offs[j]
            end = off + nbins[j]
            for r in range(R):
                SE[j, r] = GRAW[off, r]
            k = off + 1
            while k + 4 <= end:
                for r in range(R):
                    SE[j, r] += (GRAW[k, r] + GRAW[k + 1, r]) + (GRAW[k + 2, r] + GRAW[k + 3, r])
                k += 4
            for k in range(k, end):
                for r in range(R):
                    SE[j, r] += GRAW[k, r]
        for j in range(D):  # float32 logf: as exact as the float32 sums it takes
            for r in range(R):
                ROW[r] += PLOGP[j, r] + PSUM[j, r] * math.log(SE[j, r])
        PX = np.zeros(R, np.float32)  # sum_k p_k x_k over all joints (a tanh dimension's x is 0)
        k = 0
        while k + 4 <= O:
            for r in range(R):
                PX[r] += (TG[k, r] * XS[k, r] + TG[k + 1, r] * XS[k + 1, r]) + \
                    (TG[k + 2, r] * XS[k + 2, r] + TG[k + 3, r] * XS[k + 3, r])
            k += 4
        for k in range(k, O):
            for r in range(R):
                PX[r] += TG[k, r] * XS[k, r]
        for r in range(R):
            ROW[r] -= PX[r]
        if need_grad:  # dL/draw = (m p_sum / sum e^x) e^x / D - m p / D
            h = _C(inv_D)
            GJ = np.empty(R, np.float32)
            for j in range(D):
                off = offs[j]
                end = off + nbins[j]
                for r in range(R):
                    GJ[r] = _C(inv_D * PSUM[j, r]) / SE[j, r]
                for k in range(off, end):
                    for r in range(R):
                        GRAW[k, r] = GJ[r] * GRAW[k, r] - h * TG[k, r]
        for j in range(D):  # a group of one unit is a tanh dimension (a modality)
            off = offs[j]
            if nbins[j] != 1:
                continue
            for r in range(R):
                y = _tanh(RAW[off, r])
                mj = MASK[j, r]
                GRAW[off, r] = 0.0
                if mj != 0.0:
                    diff = y - TG[off, r]
                    ROW[r] += mj * 0.5 * diff * diff
                    if need_grad:
                        GRAW[off, r] = mj * diff * (1.0 - y * y) * inv_D
    else:
        # tanh(x) = 1 - 2 / (e^{2x} + 1) with every exp in one vectorised pass (as _tanh, in float64)
        EX = np.empty(O * R)
        EB = np.empty(O * R, np.int64)
        for j in range(O):
            for r in range(R):
                EX[j * R + r] = 2.0 * RAW[j, r]
        _exp64v(EX, O * R, EB)
        for j in range(O):
            for r in range(R):
                y = 1.0 - 2.0 / (EX[j * R + r] + 1.0)
                mj = MASK[j, r]  # the dimension's weight (core.modalities); 0 = not observed
                if mj != 0.0:
                    diff = y - TG[j, r]
                    ROW[r] += mj * 0.5 * diff * diff
                    GRAW[j, r] = mj * diff * (1.0 - y * y) * inv_D
                else:
                    GRAW[j, r] = 0.0
    rec = 0.0
    for r in range(R):
        ROWREC[r] = ROW[r] * inv_D
        rec += ROW[r]
    return rec * inv_D


@njit(cache=True, fastmath=False)
def _target_prep(softmax, tgt, mask, offs, nbins, col0, stride, PLOGP, PSUM, TG, MASK):
    """One window's target tgt [W, D, Kt] and weights mask [W, D] laid out as `_output_loss` takes
    them, step t in column col0 + t * stride (the batched kernels interleave windows): TG [O, R]
    (float32) the target as the outputs, MASK [D, R] the weights and, for softmax, PLOGP / PSUM
    [D, R] per joint sum_k p log p (log clamped at 1e-30 as the reference) and sum_k p. For softmax
    joints all three carry the step's weight (0 = not observed), so the output loss needs no
    per-joint weights; tanh dimensions keep their value and are weighted in the loss. Columns not
    written keep their zeros."""
    W, D = mask.shape
    Kt = tgt.shape[2]
    if softmax:  # every bin's log in one vectorised pass
        LG = np.empty(W * D * Kt)
        LB = np.empty(W * D * Kt, np.int64)
        for t in range(W):
            for j in range(D):
                for k in range(Kt):
                    p = tgt[t, j, k]
                    LG[(t * D + j) * Kt + k] = p if p > 1e-30 else 1e-30
        _log64v(LG, W * D * Kt, LB)
    for t in range(W):
        r = col0 + t * stride
        for j in range(D):
            MASK[j, r] = mask[t, j]
        if not softmax:
            for j in range(D):
                TG[j, r] = tgt[t, j, 0]
            continue
        for j in range(D):
            a = 0.0
            s = 0.0
            if nbins[j] == 1:  # a tanh dimension: its value, no distribution
                TG[offs[j], r] = tgt[t, j, 0]
                PLOGP[j, r] = 0.0
                PSUM[j, r] = 0.0
                continue
            mj = mask[t, j]
            lg = (t * D + j) * Kt
            for k in range(nbins[j]):
                p = tgt[t, j, k]
                TG[offs[j] + k, r] = mj * p
                if p != 0.0:
                    a += p * LG[lg + k]
                s += p
            PLOGP[j, r] = mj * a
            PSUM[j, r] = mj * s


@njit(cache=True)
def _padded(rows):
    """Columns of the output loss's arrays: rows rounded up to a multiple of 8, so the loops over
    columns run as whole vectors (a loop of 15 runs 7 steps scalar; 56 instead of 64 for 50 rows
    wastes less than rounding to 16)."""
    return (rows + 7) // 8 * 8


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _mmt(V, G, Wm):
    """V[t, r] = sum_c Wm[r, c] G[t, c] for every row t (V = G Wm^T): each weight row is read
    once per four rows of G, and the sums over c are reassociated so they vectorise."""
    T, C = G.shape
    R = Wm.shape[0]
    t = 0
    while t + 4 <= T:
        g0 = G[t]
        g1 = G[t + 1]
        g2 = G[t + 2]
        g3 = G[t + 3]
        for r in range(R):
            w = Wm[r]
            a0 = w[0] * 0
            a1 = a0
            a2 = a0
            a3 = a0
            for c in range(C):
                wc = w[c]
                a0 += wc * g0[c]
                a1 += wc * g1[c]
                a2 += wc * g2[c]
                a3 += wc * g3[c]
            V[t, r] = a0
            V[t + 1, r] = a1
            V[t + 2, r] = a2
            V[t + 3, r] = a3
        t += 4
    while t < T:
        g0 = G[t]
        for r in range(R):
            w = Wm[r]
            a0 = w[0] * 0
            for c in range(C):
                a0 += w[c] * g0[c]
            V[t, r] = a0
        t += 1


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _backward(W_recT, W_zd, inv_tau, W_pT, has_q, W_qT, W_o,
              use_eps, eps, first_unit, kl_w, kl_w1,
              Dd, MUQ, SQ, OKQ, MUP, LSP, OKP, GRAW, GDO, GMU, GLS):
    """BPTT through one window from the buffers `_forward` filled; writes dL/dA into GMU, GLS.
    The output layer's share of dL/dd_t, GRAW W_o^T, is taken for all steps at once (GDO)."""
    W, Z = MUQ.shape
    Dsum = W_recT.shape[0]
    d1 = W_o.shape[0]
    dt = W_recT.dtype
    _mmt(GDO, GRAW, W_o)
    gd = np.zeros(Dsum, dt)  # dL/dd_t from step t+1 (and later) terms
    gcarry = np.zeros(Dsum, dt)  # dL/dh_{t+1} (1 - it)
    gu = np.empty(Dsum, dt)
    gpq = np.empty(2 * Z, dt)
    gqq = np.empty(2 * Z, dt)
    for t in range(W - 1, -1, -1):
        dn = Dd[t + 1]
        for c in range(d1):
            gd[c] += GDO[t, c]
        for c in range(Dsum):
            gh = gd[c] * (1.0 - dn[c] * dn[c]) + gcarry[c]
            gu[c] = gh * inv_tau[c]
            gcarry[c] = gh * (1.0 - inv_tau[c])
        unit = first_unit and t == 0
        for i in range(Z):
            gz = _dot(gu, W_zd[i])
            w = kl_w1[i] if unit else kl_w[i]
            mq = MUQ[t, i]
            mp = MUP[t, i]
            sq = SQ[t, i]
            inv2p = math.exp(-2.0 * LSP[t, i])
            dm = w * (mq - mp) * inv2p
            gmu = gz + dm
            gls = w * (sq * sq * inv2p - 1.0)
            if use_eps:
                gls += gz * eps[t, i] * sq
            guq = gmu * (1.0 - mq * mq)
            glq = gls * OKQ[t, i]
            GMU[t, i] = guq
            GLS[t, i] = glq
            gqq[i] = guq
            gqq[Z + i] = glq
            gpq[i] = -dm * (1.0 - mp * mp)
            gpq[Z + i] = w * (1.0 - ((mq - mp) * (mq - mp) + sq * sq) * inv2p) * OKP[t, i]
        if t == 0:
            break
        for r in range(Dsum):
            gd[r] = 0.0
        _mva(gd, gu, W_recT, Dsum)
        _mva(gd, gpq, W_pT, 2 * Z)
        if has_q:
            _mva(gd, gqq, W_qT, 2 * Z)


@njit(cache=True)
def _buffers(W, Z, Dsum, d1, O, D, dt):
    """One window's activation and gradient buffers (see _forward / _backward for their use; the
    output loss's arrays have a column per step, padded)."""
    Wp = _padded(W)
    return (np.empty((W + 1, Dsum), dt), np.empty((W + 1, Dsum), dt),  # H, Dd
            np.empty((W, Z)), np.empty((W, Z)), np.empty((W, Z)), np.empty((W, Z)),  # MUQ, LSQ, SQ, OKQ
            np.empty((W, Z)), np.empty((W, Z)), np.empty((W, Z)),  # MUP, LSP, OKP
            np.empty((W, O), dt), np.empty((O, Wp), np.float32), np.empty((O, Wp), np.int32),  # RAW, XS, IB
            np.empty((W, O), dt), np.empty((W, d1), dt),  # GRAW, GDO
            np.empty((W, Z)), np.empty((W, Z)),  # GMU, GLS
            np.zeros((D, Wp)), np.zeros((D, Wp)), np.zeros((O, Wp), np.float32),  # PLOGP, PSUM, TG
            np.empty(Wp), np.zeros((O, Wp), dt), np.empty((O, Wp), dt),  # ROWREC, RAWT, GRAWT
            np.zeros((D, Wp)))  # MASK


# ------------------------------------------------------------------------------------------------
# batched windows: B windows advance together, so every product is matrix-matrix
# ------------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _mma(V, v0, X, x0, n_rows, Wm, n):
    """V[v0 + b, :nc] += X[x0 + b, :n] @ Wm[:n] for b < n_rows (nc = Wm.shape[1]). Blocks of four
    rows of X share each pass over four rows of Wm: each weight loaded feeds four multiply-adds,
    each load and store of V four. Rows are addressed by offset (not sliced) so they stay
    contiguous."""
    nc = Wm.shape[1]
    b = 0
    while b + 4 <= n_rows:
        va = V[v0 + b]
        vb = V[v0 + b + 1]
        vc = V[v0 + b + 2]
        vd = V[v0 + b + 3]
        xa = X[x0 + b]
        xb = X[x0 + b + 1]
        xc = X[x0 + b + 2]
        xd = X[x0 + b + 3]
        r = 0
        while r + 4 <= n:
            w0 = Wm[r]
            w1 = Wm[r + 1]
            w2 = Wm[r + 2]
            w3 = Wm[r + 3]
            a0, a1, a2, a3 = xa[r], xa[r + 1], xa[r + 2], xa[r + 3]
            b0, b1, b2, b3 = xb[r], xb[r + 1], xb[r + 2], xb[r + 3]
            c0, c1, c2, c3 = xc[r], xc[r + 1], xc[r + 2], xc[r + 3]
            e0, e1, e2, e3 = xd[r], xd[r + 1], xd[r + 2], xd[r + 3]
            for c in range(nc):
                u0 = w0[c]
                u1 = w1[c]
                u2 = w2[c]
                u3 = w3[c]
                va[c] += (a0 * u0 + a1 * u1) + (a2 * u2 + a3 * u3)
                vb[c] += (b0 * u0 + b1 * u1) + (b2 * u2 + b3 * u3)
                vc[c] += (c0 * u0 + c1 * u1) + (c2 * u2 + c3 * u3)
                vd[c] += (e0 * u0 + e1 * u1) + (e2 * u2 + e3 * u3)
            r += 4
        while r < n:
            w0 = Wm[r]
            a0, b0, c0, e0 = xa[r], xb[r], xc[r], xd[r]
            for c in range(nc):
                u0 = w0[c]
                va[c] += a0 * u0
                vb[c] += b0 * u0
                vc[c] += c0 * u0
                vd[c] += e0 * u0
            r += 1
        b += 4
    while b < n_rows:
        _mva(V[v0 + b], X[x0 + b], Wm, n)
        b += 1


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _mmt_cols(V, X, x0, n_rows, WmT):
    """V[r, b] += sum_c WmT[r, c] X[x0 + b, c] (c < WmT.shape[1]): the output layer's product for few
    output units (a 7-joint tanh output), one column per row of X, where `_mma`'s rows would be too
    short to vectorise; four rows of X per pass over WmT, sums over c reassociated so they vectorise."""
    R, C = WmT.shape
    b = 0
    while b + 4 <= n_rows:
        g0 = X[x0 + b]
        g1 = X[x0 + b + 1]
        g2 = X[x0 + b + 2]
        g3 = X[x0 + b + 3]
        for r in range(R):
            w = WmT[r]
            a0 = w[0] * 0
            a1 = a0
            a2 = a0
            a3 = a0
            for c in range(C):
                wc = w[c]
                a0 += wc * g0[c]
                a1 += wc * g1[c]
                a2 += wc * g2[c]
                a3 += wc * g3[c]
            V[r, b] += a0
            V[r, b + 1] += a1
            V[r, b + 2] += a2
            V[r, b + 3] += a3
        b += 4
    while b < n_rows:
        g0 = X[x0 + b]
        for r in range(R):
            w = WmT[r]
            a0 = w[0] * 0
            for c in range(C):
                a0 += w[c] * g0[c]
            V[r, b] += a0
        b += 1


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _log64v(x, n, ib):
    """x[k] = log(x[k]) for k < n, x[k] positive, normal and finite, in float64: Cephes' log (the
    mantissa m reduced to [sqrt(1/2), sqrt(2)), log(m) as m - 1 plus a [5/5] rational, ln 2 split in
    two so the exponent's share is exact; within 1 ulp of libm) as pure arithmetic, so the loop
    vectorises where libm log does not; ib: int64 scratch for the bits."""
    bits = x.view(np.int64)
    for k in range(n):
        ib[k] = (bits[k] & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FE0000000000000)  # m in [1/2, 1)
    mv = ib.view(np.float64)
    for k in range(n):
        e = np.float64(((bits[k] >> np.int64(52)) & np.int64(0x7FF)) - np.int64(1022))
        m = mv[k]
        if m < 0.70710678118654752440:
            e -= 1.0
            f = m + m - 1.0
        else:
            f = m - 1.0
        z = f * f
        p = ((((1.01875663804580931796e-4 * f + 4.97494994976747001425e-1) * f + 4.70579119878881725854e0) * f
              + 1.44989225341610930846e1) * f + 1.79368678507819816313e1) * f + 7.70838733755885391666e0
        q = ((((f + 1.12873587189167450590e1) * f + 4.52279145837532221105e1) * f + 8.29875266912776603211e1) * f
             + 7.11544750618563894466e1) * f + 2.31251620126765340583e1
        x[k] = f + (f * (z * p / q) - e * 2.121944400546905827679e-4 - 0.5 * z) + e * 0.693359375


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _exp64v(x, n, ib):
    """x[k] = exp(x[k]) for k < n in float64 (Cephes' exp: range reduction by ln 2 and a [2/3]
    rational in r^2, ~1 ulp; the input clamped to [-708, 709]) as pure arithmetic, so the loop
    vectorises where libm exp does not; 2^n built in the exponent bits (ib: int64 scratch). NaN
    propagates."""
    for k in range(n):
        v = x[k]
        c = v
        c = -708.0 if c < -708.0 else c
        c = 709.0 if c > 709.0 else c
        c = 0.0 if v != v else c
        fx = np.floor(c * 1.4426950408889634 + 0.5)
        r = c - fx * 6.93145751953125e-1 - fx * 1.42860682030941723212e-6
        rr = r * r
        px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1)
        qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
              + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
        y = 1.0 + 2.0 * px / (qx - px)
        x[k] = y if v == v else v
        ib[k] = (np.int64(fx) + np.int64(1023)) << np.int64(52)
    sc = ib.view(np.float64)
    for k in range(n):
        x[k] *= sc[k]


@njit(cache=True)
def _batch_buffers(nb, W, Z, Dsum, d1, O, D, ncat, nq, dt):
    """Buffers of nb windows run together, time-major: row t*nb + j belongs to window j at step t
    (H, Dd have W + 1 such blocks, the first the carried state); the output loss's arrays (RAW, XS,
    IB, GRAW; TG, PLOGP, PSUM, MASK) have a column per such row, padded with zero columns."""
    rows = W * nb
    Rp = _padded(rows)
    return (np.empty(((W + 1) * nb, Dsum), dt), np.empty(((W + 1) * nb, Dsum), dt),  # H, Dd
            np.empty((nb, ncat), dt), np.empty((nb, Z), dt),  # P (products of d_{t-1}), ZB (z_t)
            np.empty((rows, Z)), np.empty((rows, Z)), np.empty((rows, Z)), np.empty((rows, Z)),  # MUQ LSQ SQ OKQ
            np.empty((rows, Z)), np.empty((rows, Z)), np.empty((rows, Z)), np.empty((rows, Z)),  # MUP LSP OKP INV2P
            np.empty((O, Rp), dt), np.empty((O, Rp), np.float32), np.empty((O, Rp), np.int32),  # RAW XS IB
            np.empty((O, Rp), dt), np.empty((Rp, d1), dt),  # GRAW, GDO
            np.zeros((D, Rp)), np.zeros((D, Rp)), np.zeros((O, Rp), np.float32),  # PLOGP, PSUM, TG
            np.zeros((D, Rp)), np.empty(Rp),  # MASK, ROWREC
            np.empty((nb, Dsum), dt), np.empty((nb, Dsum), dt), np.empty((nb, Dsum), dt),  # GD, GC, GU
            np.empty((nb, Dsum + Z), dt), np.empty((nb, nq), dt),  # G1, GQ
            np.empty((rows, Z)), np.empty((rows, Z)), np.empty(nb),  # GMU, GLS, LOSS
            np.zeros((Rp, d1), dt))  # DX: the first layer's d of every row, contiguous


@njit(cache=True)
def _batch_targets(b0, nb, softmax, tgt, mask, offs, nbins, TG, PLOGP, PSUM, MASK):
    """Targets and masks of windows b0 .. b0+nb-1 in the time-major row order."""
    for j in range(nb):
        _target_prep(softmax, tgt[b0 + j], mask[b0 + j], offs, nbins, j, nb, PLOGP, PSUM, TG, MASK)


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _forward_batch(W_cat, b_cat, W_zd, inv_tau, W_o, W_oT, b_o, has_q, b0, nb, k, amu, als, use_eps, eps,
                   lmin, lmax, first_unit, softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                   H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, PLOGP, PSUM,
                   ROWREC, DX, LOSS, need_grad):
    """`_forward` for windows b0 .. b0+nb-1 at once (rows 0..nb-1 of H, Dd: their carried state,
    set by the caller); LOSS[j] = window b0+j's loss. One product per step serves the recurrence,
    the prior and the posterior: P = d_{t-1} [W_rec | W_p | W_q] + [b_h | b_p | b_q]. The output
    layer then runs once over every row, into RAW with a column per row (`_output_loss`'s layout)."""
    W = amu.shape[1]
    Z, Dsum = W_zd.shape
    d1, O = W_o.shape
    ncat = W_cat.shape[1]
    nbz = nb * Z
    EX = np.empty(4 * nbz)
    EXB = np.empty(4 * nbz, np.int64)
    for j in range(nb):
        LOSS[j] = 0.0
    blas = nb >= BLAS_MIN_ROWS
    TZ = np.empty((nb, Dsum), P.dtype)  # z_t W_zd, when BLAS computes it
    for t in range(W):
        r0 = t * nb
        if blas:
            np.dot(Dd[r0:r0 + nb], W_cat, P)
            for j in range(nb):
                p = P[j]
                for c in range(ncat):
                    p[c] += b_cat[c]
        else:
            for j in range(nb):
                p = P[j]
                for c in range(ncat):
                    p[c] = b_cat[c]
            _mma(P, 0, Dd, r0, nb, W_cat, Dsum)
        unit = first_unit and t == 0
        # the step's exps in one vectorised pass: EX holds 2 x mu_q-pre | log s_q | 2 x mu_p-pre |
        # -2 log s_p for all nb windows (tanh(x) = 1 - 2 / (e^{2x} + 1), as _tanh)
        for j in range(nb):
            b = b0 + j
            r = r0 + j
            p = P[j]
            f = j * Z
            for i in range(Z):
                if has_q:
                    qm = p[Dsum + 2 * Z + i] + amu[b, t, i]
                    LSQ[r, i], OKQ[r, i] = _clamp_ok(p[Dsum + 3 * Z + i] + als[b, t, i], lmin, lmax)
                else:
                    qm = amu[b, t, i]
                    LSQ[r, i], OKQ[r, i] = _clamp_ok(als[b, t, i], lmin, lmax)
                EX[f + i] = 2.0 * qm
                EX[nbz + f + i] = LSQ[r, i]
                if unit:  # N(0, I): e^0 gives mu_p = 0 and 1 / s_p^2 = 1
                    LSP[r, i] = 0.0
                    OKP[r, i] = 0.0
                    EX[2 * nbz + f + i] = 0.0
                    EX[3 * nbz + f + i] = 0.0
                else:
                    LSP[r, i], OKP[r, i] = _clamp_ok(p[Dsum + Z + i], lmin, lmax)
                    EX[2 * nbz + f + i] = 2.0 * p[Dsum + i]
                    EX[3 * nbz + f + i] = -2.0 * LSP[r, i]
        _exp64v(EX, 4 * nbz, EXB)
        for j in range(nb):
            b = b0 + j
            r = r0 + j
            f = j * Z
            klsum = 0.0
            for i in range(Z):
                mq = 1.0 - 2.0 / (EX[f + i] + 1.0)
                s = EX[nbz + f + i]
                mp = 1.0 - 2.0 / (EX[2 * nbz + f + i] + 1.0)
                inv2p = EX[3 * nbz + f + i]
                MUQ[r, i] = mq
                SQ[r, i] = s
                MUP[r, i] = mp
                INV2P[r, i] = inv2p  # 1 / sigma_p^2, again in the backward pass
                if use_eps:
                    ZB[j, i] = mq + s * eps[k, b, t, i]
                else:
                    ZB[j, i] = mq
                w = kl_w1[i] if unit else kl_w[i]
                dm = mq - mp
                klsum += w * (LSP[r, i] - LSQ[r, i] + (s * s + dm * dm) * inv2p * 0.5 - 0.5)
            LOSS[j] += klsum
        if blas:
            np.dot(ZB, W_zd, TZ)
            for j in range(nb):
                p = P[j]
                tz = TZ[j]
                for c in range(Dsum):
                    p[c] += tz[c]
        else:
            _mma(P, 0, ZB, 0, nb, W_zd, Z)
        for j in range(nb):
            hp = H[r0 + j]
            hn = H[r0 + nb + j]
            dn = Dd[r0 + nb + j]
            p = P[j]
            for c in range(Dsum):
                hv = hp[c] + inv_tau[c] * (p[c] - hp[c])
                hn[c] = hv
                dn[c] = _tanh32(hv)
    rows = W * nb
    Rp = RAW.shape[1]
    if blas or O >= 16:  # one product over every row: BLAS, also for a single window's W rows
        for r in range(rows):  # the first layer's d, contiguous for BLAS (padding rows stay 0)
            src = Dd[nb + r]
            dst = DX[r]
            for c in range(d1):
                dst[c] = src[c]
        # the product row by row (BLAS is faster that way round for few rows or few outputs) into
        # XS's memory, which the loss overwrites afterwards, then turned into RAW's columns
        rows_out = XS.reshape(Rp, O)
        np.dot(DX, W_o, rows_out)
        for r in range(Rp):
            for o in range(O):
                RAW[o, r] = rows_out[r, o] + b_o[o]
    else:
        for o in range(O):
            bo = b_o[o]
            for r in range(Rp):
                RAW[o, r] = bo
        _mmt_cols(RAW, Dd, nb, rows, W_oT)
    _output_loss(softmax, RAW, XS, IB, TG, MASK, offs, nbins, PLOGP, PSUM, GRAW, need_grad, ROWREC)
    for r in range(rows):
        LOSS[r % nb] += ROWREC[r]


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _backward_batch(M1, M2, W_oT, inv_tau, has_q, b0, nb, k, use_eps, eps, first_unit, kl_w, kl_w1,
                    Dd, MUQ, SQ, OKQ, MUP, INV2P, OKP, GRAW, GDO, GD, GC, GU, G1, GQ, GMU, GLS):
    """`_backward` for windows b0 .. b0+nb-1 at once; dL/dA into GMU, GLS (time-major rows).
    Two products per step: g_u [W_rec^T | W_zd^T] (M1) gives g_z now and g_u's share of g_d_{t-1};
    [g_p | g_q] [W_p^T ; W_q^T] (M2) adds the prior's and posterior's shares."""
    Dsum = M1.shape[0]
    Z = M1.shape[1] - Dsum
    W = GMU.shape[0] // nb
    O, d1 = W_oT.shape
    n1 = M1.shape[1]
    blas = nb >= BLAS_MIN_ROWS
    if blas or O >= 16:
        np.dot(GRAW.T, W_oT, GDO)  # GRAW has a column per row
    else:
        for r in range(W * nb):
            gdo = GDO[r]
            for c in range(d1):
                gdo[c] = 0.0
            for o in range(O):
                g = GRAW[o, r]
                w = W_oT[o]
                for c in range(d1):
                    gdo[c] += g * w[c]
    for j in range(nb):
        for c in range(Dsum):
            GD[j, c] = 0.0
            GC[j, c] = 0.0
    for t in range(W - 1, -1, -1):
        r0 = t * nb
        for j in range(nb):
            gd = GD[j]
            gc = GC[j]
            gu = GU[j]
            dn = Dd[r0 + nb + j]
            gdo = GDO[r0 + j]
            for c in range(d1):
                gd[c] += gdo[c]
            for c in range(Dsum):
                gh = gd[c] * (1.0 - dn[c] * dn[c]) + gc[c]
                gu[c] = gh * inv_tau[c]
                gc[c] = gh * (1.0 - inv_tau[c])
            if not blas:
                g1 = G1[j]
                for c in range(n1):
                    g1[c] = 0.0
        if blas:
            np.dot(GU, M1, G1)
        else:
            _mma(G1, 0, GU, 0, nb, M1, Dsum)
        unit = first_unit and t == 0
        for j in range(nb):
            r = r0 + j
            g1 = G1[j]
            gq = GQ[j]
            for i in range(Z):
                gz = g1[Dsum + i]
                w = kl_w1[i] if unit else kl_w[i]
                mq = MUQ[r, i]
                mp = MUP[r, i]
                sq = SQ[r, i]
                inv2p = INV2P[r, i]
                dm = w * (mq - mp) * inv2p
                gmu = gz + dm
                gls = w * (sq * sq * inv2p - 1.0)
                if use_eps:
                    gls += gz * eps[k, b0 + j, t, i] * sq
                guq = gmu * (1.0 - mq * mq)
                glq = gls * OKQ[r, i]
                GMU[r, i] = guq
                GLS[r, i] = glq
                gq[i] = -dm * (1.0 - mp * mp)
                gq[Z + i] = w * (1.0 - ((mq - mp) * (mq - mp) + sq * sq) * inv2p) * OKP[r, i]
                if has_q:
                    gq[2 * Z + i] = guq
                    gq[3 * Z + i] = glq
        if t == 0:
            break
        if blas:
            np.dot(GQ, M2, GD)
            for j in range(nb):
                for c in range(Dsum):
                    GD[j, c] += G1[j, c]
        else:
            for j in range(nb):
                for c in range(Dsum):
                    GD[j, c] = G1[j, c]
            _mma(GD, 0, GQ, 0, nb, M2, M2.shape[0])


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _adam_flat(a, m, v, g, alpha, sbc2, beta1, beta2, adam_eps):
    """One Adam step on flat a with moments m, v and gradient g (torch.optim.Adam's update:
    alpha = lr / (1 - beta1^step), sbc2 = sqrt(1 - beta2^step))."""
    for k in range(a.shape[0]):
        gk = g[k]
        m[k] = beta1 * m[k] + (1.0 - beta1) * gk
        v[k] = beta2 * v[k] + (1.0 - beta2) * gk * gk
        a[k] -= alpha * m[k] / (math.sqrt(v[k]) / sbc2 + adam_eps)


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _regress_batch(b0, b1, W_cat, b_cat, M1, M2, W_zd, inv_tau, W_o, W_oT, b_o, has_q,
                   h0, d0, a_mu, a_ls, m_mu, v_mu, m_ls, v_ls, step0, K, lr, beta1, beta2, adam_eps,
                   use_eps, eps, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w, kl_w1,
                   keep_best, losses, best_mu, best_ls, best_iter, pre_tg, pre_plogp, pre_psum, pre_mask, use_pre):
    """All K iterations for windows b0 .. b1-1 together. a_mu, a_ls, m_*, v_* [B, W, Z] are updated
    in place; losses [K, B]; with keep_best, best_mu / best_ls get each window's best iterate and
    best_iter[b] the last iteration at which it improved. use_pre (one window, nb = 1): the targets
    already prepared by the caller as `_target_prep` lays them out (pre_tg, pre_plogp, pre_psum,
    pre_mask, column t = step t), instead of preparing them from tgt and mask."""
    nb = b1 - b0
    _, W, Z = a_mu.shape
    Dsum = W_zd.shape[1]
    d1, O = W_o.shape
    (H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, GDO, PLOGP, PSUM, TG, MASK, ROWREC,
     GD, GC, GU, G1, GQ, GMU, GLS, LOSS, DX) = _batch_buffers(nb, W, Z, Dsum, d1, O, mask.shape[2], W_cat.shape[1],
                                                          M2.shape[0], W_zd.dtype)
    if use_pre:
        TG, PLOGP, PSUM, MASK = pre_tg, pre_plogp, pre_psum, pre_mask
    else:
        _batch_targets(b0, nb, softmax, tgt, mask, offs, nbins, TG, PLOGP, PSUM, MASK)
    for j in range(nb):
        for c in range(Dsum):
            H[j, c] = h0[b0 + j, c]
            Dd[j, c] = d0[b0 + j, c]
    best = np.full(nb, np.inf)
    GFLAT = np.empty((2, W * Z))
    for k in range(K):
        _forward_batch(W_cat, b_cat, W_zd, inv_tau, W_o, W_oT, b_o, has_q, b0, nb, k, a_mu, a_ls, use_eps, eps,
                       lmin, lmax, first_unit, softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                       H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, PLOGP, PSUM, ROWREC,
                       DX, LOSS, True)
        for j in range(nb):
            b = b0 + j
            losses[k, b] = LOSS[j]
            if keep_best and (k == 0 or LOSS[j] < best[j]):
                best[j] = LOSS[j]
                best_iter[b] = k
                best_mu[b, :, :] = a_mu[b]
                best_ls[b, :, :] = a_ls[b]
        _backward_batch(M1, M2, W_oT, inv_tau, has_q, b0, nb, k, use_eps, eps, first_unit, kl_w, kl_w1,
                        Dd, MUQ, SQ, OKQ, MUP, INV2P, OKP, GRAW, GDO, GD, GC, GU, G1, GQ, GMU, GLS)
        step = step0 + k + 1
        bc1 = 1.0 - beta1 ** step
        sbc2 = math.sqrt(1.0 - beta2 ** step)
        alpha = lr / bc1
        for j in range(nb):
            b = b0 + j
            # the window's gradient gathered into flat rows, so the update runs as one flat loop
            # over W x Z (sqrt and division vectorise) instead of W loops of Z
            for t in range(W):
                r = t * nb + j
                for i in range(Z):
                    GFLAT[0, t * Z + i] = GMU[r, i]
                    GFLAT[1, t * Z + i] = GLS[r, i]
            _adam_flat(a_mu[b].reshape(W * Z), m_mu[b].reshape(W * Z), v_mu[b].reshape(W * Z), GFLAT[0],
                       alpha, sbc2, beta1, beta2, adam_eps)
            _adam_flat(a_ls[b].reshape(W * Z), m_ls[b].reshape(W * Z), v_ls[b].reshape(W * Z), GFLAT[1],
                       alpha, sbc2, beta1, beta2, adam_eps)
    if keep_best and K > 0:
        _forward_batch(W_cat, b_cat, W_zd, inv_tau, W_o, W_oT, b_o, has_q, b0, nb, K - 1, a_mu, a_ls, use_eps, eps,
                       lmin, lmax, first_unit, softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                       H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, PLOGP, PSUM, ROWREC,
                       DX, LOSS, False)
        for j in range(nb):
            b = b0 + j
            if LOSS[j] < best[j]:
                best_iter[b] = K
                best_mu[b, :, :] = a_mu[b]
                best_ls[b, :, :] = a_ls[b]


@njit(cache=True, parallel=True)
def _regress_batch_par(n_parts, W_cat, b_cat, M1, M2, W_zd, inv_tau, W_o, W_oT, b_o, has_q,
                       h0, d0, a_mu, a_ls, m_mu, v_mu, m_ls, v_ls, step0, K, lr, beta1, beta2, adam_eps,
                       use_eps, eps, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w, kl_w1,
                       keep_best, losses, best_mu, best_ls, best_iter):
    """`_regress_batch` over n_parts contiguous groups of windows, one per thread."""
    B = a_mu.shape[0]
    no32, no64 = np.zeros((1, 1), np.float32), np.zeros((1, 1))
    for part in prange(n_parts):
        _regress_batch(part * B // n_parts, (part + 1) * B // n_parts, W_cat, b_cat, M1, M2, W_zd, inv_tau,
                       W_o, W_oT, b_o, has_q, h0, d0, a_mu, a_ls, m_mu, v_mu, m_ls, v_ls, step0, K, lr, beta1, beta2,
                       adam_eps, use_eps, eps, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w,
                       kl_w1, keep_best, losses, best_mu, best_ls, best_iter, no32, no64, no64, no64, False)


@njit(cache=True)
def _grad_batch(W_cat, b_cat, M1, M2, W_zd, inv_tau, W_o, W_oT, b_o, has_q, h0, d0, a_mu, a_ls, use_eps, eps,
                lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w, kl_w1, losses, g_mu, g_ls):
    """Window losses [B] and dL/dA by the batched kernels (eps [1, B, W, Z]): the testing hook."""
    B, W, Z = a_mu.shape
    Dsum = W_zd.shape[1]
    d1, O = W_o.shape
    (H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, GDO, PLOGP, PSUM, TG, MASK, ROWREC,
     GD, GC, GU, G1, GQ, GMU, GLS, LOSS, DX) = _batch_buffers(B, W, Z, Dsum, d1, O, mask.shape[2], W_cat.shape[1],
                                                          M2.shape[0], W_zd.dtype)
    _batch_targets(0, B, softmax, tgt, mask, offs, nbins, TG, PLOGP, PSUM, MASK)
    for j in range(B):
        for c in range(Dsum):
            H[j, c] = h0[j, c]
            Dd[j, c] = d0[j, c]
    _forward_batch(W_cat, b_cat, W_zd, inv_tau, W_o, W_oT, b_o, has_q, 0, B, 0, a_mu, a_ls, use_eps, eps,
                   lmin, lmax, first_unit, softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                   H, Dd, P, ZB, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, INV2P, RAW, XS, IB, GRAW, PLOGP, PSUM, ROWREC,
                   DX, LOSS, True)
    _backward_batch(M1, M2, W_oT, inv_tau, has_q, 0, B, 0, use_eps, eps, first_unit, kl_w, kl_w1,
                    Dd, MUQ, SQ, OKQ, MUP, INV2P, OKP, GRAW, GDO, GD, GC, GU, G1, GQ, GMU, GLS)
    for j in range(B):
        losses[j] = LOSS[j]
        for t in range(W):
            for i in range(Z):
                g_mu[j, t, i] = GMU[t * B + j, i]
                g_ls[j, t, i] = GLS[t * B + j, i]


@njit(cache=True)
def _grad(W_rec, W_recT, W_zd, b_h, inv_tau, W_p, W_pT, b_p, has_q, W_q, W_qT, b_q, W_o, b_o,
          h0, d0, a_mu, a_ls, use_eps, eps, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins,
          kl_w, kl_w1, losses, g_mu, g_ls):
    """Window loss [B] and its gradient w.r.t. A (no update): the testing hook for the BPTT."""
    B, W, Z = a_mu.shape
    (H, Dd, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, RAW, XS, IB, GRAW, GDO, _, _, PLOGP,
     PSUM, TG, ROWREC, RAWT, GRAWT, MASK) = _buffers(W, Z, W_rec.shape[0], W_o.shape[0], W_o.shape[1],
                                                      mask.shape[2], W_rec.dtype)
    dummy = np.zeros((W, Z))
    for b in range(B):
        _target_prep(softmax, tgt[b], mask[b], offs, nbins, 0, 1, PLOGP, PSUM, TG, MASK)
        ek = eps[b] if use_eps else dummy
        losses[b] = _forward(W_rec, W_zd, b_h, inv_tau, W_p, b_p, has_q, W_q, b_q, W_o, b_o,
                             h0[b], d0[b], a_mu[b], a_ls[b], use_eps, ek, lmin, lmax, first_unit,
                             softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                             H, Dd, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, RAW, RAWT, XS, IB, GRAW, GRAWT, PLOGP, PSUM,
                             ROWREC, True)
        _backward(W_recT, W_zd, inv_tau, W_pT, has_q, W_qT, W_o, use_eps, ek, first_unit,
                  kl_w, kl_w1, Dd, MUQ, SQ, OKQ, MUP, LSP, OKP, GRAW, GDO, g_mu[b], g_ls[b])


@njit(cache=True, fastmath=_FM, error_model="numpy")
def _window_pass(W_rec, W_recT, W_zd, b_h, inv_tau, W_p, W_pT, b_p, has_q, W_q, W_qT, b_q, W_o, b_o,
                 h0, d0, a_mu, a_ls, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w, kl_w1,
                 noise, use_noise, H, Dd, MUQ, RAW, KLU, PRE, ROLL, pre_tg, pre_plogp, pre_psum, pre_mask, use_pre):
    """The window once more at z = mu_q (window 0 of the batch), then S prior rollouts of P steps
    from its end (z = mu_p + sigma_p noise[s, p], or the mean path when not use_noise). Fills
    H, Dd [W + 1, Dsum], MUQ [W, Z], RAW [W, O], KLU [W, Z] (unweighted KL), PRE [2Z] (prior
    pre-activations after the window), ROLL [S, P, O]; returns the window loss. use_pre: the
    targets already prepared (as `_regress_batch`)."""
    _, W, Z = a_mu.shape
    Dsum = W_rec.shape[0]
    d1, O = W_o.shape
    (_, _, _, LSQ, SQ, OKQ, MUP, LSP, OKP, _, XS, IB, GRAW, _, _, _, PLOGP,
     PSUM, TG, ROWREC, RAWT, GRAWT, MASK) = _buffers(W, Z, Dsum, d1, O, mask.shape[2], W_rec.dtype)
    if use_pre:
        TG, PLOGP, PSUM, MASK = pre_tg, pre_plogp, pre_psum, pre_mask
    else:
        _target_prep(softmax, tgt[0], mask[0], offs, nbins, 0, 1, PLOGP, PSUM, TG, MASK)
    loss = _forward(W_rec, W_zd, b_h, inv_tau, W_p, b_p, has_q, W_q, b_q, W_o, b_o,
                    h0[0], d0[0], a_mu[0], a_ls[0], False, MUQ, lmin, lmax, first_unit,
                    softmax, TG, MASK, offs, nbins, kl_w, kl_w1,
                    H, Dd, MUQ, LSQ, SQ, OKQ, MUP, LSP, OKP, RAW, RAWT, XS, IB, GRAW, GRAWT, PLOGP, PSUM, ROWREC,
                    False)
    for t in range(W):
        for i in range(Z):
            dm = MUQ[t, i] - MUP[t, i]
            KLU[t, i] = LSP[t, i] - LSQ[t, i] + (SQ[t, i] ** 2 + dm * dm) * math.exp(-2.0 * LSP[t, i]) * 0.5 - 0.5
    for c in range(2 * Z):
        PRE[c] = b_p[c]
    _mva(PRE, Dd[W], W_p, Dsum)
    # the S rollouts advance together (one product per step for all of them); the output layer
    # runs once over every rollout step at the end
    S, P, _ = ROLL.shape
    dt = W_rec.dtype
    HS = np.empty((S, Dsum), dt)
    DS = np.empty((S, Dsum), dt)
    US = np.empty((S, Dsum), dt)
    QS = np.empty((S, 2 * Z), dt)
    ZS = np.empty((S, Z), dt)
    DOUT = np.empty((S * P, d1), dt)
    for s in range(S):
        for c in range(Dsum):
            HS[s, c] = H[W, c]
            DS[s, c] = Dd[W, c]
    for p in range(P):
        _times_plus(QS, DS, W_p, b_p, S >= BLAS_MIN_ROWS)
        for s in range(S):
            for i in range(Z):
                mu = _tanh(QS[s, i])
                if use_noise:
                    ls, _ = _clamp_ok(QS[s, Z + i], lmin, lmax)
                    ZS[s, i] = mu + math.exp(ls) * noise[s, p, i]
                else:
                    ZS[s, i] = mu
        _times_plus(US, DS, W_rec, b_h, S >= BLAS_MIN_ROWS)
        _mma(US, 0, ZS, 0, S, W_zd, Z)
        for s in range(S):
            for c in range(Dsum):
                hv = HS[s, c] + inv_tau[c] * (US[s, c] - HS[s, c])
                HS[s, c] = hv
                DS[s, c] = _tanh32(hv)
            for c in range(d1):
                DOUT[s * P + p, c] = DS[s, c]
    _times_plus(ROLL.reshape(S * P, O), DOUT, W_o, b_o, O >= 16 or S * P >= BLAS_MIN_ROWS)
    return loss


# ------------------------------------------------------------------------------------------------
# Python side
# ------------------------------------------------------------------------------------------------
def one_class_dims(coding) -> list[int]:
    """Categorical dimensions with a single class: their KL is identically 0, and their one unit
    would read as a tanh unit (bins == 1) in the kernels, so the kernels get them masked out."""
    return [j for j, (kind, n) in enumerate(zip(coding.dim_kinds, coding.bins)) if kind == "categorical" and n == 1]


def _np(t: torch.Tensor, dtype=np.float64) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)


def _w(t: torch.Tensor) -> np.ndarray:  # weights: in the compute dtype of the matrix products
    return _np(t, _F)


class _Prepared:
    """Weights and coding constants of one model as contiguous float64 arrays (and transposes)."""

    def __init__(self, problem: WindowProblem):
        fw, model = problem.fw, problem.model
        self.W_rec = _w(fw.W_rec)
        self.W_recT = np.ascontiguousarray(self.W_rec.T)
        self.W_zd = _w(fw.W_zd)
        self.b_h = _w(fw.b_h)
        self.inv_tau = _w(fw.inv_tau)
        self.W_p = _w(fw.W_p)
        self.W_pT = np.ascontiguousarray(self.W_p.T)
        self.b_p = _w(fw.b_p)
        self.has_q = fw.W_q is not None
        if self.has_q:
            self.W_q = _w(fw.W_q)
            self.b_q = _w(fw.b_q)
        else:
            self.W_q = np.zeros_like(self.W_p)
            self.b_q = np.zeros_like(self.b_p)
        self.W_qT = np.ascontiguousarray(self.W_q.T)
        self.W_o = _w(fw.W_o)
        self.b_o = _w(fw.b_o)
        # the batched kernels' fused products (see _forward_batch / _backward_batch)
        from_d = [self.W_rec, self.W_p] + ([self.W_q] if self.has_q else [])
        self.W_cat = np.ascontiguousarray(np.concatenate(from_d, axis=1))
        self.b_cat = np.ascontiguousarray(np.concatenate([self.b_h, self.b_p] + ([self.b_q] if self.has_q else [])))
        self.M1 = np.ascontiguousarray(np.concatenate([self.W_recT, self.W_zd.T], axis=1))
        self.W_oT = np.ascontiguousarray(self.W_o.T)
        self.M2 = np.ascontiguousarray(np.concatenate([self.W_pT] + ([self.W_qT] if self.has_q else []), axis=0))
        coding = model.coding
        self.softmax = coding.kind == "softmax"
        if self.softmax:
            self.offs = np.ascontiguousarray(coding.index[:, 0].cpu().numpy(), dtype=np.int64)
            self.nbins = np.asarray(coding.bins, dtype=np.int64)
        else:
            self.offs = np.zeros(coding.n_dims, dtype=np.int64)
            self.nbins = np.ones(coding.n_dims, dtype=np.int64)
        self.lmin = float(model.cfg.logsigma_min)
        self.lmax = float(model.cfg.logsigma_max)
        self.silent_dims = one_class_dims(coding)

    def weights(self):
        return (self.W_rec, self.W_recT, self.W_zd, self.b_h, self.inv_tau, self.W_p, self.W_pT, self.b_p,
                self.has_q, self.W_q, self.W_qT, self.b_q, self.W_o, self.b_o)

    def batch_weights(self):
        return (self.W_cat, self.b_cat, self.M1, self.M2, self.W_zd, self.inv_tau, self.W_o, self.W_oT, self.b_o,
                self.has_q)


class _WeightCache:
    """Per-model conversions, keyed on the weight tensors themselves (identity and in-place
    version counter), so repeated ticks of the same frozen model never re-copy."""

    def __init__(self, size: int = 4):
        self.size = size
        self.entries: list[tuple[tuple, tuple, tuple, _Prepared]] = []

    @staticmethod
    def _key(problem: WindowProblem):
        tensors = tuple(t for t in problem.fw if t is not None) + (problem.model.coding,)
        versions = tuple(getattr(t, "_version", 0) for t in tensors[:-1])
        cfg = (problem.model.cfg.logsigma_min, problem.model.cfg.logsigma_max)
        return tensors, versions + cfg

    def get(self, problem: WindowProblem) -> _Prepared:
        tensors, versions = self._key(problem)
        for i, (ts, vs, _, prep) in enumerate(self.entries):
            if len(ts) == len(tensors) and all(a is b for a, b in zip(ts, tensors)) and vs == versions:
                if i:
                    self.entries.insert(0, self.entries.pop(i))
                return prep
        prep = _Prepared(problem)
        self.entries.insert(0, (tensors, versions, None, prep))
        del self.entries[self.size:]
        return prep


def _problem_arrays(problem: WindowProblem, prep: _Prepared):
    target = _np(problem.target)
    if not prep.softmax:
        target = target[..., None]
    mask = _np(problem.joint_mask)
    if prep.silent_dims:
        mask[..., prep.silent_dims] = 0.0
    return (_np(problem.h0), _np(problem.d0), target, mask, _np(problem.kl_w), _np(problem.kl_w1))


class CpuBackend:
    name = "cpu"

    # fewest windows a thread gets: below this a thread's batch is too small for the matrix-matrix
    # products to pay (and on a shared 2-core machine a second thread often waits for its core)
    MIN_WINDOWS_PER_THREAD = 8

    def __init__(self, parallel: bool = True):
        """parallel: spread B > 1 windows over numba threads in groups of at least
        MIN_WINDOWS_PER_THREAD (one window is always single-threaded). B > 1 windows run batched:
        each step's products are matrix-matrix over the group."""
        self.parallel = parallel
        self._cache = _WeightCache()
        self._last: tuple | None = None  # (problem, versions, prepared weights, arrays, its tensors)

    def _inputs(self, problem: WindowProblem):
        """Prepared weights and the problem's arrays; a tick's `window_pass` reuses its `regress`
        conversions (same problem object, tensors not modified in place since)."""
        tensors = tuple(t for t in (problem.target, problem.joint_mask, problem.h0, problem.d0, problem.kl_w,
                                    problem.kl_w1, *problem.fw) if t is not None)
        versions = tuple(t._version for t in tensors)
        last = self._last
        if (last is not None and last[0] is problem and last[1] == versions and len(last[4]) == len(tensors)
                and all(a is b for a, b in zip(last[4], tensors))):
            return last[2], last[3]
        prep = self._cache.get(problem)
        arrays = _problem_arrays(problem, prep)
        self._last = (problem, versions, prep, arrays, tensors)
        return prep, arrays

    def batch_parts(self, B: int) -> int:
        """How many threads share B windows."""
        if not self.parallel:
            return 1
        import numba

        return max(1, min(numba.get_num_threads(), B // self.MIN_WINDOWS_PER_THREAD))

    def regress(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                adam: AdamState) -> WindowResult:
        prep, (h0, d0, target, mask, kl_w, kl_w1) = self._inputs(problem)
        K = int(problem.iterations)
        B = a_mu.shape[0]
        amu, als = _np(a_mu), _np(a_ls)
        m_mu, v_mu, m_ls, v_ls = _np(adam.m_mu), _np(adam.v_mu), _np(adam.m_ls), _np(adam.v_ls)
        use_eps = problem.eps is not None and K > 0
        eps = _np(problem.eps) if use_eps else np.zeros((1, 1, 1, 1))
        losses = np.zeros((K, B))
        keep = bool(problem.keep_best) and K > 0
        best_mu = np.empty_like(amu) if keep else np.empty((1, 1, 1))
        best_ls = np.empty_like(als) if keep else np.empty((1, 1, 1))
        best_iter = np.zeros(B, dtype=np.int64)
        b1, b2 = problem.betas
        rest = (h0, d0, amu, als, m_mu, v_mu, m_ls, v_ls, int(adam.step), K, float(problem.lr), float(b1),
                float(b2), float(problem.adam_eps), use_eps, eps, prep.lmin, prep.lmax,
                bool(problem.first_is_unit_prior), prep.softmax, target, mask, prep.offs, prep.nbins, kl_w,
                kl_w1, keep, losses, best_mu, best_ls, best_iter)
        # B = 1 too: the batched kernels' fused products and whole-window output layer beat the
        # one-window matrix-vector kernels at B = 1 as well (1.2-1.4x, bench cases a, b, c, g)
        parts = self.batch_parts(B)
        if parts > 1:
            _regress_batch_par(parts, *prep.batch_weights(), *rest)
        else:
            _regress_batch(0, B, *prep.batch_weights(), *rest, *_NO_PREPARED_TARGETS)
        like = a_mu.detach()

        def back(x):
            return torch.from_numpy(x).to(dtype=like.dtype, device=like.device)

        best_iteration = None
        if keep:
            amu, als = best_mu, best_ls
            best_iteration = int(best_iter.max())
        new_adam = AdamState(back(m_mu), back(v_mu), back(m_ls), back(v_ls), int(adam.step) + K)
        return WindowResult(back(amu), back(als), new_adam, back(losses), best_iteration)

    def window_pass(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor, horizon: int,
                    noise: torch.Tensor | None) -> WindowPass:
        """`pvrnn_ros.core.er.WindowPass` in one compiled call (window 0 of the batch)."""
        prep, (h0, d0, target, mask, kl_w, kl_w1) = self._inputs(problem)
        _, W, Z = a_mu.shape
        Dsum, O = prep.W_rec.shape[0], prep.W_o.shape[1]
        use_noise = noise is not None
        nz = _np(noise) if use_noise else np.zeros((1, horizon, Z))
        dt = prep.W_rec.dtype
        H, Dd = np.empty((W + 1, Dsum), dt), np.empty((W + 1, Dsum), dt)
        MUQ, RAW, KLU = np.empty((W, Z)), np.empty((W, O), dt), np.empty((W, Z))
        PRE, ROLL = np.empty(2 * Z, dt), np.empty((nz.shape[0], horizon, O), dt)
        loss = _window_pass(*prep.weights(), h0, d0, _np(a_mu), _np(a_ls), prep.lmin, prep.lmax,
                            bool(problem.first_is_unit_prior), prep.softmax, target, mask, prep.offs,
                            prep.nbins, kl_w, kl_w1, nz, use_noise, H, Dd, MUQ, RAW, KLU, PRE, ROLL,
                            *_NO_PREPARED_TARGETS)
        kl_sum = KLU.sum(0)
        z_sizes = problem.model.z_sizes
        starts = np.cumsum([0] + z_sizes[:-1])
        kl_by_layer = np.add.reduceat(kl_sum, starts) / np.asarray(z_sizes, dtype=np.float64)
        like = a_mu.detach()

        def back(x):
            return torch.from_numpy(x).to(dtype=like.dtype, device=like.device)

        return WindowPass(raw=back(RAW), free_energy=float(loss), kl_by_layer=back(kl_by_layer),
                          first=State(back(H[1:2]), back(Dd[1:2])), end=State(back(H[W:]), back(Dd[W:])),
                          mu_q_last=back(MUQ[-1]), prior_next=back(PRE), rollout_raw=back(ROLL))

    def open_stream(self, model, fw, kl_w: torch.Tensor, kl_w1: torch.Tensor, window: int):
        """The ER engine's window kept here, each tick one compiled call (`cpu_stream.CpuStream`)."""
        from .cpu_stream import CpuStream

        return CpuStream(self, model, fw, kl_w, kl_w1, window)

    def loss_and_grad(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                      eps: torch.Tensor | None, batched: bool | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window loss [B] and dL/dA_mu, dL/dA_ls [B, W, Z] at (a_mu, a_ls) with noise eps
        [B, W, Z] (or None): the hand-derived backward, for testing against autograd. batched:
        the B-window kernels `regress` runs (default for B > 1) or the one-window ones the final
        window pass runs (default for B = 1)."""
        return window_loss_and_grad(problem, a_mu, a_ls, eps, self._cache.get(problem), batched)


def window_loss_and_grad(problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                         eps: torch.Tensor | None, prep: _Prepared | None = None, batched: bool | None = None):
    """batched: use the B-window kernels (default: as `regress` does, for B > 1)."""
    prep = prep or _Prepared(problem)
    if batched is None:
        batched = a_mu.shape[0] > 1
    h0, d0, target, mask, kl_w, kl_w1 = _problem_arrays(problem, prep)
    amu, als = _np(a_mu), _np(a_ls)
    use_eps = eps is not None
    e = _np(eps) if use_eps else np.zeros((1, 1, 1))
    losses = np.zeros(amu.shape[0])
    g_mu, g_ls = np.zeros_like(amu), np.zeros_like(als)
    args = (prep.lmin, prep.lmax, bool(problem.first_is_unit_prior), prep.softmax, target, mask,
            prep.offs, prep.nbins, kl_w, kl_w1, losses, g_mu, g_ls)
    if batched:  # the kernels regress runs for B > 1 windows (eps as [1, B, W, Z])
        _grad_batch(*prep.batch_weights(), h0, d0, amu, als, use_eps, e[None] if use_eps else np.zeros((1, 1, 1, 1)),
                    *args)
    else:
        _grad(*prep.weights(), h0, d0, amu, als, use_eps, e, *args)
    like = a_mu.detach()
    return tuple(torch.from_numpy(x).to(dtype=like.dtype, device=like.device) for x in (losses, g_mu, g_ls))


def warmup() -> float:
    """Compile (or load from the on-disk cache) every specialisation a tick uses; returns seconds."""
    from pvrnn_ros.core.config import LayerConfig, ModelConfig
    from pvrnn_ros.core.model import PVRNN

    t0 = time.perf_counter()
    for output in ("tanh", "softmax"):
        for posterior in ("A", "d+A"):
            model = PVRNN(ModelConfig(layers=[LayerConfig(d=3, z=1)], output=output, softmax_bins=3,
                                      posterior=posterior), 2)
            fw = model.flat()
            fw = type(fw)(*[None if x is None else x.detach() for x in fw])
            Z = model.z_total
            for B in (1, 2):  # B = 2: the batched kernels, serial and (threads allowing) threaded
                st = model.zero_state(B)
                a = torch.zeros(B, 2, Z)
                problem = WindowProblem(model, fw, st.h, st.d, model.coding.target(torch.zeros(B, 2, 2)),
                                        torch.ones(B, 2, 2), model.kl_w, model.kl_w1, True,
                                        torch.zeros(1, B, 2, Z), 0.1, 1, keep_best=True)
                backend = CpuBackend()
                backend.regress(problem, a, a, AdamState.zeros_like(a))
                if B == 2:
                    threaded = CpuBackend()
                    threaded.MIN_WINDOWS_PER_THREAD = 1
                    if threaded.batch_parts(B) > 1:
                        threaded.regress(problem, a, a, AdamState.zeros_like(a))
                if B == 1:  # the tick's last pass: mean path and sampled rollouts
                    backend.window_pass(problem, a, a, 2, None)
                    backend.window_pass(problem, a, a, 2, torch.zeros(2, 2, Z))
    from . import cpu_stream

    cpu_stream.warmup()
    return time.perf_counter() - t0
