"""PV-RNN (Ahmadi & Tani 2019) in pure PyTorch.

Parameters live per layer (readable, checkpointed by name); every forward pass first
assembles them into one flat layout (`FlatWeights`) where all layers are a single block
matrix, so each time step costs a handful of ops whatever the number of layers. The fast
kernels in `pvrnn_ros.kernels` consume the same flat layout.

Notation (flat, all layers concatenated, layer 1 = fastest first):
  Dsum = sum_l d_l deterministic units, Z = sum_l z_l stochastic units, O = output units.
  h_t = h_{t-1} + (1/tau) * (d_{t-1} @ W_rec + z_t @ W_zd + b_h - h_{t-1}),  d_t = tanh(h_t)
  (the MTRNN update (1 - 1/tau) h + (1/tau) u, written as one fused step)
  prior   [mu_p | log sigma_p] = d_{t-1} @ W_p + b_p, mu_p = tanh(.), N(0, I) at t = 1
  posterior mu_q = tanh(A_mu [+ d_{t-1} @ W_q + b_q]), log sigma_q = A_ls [+ ...]
  output  raw_t = d^1_t @ W_o + b_o
State is explicit: (h, d), each [B, Dsum]; nothing is kept on the module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .coding import OutputCoding
from .config import ModelConfig


class FlatWeights(NamedTuple):
    W_rec: torch.Tensor  # [Dsum, Dsum]  recurrent, top-down and bottom-up blocks
    W_zd: torch.Tensor  # [Z, Dsum]     block diagonal
    b_h: torch.Tensor  # [Dsum]
    inv_tau: torch.Tensor  # [Dsum]
    W_p: torch.Tensor  # [Dsum, 2Z]    block diagonal, columns [mu | log sigma]
    b_p: torch.Tensor  # [2Z]
    W_q: torch.Tensor | None  # [Dsum, 2Z] for posterior "d+A", else None
    b_q: torch.Tensor | None
    W_o: torch.Tensor  # [d_1, O]
    b_o: torch.Tensor  # [O]


class State(NamedTuple):
    h: torch.Tensor  # [B, Dsum]
    d: torch.Tensor  # [B, Dsum]


@dataclass
class ForwardOut:
    d: torch.Tensor  # [B, T, Dsum]  d_t for t = 1..T
    h_last: torch.Tensor  # [B, Dsum]
    states_h: torch.Tensor | None  # [B, T, Dsum] if requested
    mu_q: torch.Tensor  # [B, T, Z]
    ls_q: torch.Tensor
    mu_p: torch.Tensor
    ls_p: torch.Tensor
    prior_pre_mu: torch.Tensor  # [B, T, Z] pre-activation of mu_p (for sliding A in ER)
    raw: torch.Tensor  # [B, T, O] output before decoding


class PVRNNLayer(nn.Module):
    def __init__(self, d: int, z: int, d_above: int | None, d_below: int | None, posterior: str):
        super().__init__()
        self.rec = nn.Linear(d, d)  # W_dd d_{t-1} + b
        self.z_in = nn.Linear(z, d, bias=False)  # W_zd z_t
        self.top = nn.Linear(d_above, d, bias=False) if d_above else None
        self.bottom = nn.Linear(d_below, d, bias=False) if d_below else None
        self.prior = nn.Linear(d, 2 * z)  # [mu_p pre | log sigma_p]
        self.posterior = nn.Linear(d, 2 * z) if posterior == "d+A" else None
        with torch.no_grad():  # start near the unit Gaussian rather than a random one
            self.prior.weight.mul_(0.1)
            self.prior.bias.zero_()
            if self.posterior is not None:
                self.posterior.weight.mul_(0.1)
                self.posterior.bias.zero_()


class PVRNN(nn.Module):
    """The network's weights. Sequence-specific adaptive vectors A live in `AdaptiveVectors`."""

    def __init__(self, cfg: ModelConfig, n_joints: int, extra_outputs: list[tuple[str, int]] | None = None):
        """extra_outputs: the coding of each data dimension after the joints (modalities), as
        `ModalityLayout.coding_extra()` gives it; None for a joints-only model."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.n_joints = n_joints
        self.d_sizes = [layer.d for layer in cfg.layers]
        self.z_sizes = [layer.z for layer in cfg.layers]
        L = len(cfg.layers)
        self.layers = nn.ModuleList(
            PVRNNLayer(
                d=cfg.layers[i].d,
                z=cfg.layers[i].z,
                d_above=cfg.layers[i + 1].d if i + 1 < L else None,
                d_below=cfg.layers[i - 1].d if (cfg.bottom_up and i > 0) else None,
                posterior=cfg.posterior,
            )
            for i in range(L)
        )
        self.coding = OutputCoding(cfg.output, n_joints, cfg.softmax_bins, cfg.softmax_sigma, extra_outputs)
        self.out = nn.Linear(cfg.layers[0].d, self.coding.out_dim)
        tau = torch.cat([torch.full((l.d,), float(l.tau)) for l in cfg.layers])
        self.register_buffer("inv_tau", 1.0 / tau)
        # per-unit KL weights w_l / z_l (t >= 2) and w1_l / z_l (t = 1)
        self.register_buffer("kl_w", torch.cat([torch.full((l.z,), l.w / l.z) for l in cfg.layers]))
        self.register_buffer("kl_w1", torch.cat([torch.full((l.z,), l.w1 / l.z) for l in cfg.layers]))
        self.register_buffer("z_layer", torch.cat([torch.full((l.z,), i) for i, l in enumerate(cfg.layers)]).long())

    @property
    def d_total(self) -> int:
        return sum(self.d_sizes)

    @property
    def z_total(self) -> int:
        return sum(self.z_sizes)

    def kl_weights(self, meta_prior: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-unit KL weights; `meta_prior` overrides w per layer (ER-time w)."""
        if meta_prior is None:
            return self.kl_w, self.kl_w1
        w = torch.cat([torch.full((z,), float(w) / z) for w, z in zip(meta_prior, self.z_sizes)])
        return w.to(self.kl_w), self.kl_w1

    def zero_state(self, batch: int) -> State:
        zeros = self.inv_tau.new_zeros(batch, self.d_total)
        return State(zeros, zeros.clone())

    def flat(self) -> FlatWeights:
        """Assemble per-layer parameters into the flat block layout (differentiable)."""
        L = len(self.layers)
        ds, zs = self.d_sizes, self.z_sizes
        dev, dt = self.inv_tau.device, self.inv_tau.dtype
        rows = []  # W_rec rows are grouped by the *source* layer of d_{t-1}
        for src in range(L):
            blocks = []
            for dst in range(L):
                layer = self.layers[dst]
                if src == dst:
                    blocks.append(layer.rec.weight.t())
                elif src == dst + 1 and layer.top is not None:
                    blocks.append(layer.top.weight.t())
                elif src == dst - 1 and layer.bottom is not None:
                    blocks.append(layer.bottom.weight.t())
                else:
                    blocks.append(torch.zeros(ds[src], ds[dst], device=dev, dtype=dt))
            rows.append(torch.cat(blocks, dim=1))
        W_rec = torch.cat(rows, dim=0)
        W_zd = torch.block_diag(*[layer.z_in.weight.t() for layer in self.layers])
        b_h = torch.cat([layer.rec.bias for layer in self.layers])

        def two_headed(linears):  # per-layer [d_l -> 2 z_l] into [Dsum -> (Z mu | Z logsigma)]
            mu = torch.block_diag(*[lin.weight[: z].t() for lin, z in zip(linears, zs)])
            ls = torch.block_diag(*[lin.weight[z:].t() for lin, z in zip(linears, zs)])
            b = torch.cat([lin.bias[:z] for lin, z in zip(linears, zs)]
                          + [lin.bias[z:] for lin, z in zip(linears, zs)])
            return torch.cat([mu, ls], dim=1), b

        W_p, b_p = two_headed([layer.prior for layer in self.layers])
        if self.cfg.posterior == "d+A":
            W_q, b_q = two_headed([layer.posterior for layer in self.layers])
        else:
            W_q = b_q = None
        return FlatWeights(W_rec, W_zd, b_h, self.inv_tau, W_p, b_p, W_q, b_q, self.out.weight.t(), self.out.bias)

    # ------------------------------------------------------------------------------------------
    def clamp_ls(self, ls: torch.Tensor) -> torch.Tensor:
        return ls.clamp(self.cfg.logsigma_min, self.cfg.logsigma_max)

    def posterior_forward(
        self,
        a_mu: torch.Tensor,
        a_ls: torch.Tensor,
        eps: torch.Tensor | None,
        state0: State | None = None,
        first_is_unit_prior: bool = True,
        fw: FlatWeights | None = None,
        keep_h: bool = False,
    ) -> ForwardOut:
        """Run the posterior over a sequence. a_mu, a_ls, eps: [B, T, Z] (eps None = use mu_q)."""
        fw = fw or self.flat()
        B, T, Z = a_mu.shape
        state0 = state0 or self.zero_state(B)
        h, d = state0
        d_list, h_list = [], []
        if fw.W_q is None:
            # posterior does not depend on d: z for all steps at once, only the MTRNN update loops
            mu_q = torch.tanh(a_mu)
            ls_q = self.clamp_ls(a_ls)
            z = mu_q if eps is None else mu_q + torch.exp(ls_q) * eps
            drive = z @ fw.W_zd + fw.b_h  # [B, T, Dsum]
            for t in range(T):
                h = h + fw.inv_tau * (d @ fw.W_rec + drive[:, t] - h)
                d = torch.tanh(h)
                d_list.append(d)
                if keep_h:
                    h_list.append(h)
        else:
            mu_list, ls_list = [], []
            for t in range(T):
                q = d @ fw.W_q + fw.b_q
                mu_t = torch.tanh(q[:, :Z] + a_mu[:, t])
                ls_t = self.clamp_ls(q[:, Z:] + a_ls[:, t])
                z_t = mu_t if eps is None else mu_t + torch.exp(ls_t) * eps[:, t]
                h = h + fw.inv_tau * (d @ fw.W_rec + z_t @ fw.W_zd + fw.b_h - h)
                d = torch.tanh(h)
                d_list.append(d)
                mu_list.append(mu_t)
                ls_list.append(ls_t)
                if keep_h:
                    h_list.append(h)
            mu_q, ls_q = torch.stack(mu_list, 1), torch.stack(ls_list, 1)
        d_seq = torch.stack(d_list, dim=1)  # [B, T, Dsum]
        d_prev = torch.cat([state0.d.unsqueeze(1), d_seq[:, :-1]], dim=1)
        prior = d_prev @ fw.W_p + fw.b_p  # [B, T, 2Z]
        pre_mu, mu_p, ls_p = prior[..., :Z], torch.tanh(prior[..., :Z]), self.clamp_ls(prior[..., Z:])
        if first_is_unit_prior:  # N(0, I) at t = 1
            first = torch.zeros(1, T, 1, dtype=torch.bool, device=a_mu.device)
            first[0, 0, 0] = True
            mu_p = torch.where(first, torch.zeros_like(mu_p), mu_p)
            ls_p = torch.where(first, torch.zeros_like(ls_p), ls_p)
        raw = d_seq[..., : self.d_sizes[0]] @ fw.W_o + fw.b_o
        return ForwardOut(d_seq, h, torch.stack(h_list, 1) if keep_h else None,
                          mu_q, ls_q, mu_p, ls_p, pre_mu, raw)

    def rollout(
        self,
        state0: State,
        steps: int,
        a_mu: torch.Tensor | None = None,
        a_ls: torch.Tensor | None = None,
        posterior_steps: int = 0,
        sample: bool = False,
        generator: torch.Generator | None = None,
        first_is_unit_prior: bool = False,
        fw: FlatWeights | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State, torch.Tensor]:
        """Generate `steps` steps from `state0`: the first `posterior_steps` from A (target
        generation), then the prior. With `sample`, z = mu + sigma * noise, noise [B, steps, Z]
        given or drawn from `generator`. Returns (raw output [B, steps, O], final state,
        d [B, steps, Dsum])."""
        fw = fw or self.flat()
        h, d = state0
        B, Z = h.shape[0], self.z_total
        raws, ds = [], []
        for t in range(steps):
            if t < posterior_steps:
                if fw.W_q is None:
                    mu, ls = torch.tanh(a_mu[:, t]), self.clamp_ls(a_ls[:, t])
                else:
                    q = d @ fw.W_q + fw.b_q
                    mu, ls = torch.tanh(q[:, :Z] + a_mu[:, t]), self.clamp_ls(q[:, Z:] + a_ls[:, t])
            elif t == 0 and first_is_unit_prior:
                mu, ls = h.new_zeros(B, Z), h.new_zeros(B, Z)
            else:
                p = d @ fw.W_p + fw.b_p
                mu, ls = torch.tanh(p[:, :Z]), self.clamp_ls(p[:, Z:])
            if sample:
                e = noise[:, t] if noise is not None else torch.randn(mu.shape, generator=generator,
                                                                       device=mu.device, dtype=mu.dtype)
                z = mu + torch.exp(ls) * e
            else:
                z = mu
            h = h + fw.inv_tau * (d @ fw.W_rec + z @ fw.W_zd + fw.b_h - h)
            d = torch.tanh(h)
            ds.append(d)
            raws.append(d[:, : self.d_sizes[0]] @ fw.W_o + fw.b_o)
        return torch.stack(raws, 1), State(h, d), torch.stack(ds, 1)

    def prior_sigma_by_layer(self, out: ForwardOut, mask: torch.Tensor | None = None) -> list[float]:
        """Mean prior sigma per layer over t >= 2 (and valid steps): the meta-prior's fingerprint."""
        sig = torch.exp(out.ls_p[:, 1:])  # [B, T-1, Z]
        m = torch.ones(sig.shape[:2], device=sig.device) if mask is None else mask[:, 1:].float()
        res = []
        for i in range(len(self.z_sizes)):
            cols = self.z_layer == i
            per = sig[..., cols].mean(-1)
            res.append(float((per * m).sum() / m.sum().clamp_min(1)))
        return res


class AdaptiveVectors(nn.Module):
    """A^mu and A^sigma: one pair per training sequence, per time step, all layers flat [N, T, Z]."""

    def __init__(self, n_sequences: int, max_len: int, z_total: int):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(n_sequences, max_len, z_total))
        self.logsigma = nn.Parameter(torch.zeros(n_sequences, max_len, z_total))


def kl_diag_gauss(mu_q, ls_q, mu_p, ls_p) -> torch.Tensor:
    """KL(N(mu_q, e^{2 ls_q}) || N(mu_p, e^{2 ls_p})) elementwise, closed form."""
    return ls_p - ls_q + (torch.exp(2 * ls_q) + (mu_q - mu_p) ** 2) / (2 * torch.exp(2 * ls_p)) - 0.5


@dataclass
class LossTerms:
    total: torch.Tensor  # scalar: mean over sequences of the summed negative ELBO
    rec: torch.Tensor  # scalar: summed reconstruction term (mean over sequences)
    kl_by_layer: torch.Tensor  # [L] summed unweighted KL / z_l (mean over sequences)
    rec_per_step: torch.Tensor  # [B, T]
    kl_per_step: torch.Tensor  # [B, T, L] unweighted KL / z_l
    per_sequence: torch.Tensor  # [B] each sequence's own negative ELBO (sum over its steps)


def free_energy(
    model: PVRNN,
    out: ForwardOut,
    target: torch.Tensor,
    joint_mask: torch.Tensor,
    step_mask: torch.Tensor,
    kl_w: torch.Tensor,
    kl_w1: torch.Tensor,
    first_is_unit_prior: bool = True,
) -> LossTerms:
    """Negative ELBO: sum_t rec_t + sum_l [w1_l KL_1 + w_l sum_{t>=2} KL_t] / z_l.

    target: [B, T, D] or coded [B, T, D, K]; joint_mask [B, T, D]; step_mask [B, T]."""
    rec = model.coding.reconstruction(out.raw, target, joint_mask) * step_mask  # [B, T]
    kl = kl_diag_gauss(out.mu_q, out.ls_q, out.mu_p, out.ls_p) * step_mask.unsqueeze(-1)  # [B, T, Z]
    T = kl.shape[1]
    if first_is_unit_prior:
        weights = torch.cat([kl_w1.expand(1, 1, -1), kl_w.expand(1, T - 1, -1)], dim=1)
    else:
        weights = kl_w.expand(1, T, -1)
    L = len(model.z_sizes)
    kl_layer = torch.zeros(kl.shape[0], T, L, device=kl.device, dtype=kl.dtype)
    kl_layer = kl_layer.index_add(2, model.z_layer, kl) / torch.tensor(model.z_sizes, device=kl.device, dtype=kl.dtype)
    B = kl.shape[0]
    per_sequence = rec.sum(1) + (kl * weights).sum((1, 2))
    return LossTerms(per_sequence.mean(), rec.sum() / B, kl_layer.sum((0, 1)) / B, rec, kl_layer, per_sequence)


def overshoot_reconstruction(
    model: PVRNN,
    out: ForwardOut,
    target: torch.Tensor,
    joint_mask: torch.Tensor,
    step_mask: torch.Tensor,
    steps: int,
    fw: FlatWeights | None = None,
) -> torch.Tensor:
    """Prior overshooting (train.overshoot_steps): from the posterior state after every step s
    (`out.states_h`, `out.d`), the prior alone (z = its mean, as ER's predictions) is rolled
    k = 1..steps ahead and its output at s + k reconstructs the target there. Returns the
    reconstruction summed over valid steps, averaged over k, mean over sequences: the same
    scale as `free_energy`'s rec term."""
    if out.states_h is None:
        raise ValueError("overshoot_reconstruction needs the posterior's h: posterior_forward(keep_h=True)")
    B, T, Dsum = out.d.shape
    n = T - 1  # starts s = 0 .. T-2 reach at least one target step
    steps = min(steps, n)  # beyond n steps ahead no start reaches a target
    if steps < 1:
        return out.d.new_zeros(())
    start = State(out.states_h[:, :n].reshape(B * n, Dsum), out.d[:, :n].reshape(B * n, Dsum))
    raw, _, _ = model.rollout(start, steps, fw=fw)  # the prior's mean path, every start at once
    raw = raw.reshape(B, n, steps, -1)
    total = out.d.new_zeros(())
    for k in range(1, steps + 1):
        reach = T - k  # starts whose step s + k is inside the sequence
        rec = model.coding.reconstruction(raw[:, :reach, k - 1], target[:, k:], joint_mask[:, k:]) * step_mask[:, k:]
        total = total + rec.sum() / B
    return total / steps
