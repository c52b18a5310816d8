"""The window problem: what one ER, recognition or planning call asks a backend to solve.

A window of W steps (B of them at once: hypotheses, robots or candidate plans), the state carried
into its first step, targets with a mask over steps x output dimensions (observed past, masked
unobserved modalities, a goal in the future), and the meta-prior. Backends in `pvrnn_ros.kernels`
minimise its free energy over the window's adaptive vectors A with the weights frozen; the engines
in `pvrnn_ros.core` (ER, recognition, planning) build problems and read results. Both import this
module, and it imports neither, so there is no import circle.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import FlatWeights, PVRNN, State, free_energy


@dataclass
class AdamState:
    m_mu: torch.Tensor  # [B, W, Z]
    v_mu: torch.Tensor
    m_ls: torch.Tensor
    v_ls: torch.Tensor
    step: int = 0

    @classmethod
    def zeros_like(cls, a: torch.Tensor) -> "AdamState":
        return cls(torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(a), 0)


@dataclass
class WindowProblem:
    """Everything one tick's K iterations need. B independent windows (hypotheses or robots)."""

    model: PVRNN  # coding and clamps; weights are read from `fw` (frozen, detached)
    fw: FlatWeights
    h0: torch.Tensor  # [B, Dsum] carried state at the window start
    d0: torch.Tensor  # [B, Dsum]
    target: torch.Tensor  # [B, W, D] normalised obs (tanh) or [B, W, D, K] coded (softmax)
    joint_mask: torch.Tensor  # [B, W, D] 1 = observed
    kl_w: torch.Tensor  # [Z] w_l / z_l
    kl_w1: torch.Tensor  # [Z] w1_l / z_l
    first_is_unit_prior: bool  # the window starts at the stream's first step
    eps: torch.Tensor | None  # [K, B, W, Z] posterior noise per iteration, None = z = mu_q
    lr: float
    iterations: int
    keep_best: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8


@dataclass
class WindowResult:
    a_mu: torch.Tensor  # [B, W, Z] after K steps (or the best iterate)
    a_ls: torch.Tensor
    adam: AdamState
    losses: torch.Tensor  # [K, B] loss at each iterate before its update
    best_iteration: int | None = None


@dataclass
class WindowPass:
    """The window run once more after the update (z = posterior mean), then the prior rolled on
    from its end: everything a tick reports and carries. One window (B = 1)."""

    raw: torch.Tensor  # [W, O] output pre-activations over the window
    free_energy: float  # window negative ELBO (the ER loss at z = mu_q)
    kl_by_layer: torch.Tensor  # [L] summed over the window, unweighted KL / z_l
    first: State  # state after the window's first step: where the next window starts
    end: State  # state after its last step
    mu_q_last: torch.Tensor  # [Z] posterior mean of z at the newest step
    prior_next: torch.Tensor  # [2Z] prior pre-activations (mu | log sigma) for the step after the window
    rollout_raw: torch.Tensor  # [S, P, O] output pre-activations of the rollouts (S = 1: the mean path)


def reference_window_pass(problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor, horizon: int,
                          noise: torch.Tensor | None) -> WindowPass:
    """`WindowPass` with the model's own torch code (problem.eps is ignored). noise: [S, P, Z]
    standard normal draws for S sampled rollouts, None for the prior's mean path."""
    model, fw = problem.model, problem.fw
    out = model.posterior_forward(a_mu, a_ls, None, State(problem.h0, problem.d0), problem.first_is_unit_prior,
                                  fw=fw, keep_h=True)
    ones = torch.ones(a_mu.shape[:2], device=a_mu.device, dtype=a_mu.dtype)
    terms = free_energy(model, out, problem.target, problem.joint_mask, ones, problem.kl_w, problem.kl_w1,
                        problem.first_is_unit_prior)
    end = State(out.h_last, out.d[:, -1])
    if noise is None:
        rollout_raw, _, _ = model.rollout(end, horizon, fw=fw)
    else:
        S = noise.shape[0]
        rep = State(end.h.expand(S, -1), end.d.expand(S, -1))
        rollout_raw, _, _ = model.rollout(rep, horizon, sample=True, noise=noise, fw=fw)
    return WindowPass(raw=out.raw[0], free_energy=float(terms.total), kl_by_layer=terms.kl_by_layer,
                      first=State(out.states_h[:, 0], out.d[:, 0]), end=end, mu_q_last=out.mu_q[0, -1],
                      prior_next=(end.d @ fw.W_p + fw.b_p)[0], rollout_raw=rollout_raw)
