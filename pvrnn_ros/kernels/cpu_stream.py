"""The whole ER tick in one compiled call: the engine's window kept by the CPU backend.

`ErrorRegression` with the `cpu` backend hands its per-tick state to a `CpuStream`: the coded
targets and masks of the sliding window, A and its Adam moments, the state carried into the
window, the buffers of the final pass, all preallocated numpy arrays. Once the window is full a
tick is a single Numba call (`_stream_tick`): slide by one step, K Adam iterations on A
(`cpu._regress_batch` at B = 1), the window once more at the posterior mean and the prior rollouts
(`cpu._window_pass`), and the state carried to the next tick. Coding the new target and decoding
the outputs are compiled too; torch is left only for the random draws. While the window still grows (the first W ticks) the
arrays are reallocated one step longer each tick, in Python.

The generic path (`WindowProblem` -> `backend.regress` -> `backend.window_pass`) stays the
definition; tests check the stream against it and the autograd reference over streams of ticks.
"""
from __future__ import annotations

import math
import types

import numpy as np
import torch
from . import _kernel_cache  # noqa: F401  (before any cached kernel: one stamp for all kernel sources)
from numba import njit

from . import cpu


@njit(cache=True)
def _shift_cols(x, W):
    """x[:, :W-1] = x[:, 1:W] (the columns past W, padding, untouched)."""
    for r in range(x.shape[0]):
        for c in range(W - 1):
            x[r, c] = x[r, c + 1]


@njit(cache=True)
def _shift_rows(x, new_row):
    """x[0, :-1] = x[0, 1:]; x[0, -1] = new_row (x [1, W, ...] C-contiguous)."""
    flat = x.reshape(x.shape[1], -1)
    src = new_row.reshape(-1)
    W, n = flat.shape
    for t in range(W - 1):
        for c in range(n):
            flat[t, c] = flat[t + 1, c]
    for c in range(n):
        flat[W - 1, c] = src[c]


@njit(cache=True)
def _stream_tick(W_rec, W_recT, W_zd, b_h, inv_tau, W_p, W_pT, b_p, has_q, W_q, W_qT, b_q, W_o, b_o,
                 W_cat, b_cat, M1, M2, W_oT, h0, d0, tgt, mask, a_mu, a_ls, m_mu, v_mu, m_ls, v_ls,
                 slide, new_tgt, new_mask, new_mu, new_ls, next_h, next_d, zero_z,
                 adam_reset, step0, K, lr, b1, b2, adam_eps, use_eps, eps, lmin, lmax, first_unit,
                 softmax, offs, nbins, kl_w, kl_w1, keep_best, losses, best_mu, best_ls, best_iter,
                 noise, use_noise, H, Dd, MUQ, RAW, KLU, PRE, ROLL, kinds, units, refs, DEC, DEC_ROLL,
                 PTG, PPLOGP, PPSUM, PMASK, prepared):
    """One tick (weights: `_Prepared.weights()`, then the batched kernels' W_cat, b_cat, M1, M2,
    W_oT). slide: drop the window's oldest step and append (new_tgt, new_mask, new_mu, new_ls, zero
    Adam moments), starting from (next_h, next_d), the state after the old window's
    first step. Then K iterations, keep_best, the final pass and the rollouts, decoded into DEC [W, D]
    and DEC_ROLL [S * P, D]; next_h / next_d receive the state after the new window's first step.
    PTG, PPLOGP, PPSUM, PMASK hold the window's targets as `cpu._target_prep` lays them out, for
    the regression and the final pass alike; prepared[0] == 1 says they hold the window before this
    tick's slide, so only the new step is prepared (the rest shift by one column).
    Returns the final pass's free energy."""
    if slide:
        _shift_rows(tgt, new_tgt)
        _shift_rows(mask, new_mask)
        _shift_rows(a_mu, new_mu)
        _shift_rows(a_ls, new_ls)
        for m in (m_mu, v_mu, m_ls, v_ls):
            _shift_rows(m, zero_z)
        h0[0, :] = next_h
        d0[0, :] = next_d
        if prepared[0] == 1:  # the prepared targets slide too: only the new step is prepared
            W = tgt.shape[1]
            for A in (PPLOGP, PPSUM, PMASK):
                _shift_cols(A, W)
            _shift_cols(PTG, W)
            cpu._target_prep(softmax, tgt[0, W - 1:], mask[0, W - 1:], offs, nbins, W - 1, 1, PPLOGP, PPSUM, PTG,
                             PMASK)
    if adam_reset:
        m_mu[:] = 0.0
        v_mu[:] = 0.0
        m_ls[:] = 0.0
        v_ls[:] = 0.0
    if prepared[0] != 1:  # the whole window (growing, or the first tick of these buffers)
        cpu._target_prep(softmax, tgt[0], mask[0], offs, nbins, 0, 1, PPLOGP, PPSUM, PTG, PMASK)
        prepared[0] = 1
    cpu._regress_batch(0, 1, W_cat, b_cat, M1, M2, W_zd, inv_tau, W_o, W_oT, b_o, has_q,
                       h0, d0, a_mu, a_ls, m_mu, v_mu, m_ls, v_ls, step0, K, lr, b1, b2, adam_eps,
                       use_eps, eps, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w, kl_w1,
                       keep_best, losses, best_mu, best_ls, best_iter, PTG, PPLOGP, PPSUM, PMASK, True)
    if keep_best and K > 0:
        a_mu[:] = best_mu
        a_ls[:] = best_ls
    loss = cpu._window_pass(W_rec, W_recT, W_zd, b_h, inv_tau, W_p, W_pT, b_p, has_q, W_q, W_qT, b_q, W_o, b_o,
                            h0, d0, a_mu, a_ls, lmin, lmax, first_unit, softmax, tgt, mask, offs, nbins, kl_w,
                            kl_w1, noise, use_noise, H, Dd, MUQ, RAW, KLU, PRE, ROLL, PTG, PPLOGP, PPSUM, PMASK,
                            True)
    next_h[:] = H[1]
    next_d[:] = Dd[1]
    _decode_rows(RAW, kinds, units, nbins, refs, DEC)
    S, P, O = ROLL.shape
    _decode_rows(ROLL.reshape(S * P, O), kinds, units, nbins, refs, DEC_ROLL)
    return loss


# data dimension kinds, as the kernels see them
_SOFTMAX, _TANH, _CATEGORICAL = 0, 1, 2


@njit(cache=True)
def _encode_row(x, kinds, nbins, refs, sigma, out):
    """`Coding.target` of one normalised observation x [D] into out [D, Kt]: a softmax dimension's
    Gaussian soft code over its bins, a tanh dimension's value in bin 0, a categorical one's one-hot."""
    D, Kt = out.shape
    for j in range(D):
        v = x[j] if math.isfinite(x[j]) else 0.0
        for k in range(Kt):
            out[j, k] = 0.0
        if kinds[j] == _TANH:
            out[j, 0] = v
        elif kinds[j] == _CATEGORICAL:
            c = int(np.rint(v))
            if 0 <= c < nbins[j]:
                out[j, c] = 1.0
        else:
            top = -np.inf
            for k in range(nbins[j]):
                e = -((v - refs[j, k]) ** 2) / (2.0 * sigma[j] ** 2)
                out[j, k] = e
                top = max(top, e)
            total = 0.0
            for k in range(nbins[j]):
                out[j, k] = math.exp(out[j, k] - top)
                total += out[j, k]
            for k in range(nbins[j]):
                out[j, k] /= total


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def _decode_rows(raw, kinds, offs, nbins, refs, out):
    """`Coding.decode` of raw [N, O] into out [N, D]: a softmax dimension's expected bin value,
    a tanh one's tanh, a categorical one's most probable class (the first, on ties). The exps of a
    row's softmax dimensions, each shifted by its max bin, run as one vectorised float32 pass."""
    N, D = out.shape
    O = raw.shape[1]
    x = np.zeros(O, np.float32)
    e = np.empty(O, np.float32)
    ib = np.empty(O, np.int32)
    any_softmax = False
    for j in range(D):
        any_softmax = any_softmax or kinds[j] == _SOFTMAX
    for r in range(N):
        row = raw[r]
        if any_softmax:
            for j in range(D):
                if kinds[j] != _SOFTMAX:
                    continue
                o = offs[j]
                best = row[o]
                for k in range(1, nbins[j]):
                    best = row[o + k] if row[o + k] > best else best
                for k in range(nbins[j]):
                    x[o + k] = row[o + k] - best
            cpu._expv(x, e, ib, O)
        for j in range(D):
            o = offs[j]
            if kinds[j] == _TANH:
                out[r, j] = cpu._tanh(row[o])
            elif kinds[j] == _CATEGORICAL:
                best, arg = row[o], 0
                for k in range(1, nbins[j]):
                    if row[o + k] > best:
                        best, arg = row[o + k], k
                out[r, j] = arg
            else:
                total = 0.0
                value = 0.0
                for k in range(nbins[j]):
                    total += e[o + k]
                    value += e[o + k] * refs[j, k]
                out[r, j] = value / total


@njit(cache=True, error_model="numpy")
def _joint_report(decoded, decoded_rollouts, obs, observed, J, decay, gain, lo, hi, scale, sampled):
    """The joints' part of `ErrorRegression`'s report, compiled (`ErrorRegression._joint_report` is
    its definition): from the decoded window [W, D], rollouts [S, P, D], the window's observations
    and mask [W, D] (normalised), the residual correction decay^h (r + gain h v), then the
    prediction (the rollouts' mean; their std the spread, when sampled; else the mean path) and
    the newest step's reconstruction in raw units, and the window's reconstruction MSE.
    Returns (prediction [P, J], spread [P, J] (empty unless sampled), reconstruction [J], mse)."""
    W = decoded.shape[0]
    S, P, _ = decoded_rollouts.shape
    corr = np.zeros((P, J))
    if decay > 0.0:
        for j in range(J):
            if observed[W - 1, j] <= 0.0:
                continue
            r = obs[W - 1, j] - decoded[W - 1, j]
            v = 0.0
            if gain > 0.0 and W >= 2 and observed[W - 2, j] > 0.0:
                v = r - (obs[W - 2, j] - decoded[W - 2, j])
            for h in range(P):
                corr[h, j] = decay ** float(h + 1) * (r + gain * float(h + 1) * v)
    half = np.empty(J)
    for j in range(J):
        half[j] = 0.5 * (hi[j] - lo[j])
    prediction = np.empty((P, J))
    spread = np.empty((P if sampled else 0, J))
    for h in range(P):
        for j in range(J):
            if not sampled:
                prediction[h, j] = lo[j] + ((decoded_rollouts[0, h, j] + corr[h, j]) / scale + 1.0) * half[j]
                continue
            m = 0.0
            for s in range(S):
                m += lo[j] + ((decoded_rollouts[s, h, j] + corr[h, j]) / scale + 1.0) * half[j]
            m /= S
            q = 0.0
            for s in range(S):
                d = lo[j] + ((decoded_rollouts[s, h, j] + corr[h, j]) / scale + 1.0) * half[j] - m
                q += d * d
            prediction[h, j] = m
            spread[h, j] = math.sqrt(q / S)
    reconstruction = np.empty(J)
    for j in range(J):
        reconstruction[j] = lo[j] + (decoded[W - 1, j] / scale + 1.0) * half[j]
    total = 0.0
    count = 0
    for t in range(W):
        for j in range(J):
            if observed[t, j] > 0.0:
                e = decoded[t, j] - obs[t, j]
                total += e * e
                count += 1
    return prediction, spread, reconstruction, total / max(1, count)


class StreamTick:
    """What a compiled tick leaves for the engine (numpy; views into the stream's buffers, valid
    until the next tick)."""

    __slots__ = ("raw", "rollout_raw", "decoded", "decoded_rollouts", "free_energy", "kl_by_layer", "mu_q_last",
                 "losses")

    def __init__(self, raw, rollout_raw, decoded, decoded_rollouts, free_energy, kl_by_layer, mu_q_last, losses):
        self.raw = raw  # [W, O] output pre-activations over the window (float32)
        self.rollout_raw = rollout_raw  # [S, P, O]
        self.decoded = decoded  # [W, D] normalised values (float64)
        self.decoded_rollouts = decoded_rollouts  # [S, P, D]
        self.free_energy = free_energy
        self.kl_by_layer = kl_by_layer  # [L] summed over the window, unweighted KL / z_l
        self.mu_q_last = mu_q_last  # [Z]
        self.losses = losses  # [K]


class CpuStream:
    """An ER engine's window state as arrays, stepped one observation at a time (B = 1)."""

    def __init__(self, backend, model, fw, kl_w: torch.Tensor, kl_w1: torch.Tensor, window: int):
        self.model = model
        self.prep = backend._cache.get(types.SimpleNamespace(fw=fw, model=model))
        self.kl_w = cpu._np(kl_w)
        self.kl_w1 = cpu._np(kl_w1)
        self.window = int(window)
        coding = model.coding
        self.Z, self.D = model.z_total, coding.n_dims
        self.Dsum, self.O = self.prep.W_rec.shape[0], self.prep.W_o.shape[1]
        self.Kt = int(coding.refs.shape[1]) if self.prep.softmax else 1
        code = {"softmax": _SOFTMAX, "tanh": _TANH, "categorical": _CATEGORICAL}
        self.kinds = np.asarray([code[k] for k in coding.dim_kinds], dtype=np.int64)
        if self.prep.softmax:
            self.refs = coding.refs.double().numpy()
            self.sigma = coding.sigma.double().numpy()[:, 0].copy()
        else:
            self.refs, self.sigma = np.zeros((self.D, 1)), np.ones(self.D)
        # the first output unit of each data dimension (the kernels' offs are 0 for a tanh output)
        self.units = self.prep.offs if self.prep.softmax else np.arange(self.D, dtype=np.int64)
        self._z_sizes = np.asarray(model.z_sizes, dtype=np.float64)
        self._layer_starts = np.cumsum([0] + list(model.z_sizes[:-1]))
        self.reset()

    def reset(self) -> None:
        Z, D, Dsum = self.Z, self.D, self.Dsum
        self.n = 0
        self.tgt = np.zeros((1, 0, D, self.Kt))
        self.mask = np.zeros((1, 0, D))  # for the kernels: one-class dimensions silenced
        self.obs = np.zeros((0, D))  # normalised observations, 0 where missing
        self.observed = np.zeros((0, D))  # the mask as observed (dimension weight where observed)
        self.a_mu = np.zeros((1, 0, Z))
        self.a_ls = np.zeros((1, 0, Z))
        self.moments = [np.zeros((1, 0, Z)) for _ in range(4)]  # m_mu, v_mu, m_ls, v_ls
        self.adam_step = 0
        self.h0 = np.zeros((1, Dsum), np.float64)
        self.d0 = np.zeros((1, Dsum), np.float64)
        self.next_h = np.zeros(Dsum, np.float64)
        self.next_d = np.zeros(Dsum, np.float64)
        self.has_next = False  # a final pass has run: next_h / next_d / PRE hold its state
        self.at_stream_start = True
        self.zero_z = np.zeros(Z)
        self._alloc_pass_buffers(0, 1, 1)
        self._losses = {}
        self._dummy3 = np.empty((1, 1, 1))
        # stand-ins for arguments a tick does not use (no posterior noise, no rollout noise), and the
        # best-iterate index it writes: made once, not per tick
        self._no_eps = np.zeros((1, 1, 1, 1))
        self._no_noise: dict[int, np.ndarray] = {}
        self._best_k = np.zeros(1, dtype=np.int64)

    def _alloc_pass_buffers(self, W: int, S: int, P: int) -> None:
        dt = self.prep.W_rec.dtype
        self.H = np.empty((W + 1, self.Dsum), dt)
        self.Dd = np.empty((W + 1, self.Dsum), dt)
        self.MUQ = np.empty((W, self.Z))
        self.RAW = np.empty((W, self.O), dt)
        self.KLU = np.empty((W, self.Z))
        self.PRE = np.zeros(2 * self.Z, dt)  # read (copied) at the start of the tick that reallocates
        self.ROLL = np.empty((S, P, self.O), dt)
        self.DEC = np.empty((W, self.D))  # the decoded window and rollouts (normalised values)
        self.DEC_ROLL = np.empty((S * P, self.D))
        # the window's prepared targets (`_stream_tick`), padding columns zero; prepared[0] = 0: stale
        Wp = cpu._padded(W)
        self.PTG = np.zeros((self.O, Wp), np.float32)
        self.PPLOGP, self.PPSUM, self.PMASK = np.zeros((self.D, Wp)), np.zeros((self.D, Wp)), np.zeros((self.D, Wp))
        self.prepared = np.zeros(1, np.int64)

    def code_target(self, x: np.ndarray) -> np.ndarray:
        """One normalised observation [D] -> its target [D, Kt] (as `Coding.target`)."""
        if not self.prep.softmax:
            return x.reshape(self.D, 1).copy()
        out = np.empty((self.D, self.Kt))
        _encode_row(x, self.kinds, self.prep.nbins, self.refs, self.sigma, out)
        return out

    def step(self, obs_norm: np.ndarray, observed: np.ndarray, slide_init: str, K: int, lr: float,
             adam_reset: bool, keep_best: bool, eps: np.ndarray | None, noise: np.ndarray | None,
             horizon: int, regress: bool = True, forgetting: float = 1.0) -> StreamTick | None:
        """Append one observation (normalised [D], and its mask [D]) and run a tick (regress=False:
        only append, e.g. before a window that does not grow is full). forgetting: the steps already
        in the window weigh that much less than before (er.forgetting); the new one weighs its mask."""
        Z = self.Z
        if forgetting != 1.0 and self.n > 0:
            self.mask *= forgetting
            self.prepared[0] = 0  # every step's weight changed: prepare the whole window again
        if self.has_next and slide_init == "prior":
            new_mu, new_ls = self.PRE[:Z].astype(np.float64), self.PRE[Z:].astype(np.float64)
        elif self.n > 0:
            new_mu, new_ls = self.a_mu[0, -1].copy(), self.a_ls[0, -1].copy()
        else:
            new_mu = new_ls = np.zeros(Z)
        new_tgt = self.code_target(obs_norm)
        new_mask = observed.copy()
        if self.prep.silent_dims:
            new_mask[self.prep.silent_dims] = 0.0
        slide = self.n == self.window
        if slide:
            self.obs[:-1] = self.obs[1:]
            self.obs[-1] = obs_norm
            self.observed[:-1] = self.observed[1:]
            self.observed[-1] = observed
            self.at_stream_start = False
        else:  # growing: one step longer (the first W ticks only)
            self.n += 1
            self.tgt = np.concatenate([self.tgt, new_tgt[None, None]], 1)
            self.mask = np.concatenate([self.mask, new_mask[None, None]], 1)
            self.obs = np.concatenate([self.obs, obs_norm[None]])
            self.observed = np.concatenate([self.observed, observed[None]])
            self.a_mu = np.concatenate([self.a_mu, new_mu[None, None]], 1)
            self.a_ls = np.concatenate([self.a_ls, new_ls[None, None]], 1)
            self.moments = [np.concatenate([m, np.zeros((1, 1, Z))], 1) for m in self.moments]
        if not regress:
            self.prepared[0] = 0  # the window moved without a tick
            return None
        W = self.n
        S = 1 if noise is None else noise.shape[0]
        if self.H.shape[0] != W + 1 or self.ROLL.shape[:2] != (S, horizon):
            self._alloc_pass_buffers(W, S, horizon)
        if adam_reset:
            self.adam_step = 0
        losses = self._losses.get(K)
        if losses is None:
            losses = self._losses[K] = np.zeros((K, 1))
        keep = bool(keep_best) and K > 0
        best_mu = np.empty_like(self.a_mu) if keep else self._dummy3
        best_ls = np.empty_like(self.a_ls) if keep else self._dummy3
        use_eps = eps is not None and K > 0
        p = self.prep
        m_mu, v_mu, m_ls, v_ls = self.moments
        loss = _stream_tick(
            *p.weights(), p.W_cat, p.b_cat, p.M1, p.M2, p.W_oT, self.h0, self.d0, self.tgt, self.mask, self.a_mu, self.a_ls, m_mu, v_mu, m_ls, v_ls,
            slide, new_tgt, new_mask, new_mu, new_ls, self.next_h, self.next_d, self.zero_z,
            bool(adam_reset), int(self.adam_step), int(K), float(lr), 0.9, 0.999, 1e-8,
            use_eps, eps if use_eps else self._no_eps, p.lmin, p.lmax, bool(self.at_stream_start),
            p.softmax, p.offs, p.nbins, self.kl_w, self.kl_w1, keep, losses, best_mu, best_ls,
            self._best_k, noise if noise is not None else self._no_noise_for(horizon),
            noise is not None, self.H, self.Dd, self.MUQ, self.RAW, self.KLU, self.PRE, self.ROLL,
            self.kinds, self.units, self.refs, self.DEC, self.DEC_ROLL, self.PTG, self.PPLOGP, self.PPSUM, self.PMASK,
            self.prepared)
        self.adam_step += K
        self.has_next = True
        kl_by_layer = np.add.reduceat(self.KLU.sum(0), self._layer_starts) / self._z_sizes
        return StreamTick(self.RAW, self.ROLL, self.DEC, self.DEC_ROLL.reshape(S, horizon, self.D), float(loss),
                          kl_by_layer, self.MUQ[-1].copy(), losses[:, 0].copy())

    def _no_noise_for(self, horizon: int) -> np.ndarray:
        noise = self._no_noise.get(horizon)
        if noise is None:
            noise = self._no_noise[horizon] = np.zeros((1, horizon, self.Z))
        return noise

    def joint_report(self, tick: StreamTick, n_joints: int, residual_decay: float, residual_velocity: float,
                     normalizer, sampled: bool) -> tuple:
        """`ErrorRegression._joint_report` of this tick, compiled: (prediction, spread or None,
        reconstruction, mse)."""
        prediction, spread, reconstruction, mse = _joint_report(
            tick.decoded, tick.decoded_rollouts, self.obs, self.observed, n_joints, float(residual_decay),
            float(residual_velocity), normalizer.lo, normalizer.hi, float(normalizer.scale), bool(sampled))
        return prediction, spread if sampled else None, reconstruction, mse


def warmup() -> None:
    """Compile (or load) `_stream_tick` and the joints' report: a two-step window, one slide."""
    from pvrnn_ros.core.config import LayerConfig, ModelConfig
    from pvrnn_ros.core.model import PVRNN

    model = PVRNN(ModelConfig(layers=[LayerConfig(d=3, z=1)], output="softmax", softmax_bins=3), 2)
    fw = model.flat()
    fw = type(fw)(*[None if x is None else x.detach() for x in fw])
    stream = CpuStream(cpu.CpuBackend(), model, fw, model.kl_w, model.kl_w1, window=2)
    for _ in range(3):
        tick = stream.step(np.zeros(2), np.ones(2), "prior", 1, 0.1, False, True, np.zeros((1, 1, 2, 1)), None, 2)
    stream.joint_report(tick, 2, 0.9, 0.5, types.SimpleNamespace(lo=np.zeros(2), hi=np.ones(2), scale=0.8), False)
