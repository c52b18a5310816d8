"""Triton ER backend: ONE persistent kernel launch per tick.

grid = (B,): each program owns one window. It loads the (host-padded, cached) weights once into
registers, then runs all K iterations inside the kernel: the forward time loop, the
hand-derived BPTT (same equations as `pvrnn_ros.kernels.cpu`), and Adam on the window's A.
Per-step activations the backward needs go to a per-window scratch buffer in global memory.
Block sizes are `tl.constexpr` powers of two; odd sizes are handled with load/store masks.

The tick's last window pass and its S sampled prior rollouts (`window_pass`) are one more launch,
grid = (S,): each program repeats the W-step window (cheap next to S serial rollouts) and rolls
its own sample forward, instead of the ~10 small torch ops per step the torch version launches.

Supports tanh and softmax outputs, posterior "A" and "d+A", any number of layers, masks,
eps or None, keep_best, first_is_unit_prior. Runs on CUDA tensors, and on CPU tensors under
TRITON_INTERPRET=1 (how CI tests it; slow, for small problems only). fp32 throughout.
"""
from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except Exception as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the triton ER backend needs triton: {exc}") from exc

from pvrnn_ros.core.window import AdamState, WindowPass, WindowProblem, WindowResult
from pvrnn_ros.core.model import State


def _p2(n: int) -> int:
    return max(2, triton.next_power_of_2(int(n)))


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _clamp_ok(pre, lmin, lmax):
    ok = (pre >= lmin) & (pre <= lmax)
    return tl.minimum(tl.maximum(pre, lmin), lmax), tl.where(ok, 1.0, 0.0)


@triton.jit
def _window_forward(
    b, k, W, Z, D, Kmax, inv_D, lmin, lmax,
    Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid,
    h0_ptr, d0_ptr, amu_ptr, als_ptr, eps_ptr, tgt_ptr, mask_ptr, klw, klw1,
    sd_ptr, sz_ptr, sg_ptr, sh_ptr,
    Dsum,
    DP: tl.constexpr, ZP: tl.constexpr, JP: tl.constexpr, KP: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_Q: tl.constexpr, USE_EPS: tl.constexpr, FIRST_UNIT: tl.constexpr,
    STORE: tl.constexpr, STORE_H: tl.constexpr,
):
    """Forward over one window; returns (loss, h, d) at its end. With STORE, writes d_t (sd), the
    z-unit activations (sz: mu_q, ls_q, s_q, ok_q, mu_p, ls_p, ok_p) and dL/draw (sg) for the
    backward; with STORE_H also h_t (sh)."""
    rd = tl.arange(0, DP)
    rz = tl.arange(0, ZP)
    rj = tl.arange(0, JP)
    rk = tl.arange(0, KP)
    dmask = rd < Dsum
    zmask = rz < Z
    jk_mask = (rj[:, None] < D) & (rk[None, :] < Kmax)
    h = tl.load(h0_ptr + b * Dsum + rd, mask=dmask, other=0.0)
    d = tl.load(d0_ptr + b * Dsum + rd, mask=dmask, other=0.0)
    if STORE:
        tl.store(sd_ptr + rd, d)
    if STORE_H:
        tl.store(sh_ptr + rd, h)
    loss = tl.sum(tl.zeros([ZP], tl.float32), 0)
    for t in range(W):
        a_off = (b * W + t) * Z + rz
        amu = tl.load(amu_ptr + a_off, mask=zmask, other=0.0)
        als = tl.load(als_ptr + a_off, mask=zmask, other=0.0)
        if HAS_Q:
            amu += tl.sum(d[:, None] * Wqm, 0) + bqm
            als += tl.sum(d[:, None] * Wql, 0) + bql
        muq = _tanh(amu)
        lsq, okq = _clamp_ok(als, lmin, lmax)
        sq = tl.exp(lsq)
        if USE_EPS:
            e = tl.load(eps_ptr + ((k * tl.num_programs(0) + b) * W + t) * Z + rz, mask=zmask, other=0.0)
            z = muq + sq * e
        else:
            z = muq
        # prior from d_{t-1}
        mup = _tanh(tl.sum(d[:, None] * Wpm, 0) + bpm)
        lsp, okp = _clamp_ok(tl.sum(d[:, None] * Wpl, 0) + bpl, lmin, lmax)
        if FIRST_UNIT:
            unit = t == 0
        else:
            unit = t < 0
        mup = tl.where(unit, 0.0, mup)
        lsp = tl.where(unit, 0.0, lsp)
        okp = tl.where(unit, 0.0, okp)
        w = tl.where(unit, tl.load(klw1 + rz, mask=zmask, other=0.0), tl.load(klw + rz, mask=zmask, other=0.0))
        dm = muq - mup
        kl = w * (lsp - lsq + (sq * sq + dm * dm) * tl.exp(-2.0 * lsp) * 0.5 - 0.5)
        loss += tl.sum(tl.where(zmask, kl, 0.0), 0)
        # MTRNN update
        u = tl.sum(d[:, None] * Wrec, 0) + tl.sum(z[:, None] * Wzd, 0) + bh
        h = h + itau * (u - h)
        d = _tanh(h)
        # output, grouped per joint: raw [JP, KP]
        raw = tl.sum(d[:, None, None] * Wo, 0) + bo
        x_off = ((b * W + t) * D + rj[:, None]) * Kmax + rk[None, :]
        x = tl.load(tgt_ptr + x_off, mask=jk_mask, other=0.0)
        mj = tl.load(mask_ptr + (b * W + t) * D + rj, mask=rj < D, other=0.0)
        if SOFTMAX:
            # valid: 1 on the bins of a softmax / categorical dimension, 2 on a tanh dimension's
            # single unit (modalities beside softmax-coded joints)
            is_bin = valid > 0
            tanh_row = tl.max(valid, 1) > 1.5
            rm = tl.where(is_bin, raw, -1e30)
            mx = tl.max(rm, 1)
            ex = tl.where(is_bin, tl.exp(rm - mx[:, None]), 0.0)
            se = tl.sum(ex, 1)
            se = tl.where(se > 0, se, 1.0)
            lse = mx + tl.log(se)
            ps = tl.sum(x, 1)
            plogp = tl.sum(tl.where(x > 0, x * tl.log(tl.maximum(x, 1e-30)), 0.0), 1)
            pr = tl.sum(x * tl.where(is_bin, raw, 0.0), 1)
            y = _tanh(raw)
            diff = tl.where((mj[:, None] != 0) & is_bin, y - x, 0.0)
            rec_tanh = 0.5 * tl.sum(diff * diff, 1)
            rec = tl.sum(mj * tl.where(tanh_row, rec_tanh, plogp - pr + ps * lse), 0)
            graw = tl.where(tanh_row[:, None], diff * (1.0 - y * y),
                            (ps / se)[:, None] * ex - x) * (mj * inv_D)[:, None]
        else:
            y = _tanh(raw)
            diff = tl.where((mj[:, None] != 0) & jk_mask, y - x, 0.0)
            rec = 0.5 * tl.sum(mj * tl.sum(diff * diff, 1), 0)
            graw = diff * (1.0 - y * y) * (mj * inv_D)[:, None]
        loss += rec * inv_D
        if STORE:
            tl.store(sd_ptr + (t + 1) * DP + rd, d)
            zo = sz_ptr + t * ZP + rz
            step = W * ZP
            tl.store(zo, muq)
            tl.store(zo + step, lsq)
            tl.store(zo + 2 * step, sq)
            tl.store(zo + 3 * step, okq)
            tl.store(zo + 4 * step, mup)
            tl.store(zo + 5 * step, lsp)
            tl.store(zo + 6 * step, okp)
            tl.store(sg_ptr + t * JP * KP + rj[:, None] * KP + rk[None, :], graw)
        if STORE_H:
            tl.store(sh_ptr + (t + 1) * DP + rd, h)
    return loss, h, d


@triton.jit
def _load_weights(
    Wrec_p, Wzd_p, bh_p, itau_p, Wpm_p, Wpl_p, bpm_p, bpl_p, Wqm_p, Wql_p, bqm_p, bql_p, Wo_p, bo_p, valid_p,
    DP: tl.constexpr, ZP: tl.constexpr, JP: tl.constexpr, KP: tl.constexpr, HAS_Q: tl.constexpr,
):
    """Every weight into registers once (host-padded with zeros to the block sizes)."""
    rd = tl.arange(0, DP)
    rz = tl.arange(0, ZP)
    rj = tl.arange(0, JP)
    rk = tl.arange(0, KP)
    Wrec = tl.load(Wrec_p + rd[:, None] * DP + rd[None, :])
    Wzd = tl.load(Wzd_p + rz[:, None] * DP + rd[None, :])
    dz = rd[:, None] * ZP + rz[None, :]
    Wpm = tl.load(Wpm_p + dz)
    Wpl = tl.load(Wpl_p + dz)
    bpm = tl.load(bpm_p + rz)
    bpl = tl.load(bpl_p + rz)
    if HAS_Q:
        Wqm = tl.load(Wqm_p + dz)
        Wql = tl.load(Wql_p + dz)
        bqm = tl.load(bqm_p + rz)
        bql = tl.load(bql_p + rz)
    else:
        Wqm = Wpm
        Wql = Wpl
        bqm = bpm
        bql = bpl
    bh = tl.load(bh_p + rd)
    itau = tl.load(itau_p + rd)
    Wo = tl.load(Wo_p + rd[:, None, None] * (JP * KP) + rj[None, :, None] * KP + rk[None, None, :])
    bo = tl.load(bo_p + rj[:, None] * KP + rk[None, :])
    valid = tl.load(valid_p + rj[:, None] * KP + rk[None, :])  # 0 padding, 1 bin k of dimension j, 2 a tanh unit
    return Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid


@triton.jit
def _window_pass_kernel(
    Wrec_p, Wzd_p, bh_p, itau_p, Wpm_p, Wpl_p, bpm_p, bpl_p, Wqm_p, Wql_p, bqm_p, bql_p, Wo_p, bo_p, valid_p,
    h0_ptr, d0_ptr, amu_ptr, als_ptr, tgt_ptr, mask_ptr, klw, klw1, noise_ptr,
    loss_ptr, sd_base, sz_base, sg_base, sh_base, roll_ptr,
    W, Z, D, Kmax, Dsum, P, inv_D, lmin, lmax,
    DP: tl.constexpr, ZP: tl.constexpr, JP: tl.constexpr, KP: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_Q: tl.constexpr, USE_NOISE: tl.constexpr, FIRST_UNIT: tl.constexpr,
):
    """grid = (S,): every program runs window 0 once more at z = mu_q (program 0 keeps its
    activations, h and d), then its own P-step prior rollout from the window's end with
    z = mu_p + sigma_p noise[s, p] (or the mean path), output grouped per joint in roll [S, P, JP, KP]."""
    s = tl.program_id(0)
    rz = tl.arange(0, ZP)
    rj = tl.arange(0, JP)
    rk = tl.arange(0, KP)
    zmask = rz < Z
    (Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid) = _load_weights(
        Wrec_p, Wzd_p, bh_p, itau_p, Wpm_p, Wpl_p, bpm_p, bpl_p, Wqm_p, Wql_p, bqm_p, bql_p, Wo_p, bo_p, valid_p,
        DP, ZP, JP, KP, HAS_Q)
    # (programs other than 0 write their copy of the window's activations to their own scratch)
    loss, h, d = _window_forward(
        0, 0, W, Z, D, Kmax, inv_D, lmin, lmax,
        Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid,
        h0_ptr, d0_ptr, amu_ptr, als_ptr, amu_ptr, tgt_ptr, mask_ptr, klw, klw1,
        sd_base + s * (W + 1) * DP, sz_base + s * 7 * W * ZP, sg_base + s * W * JP * KP,
        sh_base + s * (W + 1) * DP, Dsum,
        DP, ZP, JP, KP, SOFTMAX, HAS_Q, False, FIRST_UNIT, True, True)
    tl.store(loss_ptr + s, loss)
    for p in range(P):
        mup = _tanh(tl.sum(d[:, None] * Wpm, 0) + bpm)
        if USE_NOISE:
            lsp, _ = _clamp_ok(tl.sum(d[:, None] * Wpl, 0) + bpl, lmin, lmax)
            e = tl.load(noise_ptr + (s * P + p) * Z + rz, mask=zmask, other=0.0)
            z = tl.where(zmask, mup + tl.exp(lsp) * e, 0.0)
        else:
            z = tl.where(zmask, mup, 0.0)
        u = tl.sum(d[:, None] * Wrec, 0) + tl.sum(z[:, None] * Wzd, 0) + bh
        h = h + itau * (u - h)
        d = _tanh(h)
        raw = tl.sum(d[:, None, None] * Wo, 0) + bo
        tl.store(roll_ptr + ((s * P + p) * JP + rj[:, None]) * KP + rk[None, :], raw)


@triton.jit
def _er_tick_kernel(
    Wrec_p, Wzd_p, bh_p, itau_p, Wpm_p, Wpl_p, bpm_p, bpl_p, Wqm_p, Wql_p, bqm_p, bql_p, Wo_p, bo_p, valid_p,
    h0_ptr, d0_ptr, amu_ptr, als_ptr, mmu_ptr, vmu_ptr, mls_ptr, vls_ptr,
    eps_ptr, tgt_ptr, mask_ptr, klw, klw1, alpha_ptr, sbc2_ptr,
    loss_ptr, bmu_ptr, bls_ptr, biter_ptr,
    sd_base, sz_base, sg_base, gr_base,
    W, Z, D, Kmax, Dsum, K, inv_D, lmin, lmax, b1, b2, adam_eps,
    DP: tl.constexpr, ZP: tl.constexpr, JP: tl.constexpr, KP: tl.constexpr,
    SOFTMAX: tl.constexpr, HAS_Q: tl.constexpr, USE_EPS: tl.constexpr, FIRST_UNIT: tl.constexpr,
    KEEP_BEST: tl.constexpr,
):
    b = tl.program_id(0)
    B = tl.num_programs(0)
    rd = tl.arange(0, DP)
    rz = tl.arange(0, ZP)
    rj = tl.arange(0, JP)
    rk = tl.arange(0, KP)
    zmask = rz < Z
    (Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid) = _load_weights(
        Wrec_p, Wzd_p, bh_p, itau_p, Wpm_p, Wpl_p, bpm_p, bpl_p, Wqm_p, Wql_p, bqm_p, bql_p, Wo_p, bo_p, valid_p,
        DP, ZP, JP, KP, HAS_Q)
    # per-window scratch
    sd_ptr = sd_base + b * (W + 1) * DP
    sz_ptr = sz_base + b * 7 * W * ZP
    sg_ptr = sg_base + b * W * JP * KP
    gr_ptr = gr_base + b * 2 * W * ZP
    zs = W * ZP
    best = tl.sum(tl.zeros([ZP], tl.float32), 0) + 3.0e38
    bit = tl.sum(tl.zeros([ZP], tl.int32), 0)
    for k in range(K):
        loss, _, _ = _window_forward(
            b, k, W, Z, D, Kmax, inv_D, lmin, lmax,
            Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid,
            h0_ptr, d0_ptr, amu_ptr, als_ptr, eps_ptr, tgt_ptr, mask_ptr, klw, klw1,
            sd_ptr, sz_ptr, sg_ptr, sd_ptr, Dsum,
            DP, ZP, JP, KP, SOFTMAX, HAS_Q, USE_EPS, FIRST_UNIT, True, False)
        tl.store(loss_ptr + k * B + b, loss)
        if KEEP_BEST:
            better = loss < best
            best = tl.where(better, loss, best)
            bit = tl.where(better, k, bit)
            zb = tl.where(better, Z, 0)
            for t in range(W):
                off = (b * W + t) * Z + rz
                tl.store(bmu_ptr + off, tl.load(amu_ptr + off, mask=zmask, other=0.0), mask=rz < zb)
                tl.store(bls_ptr + off, tl.load(als_ptr + off, mask=zmask, other=0.0), mask=rz < zb)
        tl.debug_barrier()
        # backward through time
        gd = tl.zeros([DP], tl.float32)
        gc = tl.zeros([DP], tl.float32)
        for i in range(W):
            t = W - 1 - i
            dn = tl.load(sd_ptr + (t + 1) * DP + rd)
            graw = tl.load(sg_ptr + t * JP * KP + rj[:, None] * KP + rk[None, :])
            gd += tl.sum(tl.sum(Wo * graw[None, :, :], 2), 1)
            gh = gd * (1.0 - dn * dn) + gc
            gu = gh * itau
            gc = gh * (1.0 - itau)
            gz = tl.sum(Wzd * gu[None, :], 1)
            zo = sz_ptr + t * ZP + rz
            muq = tl.load(zo)
            sq = tl.load(zo + 2 * zs)
            okq = tl.load(zo + 3 * zs)
            mup = tl.load(zo + 4 * zs)
            lsp = tl.load(zo + 5 * zs)
            okp = tl.load(zo + 6 * zs)
            if FIRST_UNIT:
                unit = t == 0
            else:
                unit = t < 0
            w = tl.where(unit, tl.load(klw1 + rz, mask=zmask, other=0.0), tl.load(klw + rz, mask=zmask, other=0.0))
            inv2p = tl.exp(-2.0 * lsp)
            dmq = muq - mup
            dm = w * dmq * inv2p
            gls = w * (sq * sq * inv2p - 1.0)
            if USE_EPS:
                e = tl.load(eps_ptr + ((k * B + b) * W + t) * Z + rz, mask=zmask, other=0.0)
                gls += gz * e * sq
            guq = (gz + dm) * (1.0 - muq * muq)
            glq = gls * okq
            tl.store(gr_ptr + t * ZP + rz, guq)
            tl.store(gr_ptr + zs + t * ZP + rz, glq)
            gpm = -dm * (1.0 - mup * mup)
            gpl = w * (1.0 - (dmq * dmq + sq * sq) * inv2p) * okp
            gd = tl.sum(Wrec * gu[None, :], 1) + tl.sum(Wpm * gpm[None, :], 1) + tl.sum(Wpl * gpl[None, :], 1)
            if HAS_Q:
                gd += tl.sum(Wqm * guq[None, :], 1) + tl.sum(Wql * glq[None, :], 1)
        tl.debug_barrier()
        # Adam on A (torch.optim.Adam semantics; bias corrections precomputed per iteration)
        alpha = tl.load(alpha_ptr + k)
        sbc2 = tl.load(sbc2_ptr + k)
        for t in range(W):
            off = (b * W + t) * Z + rz
            g = tl.load(gr_ptr + t * ZP + rz)
            m = b1 * tl.load(mmu_ptr + off, mask=zmask, other=0.0) + (1.0 - b1) * g
            v = b2 * tl.load(vmu_ptr + off, mask=zmask, other=0.0) + (1.0 - b2) * g * g
            a = tl.load(amu_ptr + off, mask=zmask, other=0.0) - alpha * m / (tl.sqrt(v) / sbc2 + adam_eps)
            tl.store(mmu_ptr + off, m, mask=zmask)
            tl.store(vmu_ptr + off, v, mask=zmask)
            tl.store(amu_ptr + off, a, mask=zmask)
            g = tl.load(gr_ptr + zs + t * ZP + rz)
            m = b1 * tl.load(mls_ptr + off, mask=zmask, other=0.0) + (1.0 - b1) * g
            v = b2 * tl.load(vls_ptr + off, mask=zmask, other=0.0) + (1.0 - b2) * g * g
            a = tl.load(als_ptr + off, mask=zmask, other=0.0) - alpha * m / (tl.sqrt(v) / sbc2 + adam_eps)
            tl.store(mls_ptr + off, m, mask=zmask)
            tl.store(vls_ptr + off, v, mask=zmask)
            tl.store(als_ptr + off, a, mask=zmask)
        tl.debug_barrier()
    if KEEP_BEST:
        loss, _, _ = _window_forward(
            b, K - 1, W, Z, D, Kmax, inv_D, lmin, lmax,
            Wrec, Wzd, bh, itau, Wpm, Wpl, bpm, bpl, Wqm, Wql, bqm, bql, Wo, bo, valid,
            h0_ptr, d0_ptr, amu_ptr, als_ptr, eps_ptr, tgt_ptr, mask_ptr, klw, klw1,
            sd_ptr, sz_ptr, sg_ptr, sd_ptr, Dsum,
            DP, ZP, JP, KP, SOFTMAX, HAS_Q, USE_EPS, FIRST_UNIT, False, False)
        better = loss < best
        bit = tl.where(better, K, bit)
        zb = tl.where(better, Z, 0)
        for t in range(W):
            off = (b * W + t) * Z + rz
            tl.store(bmu_ptr + off, tl.load(amu_ptr + off, mask=zmask, other=0.0), mask=rz < zb)
            tl.store(bls_ptr + off, tl.load(als_ptr + off, mask=zmask, other=0.0), mask=rz < zb)
        tl.store(biter_ptr + b, bit)


class _Padded:
    """One model's weights zero-padded to the kernel's block sizes, on one device (cached)."""

    def __init__(self, problem: WindowProblem, device: torch.device):
        fw, model = problem.fw, problem.model
        f32 = dict(dtype=torch.float32, device=device)
        Dsum, Z = fw.W_rec.shape[0], fw.W_zd.shape[0]
        coding = model.coding
        self.softmax = coding.kind == "softmax"
        D = coding.n_dims
        Kmax = max(coding.bins) if self.softmax else 1
        self.DP, self.ZP, self.JP, self.KP = _p2(Dsum), _p2(Z), _p2(D), (_p2(Kmax) if self.softmax else 1)
        self.Dsum, self.Z, self.D, self.Kmax = Dsum, Z, D, Kmax
        DP, ZP, JP, KP = self.DP, self.ZP, self.JP, self.KP

        def pad(t, shape):
            out = torch.zeros(shape, **f32)
            out[tuple(slice(0, s) for s in t.shape)] = t.detach().to(**f32)
            return out.contiguous()

        self.Wrec = pad(fw.W_rec, (DP, DP))
        self.Wzd = pad(fw.W_zd, (ZP, DP))
        self.bh = pad(fw.b_h, (DP,))
        self.itau = pad(fw.inv_tau, (DP,))
        self.Wpm, self.Wpl = pad(fw.W_p[:, :Z], (DP, ZP)), pad(fw.W_p[:, Z:], (DP, ZP))
        self.bpm, self.bpl = pad(fw.b_p[:Z], (ZP,)), pad(fw.b_p[Z:], (ZP,))
        self.has_q = fw.W_q is not None
        if self.has_q:
            self.Wqm, self.Wql = pad(fw.W_q[:, :Z], (DP, ZP)), pad(fw.W_q[:, Z:], (DP, ZP))
            self.bqm, self.bql = pad(fw.b_q[:Z], (ZP,)), pad(fw.b_q[Z:], (ZP,))
        else:
            self.Wqm, self.Wql, self.bqm, self.bql = self.Wpm, self.Wpl, self.bpm, self.bpl
        # output weights grouped per joint: Wo [DP, JP, KP] (rows >= d_1 are zero), bo [JP, KP]
        d1 = fw.W_o.shape[0]
        Wo = torch.zeros(DP, JP, KP, **f32)
        bo = torch.zeros(JP, KP, **f32)
        valid = torch.zeros(JP, KP, **f32)
        if self.softmax:
            offs = coding.index[:, 0].tolist()
            for j, n in enumerate(coding.bins):
                Wo[:d1, j, :n] = fw.W_o[:, offs[j]:offs[j] + n].detach().to(**f32)
                bo[j, :n] = fw.b_o[offs[j]:offs[j] + n].detach().to(**f32)
                valid[j, :n] = 2.0 if coding.dim_kinds[j] == "tanh" else 1.0
        else:
            Wo[:d1, :D, 0] = fw.W_o.detach().to(**f32)
            bo[:D, 0] = fw.b_o.detach().to(**f32)
            valid[:D, 0] = 1.0
        self.Wo, self.bo, self.valid = Wo.contiguous(), bo.contiguous(), valid.contiguous()
        # output o sits at [j, k] of the grouped layout: its flat index j * KP + k
        if self.softmax:
            flat = [j * KP + k for j, n in enumerate(coding.bins) for k in range(n)]
        else:
            flat = [j * KP for j in range(D)]
        self.flat_out = torch.tensor(flat, dtype=torch.long, device=device)
        self.lmin, self.lmax = float(model.cfg.logsigma_min), float(model.cfg.logsigma_max)

    def args(self):
        return (self.Wrec, self.Wzd, self.bh, self.itau, self.Wpm, self.Wpl, self.bpm, self.bpl,
                self.Wqm, self.Wql, self.bqm, self.bql, self.Wo, self.bo, self.valid)


class TritonBackend:
    name = "triton"

    def __init__(self, num_warps: int = 4):
        self.num_warps = num_warps
        self._cache: list[tuple[tuple, tuple, torch.device, _Padded]] = []

    def _padded(self, problem: WindowProblem, device: torch.device) -> _Padded:
        tensors = tuple(t for t in problem.fw if t is not None) + (problem.model.coding,)
        versions = tuple(getattr(t, "_version", 0) for t in tensors[:-1])
        for ts, vs, dev, pw in self._cache:
            if dev == device and vs == versions and len(ts) == len(tensors) and all(a is b for a, b in zip(ts, tensors)):
                return pw
        pw = _Padded(problem, device)
        self._cache.insert(0, (tensors, versions, device, pw))
        del self._cache[4:]
        return pw

    def window_pass(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor, horizon: int,
                    noise: torch.Tensor | None) -> WindowPass:
        """`pvrnn_ros.core.er.WindowPass` of window 0: one kernel launch (the window pass and S
        rollouts, one program per rollout) and a few tensor ops for the KL and the outputs."""
        device = a_mu.device
        pw = self._padded(problem, device)
        _, W, Z = a_mu.shape
        f32 = dict(dtype=torch.float32, device=device)

        def c(t):
            return t[:1].detach().to(**f32).contiguous()

        use_noise = noise is not None
        S = noise.shape[0] if use_noise else 1
        nz = noise.detach().to(**f32).contiguous() if use_noise else torch.zeros(1, **f32)
        DP, ZP, JP, KP = pw.DP, pw.ZP, pw.JP, pw.KP
        loss = torch.empty(S, **f32)
        sd, sh = torch.empty(S, W + 1, DP, **f32), torch.empty(S, W + 1, DP, **f32)
        sz, sg = torch.empty(S, 7, W, ZP, **f32), torch.empty(S, W, JP, KP, **f32)
        roll = torch.empty(S, horizon, JP, KP, **f32)
        _window_pass_kernel[(S,)](
            *pw.args(),
            c(problem.h0), c(problem.d0), c(a_mu), c(a_ls), c(problem.target), c(problem.joint_mask),
            problem.kl_w.detach().to(**f32).contiguous(), problem.kl_w1.detach().to(**f32).contiguous(), nz,
            loss, sd, sz, sg, sh, roll,
            W, Z, pw.D, pw.Kmax, pw.Dsum, horizon, 1.0 / pw.D, pw.lmin, pw.lmax,
            DP=DP, ZP=ZP, JP=JP, KP=KP, SOFTMAX=pw.softmax, HAS_Q=pw.has_q, USE_NOISE=use_noise,
            FIRST_UNIT=bool(problem.first_is_unit_prior), num_warps=self.num_warps,
        )
        model, fw, dt, Dsum = problem.model, problem.fw, a_mu.dtype, pw.Dsum
        d_seq, h_seq = sd[0, :, :Dsum].to(dt), sh[0, :, :Dsum].to(dt)
        mu_q, ls_q, s_q, mu_p, ls_p = (sz[0, i, :, :Z].to(dt) for i in (0, 1, 2, 4, 5))
        kl = ls_p - ls_q + (s_q * s_q + (mu_q - mu_p) ** 2) * torch.exp(-2.0 * ls_p) * 0.5 - 0.5  # [W, Z]
        sizes = torch.tensor(model.z_sizes, dtype=dt, device=device)
        kl_by_layer = torch.zeros(len(model.z_sizes), dtype=dt, device=device).index_add(0, model.z_layer, kl.sum(0))
        end = State(h_seq[W:], d_seq[W:])
        d1 = fw.W_o.shape[0]
        return WindowPass(raw=d_seq[1:, :d1] @ fw.W_o + fw.b_o, free_energy=float(loss[0]),
                          kl_by_layer=kl_by_layer / sizes, first=State(h_seq[1:2], d_seq[1:2]), end=end,
                          mu_q_last=mu_q[-1], prior_next=(end.d @ fw.W_p + fw.b_p)[0],
                          rollout_raw=roll.reshape(S, horizon, JP * KP)[..., pw.flat_out].to(dt))

    def regress(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                adam: AdamState) -> WindowResult:
        device = a_mu.device
        pw = self._padded(problem, device)
        B, W, Z = a_mu.shape
        K = int(problem.iterations)
        f32 = dict(dtype=torch.float32, device=device)

        def c(t):
            return t.detach().to(**f32).contiguous().clone()

        amu, als = c(a_mu), c(a_ls)
        mmu, vmu, mls, vls = c(adam.m_mu), c(adam.v_mu), c(adam.m_ls), c(adam.v_ls)
        losses = torch.zeros(K, B, **f32)
        keep = bool(problem.keep_best) and K > 0
        if K == 0:
            return WindowResult(amu.to(a_mu.dtype), als.to(a_ls.dtype),
                                AdamState(mmu, vmu, mls, vls, adam.step), losses, None)
        use_eps = problem.eps is not None
        eps = c(problem.eps) if use_eps else torch.zeros(1, **f32)
        tgt = problem.target.detach().to(**f32).contiguous()
        mask = problem.joint_mask.detach().to(**f32).contiguous()
        h0 = problem.h0.detach().to(**f32).contiguous()
        d0 = problem.d0.detach().to(**f32).contiguous()
        klw = problem.kl_w.detach().to(**f32).contiguous()
        klw1 = problem.kl_w1.detach().to(**f32).contiguous()
        b1, b2 = (float(x) for x in problem.betas)
        steps = [adam.step + k + 1 for k in range(K)]
        alpha = torch.tensor([problem.lr / (1.0 - b1**s) for s in steps], **f32)
        sbc2 = torch.tensor([math.sqrt(1.0 - b2**s) for s in steps], **f32)
        bmu = amu.clone() if keep else torch.zeros(1, **f32)
        bls = als.clone() if keep else torch.zeros(1, **f32)
        biter = torch.zeros(B, dtype=torch.int32, device=device)
        DP, ZP, JP, KP = pw.DP, pw.ZP, pw.JP, pw.KP
        sd = torch.empty(B, W + 1, DP, **f32)
        sz = torch.empty(B, 7, W, ZP, **f32)
        sg = torch.empty(B, W, JP, KP, **f32)
        gr = torch.empty(B, 2, W, ZP, **f32)
        _er_tick_kernel[(B,)](
            *pw.args(),
            h0, d0, amu, als, mmu, vmu, mls, vls, eps, tgt, mask, klw, klw1, alpha, sbc2,
            losses, bmu, bls, biter, sd, sz, sg, gr,
            W, Z, pw.D, pw.Kmax, pw.Dsum, K, 1.0 / pw.D, pw.lmin, pw.lmax, b1, b2, float(problem.adam_eps),
            DP=DP, ZP=ZP, JP=JP, KP=KP, SOFTMAX=pw.softmax, HAS_Q=pw.has_q, USE_EPS=use_eps,
            FIRST_UNIT=bool(problem.first_is_unit_prior), KEEP_BEST=keep, num_warps=self.num_warps,
        )
        best_iteration = None
        if keep:
            amu, als = bmu, bls
            best_iteration = int(biter.max())
        dt = a_mu.dtype
        new_adam = AdamState(mmu.to(dt), vmu.to(dt), mls.to(dt), vls.to(dt), int(adam.step) + K)
        return WindowResult(amu.to(dt), als.to(dt), new_adam, losses.to(dt), best_iteration)
