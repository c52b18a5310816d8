"""Online error regression (ER): infer the latent state from the last W observations, predict P steps.

Per tick (DESIGN.md section 3): reset to the carried state at the window start; K iterations of
window forward/backward with Adam on the window's A only (weights frozen); run the window once
more; carry the state after its first step; roll the prior forward P steps. The K iterations are
a `WindowProblem` solved by a backend from `pvrnn_ros.kernels` (reference autograd, fused CPU,
Triton) so faster backends replace that function without touching this engine.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import TrainedModel
from .config import ERConfig
from .model import FlatWeights, State
from .window import AdamState, WindowPass, WindowProblem, WindowResult, reference_window_pass

__all__ = ["AdamState", "ERTick", "ErrorRegression", "WindowPass", "WindowProblem", "WindowResult",
           "reference_window_pass"]


@dataclass
class ERTick:
    """What one ER tick returns. Joint values are in raw units (as observed)."""

    prediction: np.ndarray | None  # [P, D] predicted next P joint vectors (None before any ER):
    # the prior's mean path, or the mean of `samples` sampled prior rollouts when samples > 0
    spread: np.ndarray | None  # [P, D] std over prior samples (None when samples = 0)
    reconstruction_error: float  # window MSE over observed joints, normalised units
    kl_per_layer: list[float]  # mean over window steps of KL / z_l, unweighted
    free_energy: float  # window negative ELBO after the update
    latent_means: list[np.ndarray]  # posterior mean of z at the newest step, per layer
    losses: np.ndarray  # loss at each iteration of this tick
    window: int  # observations in the window
    iterations: int


class ErrorRegression:
    """Feed one observation at a time with `step(obs)`; see module docstring."""

    def __init__(self, trained: TrainedModel, config: ERConfig | None = None, backend=None):
        from pvrnn_ros.kernels import get_backend

        self.trained = trained
        self.cfg = copy.deepcopy(config or trained.config.er)  # the engine never edits the model's config
        self.cfg.validate("er", n_layers=len(trained.model.z_sizes))
        self.model = trained.model
        self.backend = backend if backend is not None else get_backend(self.cfg.backend, trained.model)
        with torch.no_grad():
            self.fw = FlatWeights(*[None if t is None else t.detach() for t in self.model.flat()])
        meta_prior = self.cfg.meta_prior
        if meta_prior is None:
            meta_prior = [layer.w * self.cfg.meta_prior_scale for layer in trained.config.model.layers]
        self.kl_w, self.kl_w1 = self.model.kl_weights(meta_prior)
        self.n_joints = len(trained.joint_names)
        self.generator = torch.Generator(device=trained.device)
        self.reset()

    # --------------------------------------------------------------------------------------
    def reset(self) -> None:
        dev = self.trained.device
        Z = self.model.z_total
        self.generator.manual_seed(self.cfg.seed)
        self.obs = torch.zeros(0, self.n_joints, device=dev)  # [n, D] normalised, 0 where missing
        self.mask = torch.zeros(0, self.n_joints, device=dev)
        self.a_mu = torch.zeros(1, 0, Z, device=dev)
        self.a_ls = torch.zeros(1, 0, Z, device=dev)
        self.adam = AdamState.zeros_like(self.a_mu)
        self.start = self.model.zero_state(1)
        self.at_stream_start = True
        self.next_start: State | None = None  # state after the window's first step (last pass)
        self.next_slot: tuple[torch.Tensor, torch.Tensor] | None = None  # prior pre-activations
        self.ticks = 0

    def _append(self, obs_norm: torch.Tensor, mask: torch.Tensor) -> None:
        Z = self.model.z_total
        if self.next_slot is not None and self.cfg.slide_init == "prior":
            new_mu, new_ls = self.next_slot
        elif self.a_mu.shape[1] > 0:
            new_mu, new_ls = self.a_mu[:, -1:], self.a_ls[:, -1:]
        else:
            new_mu = new_ls = torch.zeros(1, 1, Z, device=self.a_mu.device)
        self.obs = torch.cat([self.obs, obs_norm[None]])
        self.mask = torch.cat([self.mask, mask[None]])
        self.a_mu = torch.cat([self.a_mu, new_mu.reshape(1, 1, Z)], 1)
        self.a_ls = torch.cat([self.a_ls, new_ls.reshape(1, 1, Z)], 1)
        zeros = torch.zeros(1, 1, Z, device=self.a_mu.device)
        ad = self.adam
        self.adam = AdamState(torch.cat([ad.m_mu, zeros], 1), torch.cat([ad.v_mu, zeros], 1),
                              torch.cat([ad.m_ls, zeros], 1), torch.cat([ad.v_ls, zeros], 1), ad.step)
        if self.obs.shape[0] > self.cfg.window:  # slide: drop the oldest step, carry the state
            self.obs, self.mask = self.obs[1:], self.mask[1:]
            self.a_mu, self.a_ls = self.a_mu[:, 1:], self.a_ls[:, 1:]
            ad = self.adam
            self.adam = AdamState(ad.m_mu[:, 1:], ad.v_mu[:, 1:], ad.m_ls[:, 1:], ad.v_ls[:, 1:], ad.step)
            self.start = self.next_start
            self.at_stream_start = False

    def normalize_observation(self, obs: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        if obs.shape[0] != self.n_joints:
            raise ValueError(f"observation has {obs.shape[0]} values, expected {self.n_joints} "
                             f"(joints {self.trained.joint_names})")
        finite = np.isfinite(obs)
        norm = np.where(finite, self.trained.normalizer.normalize(np.where(finite, obs, 0.0)), 0.0)
        # far outside the training range tanh cannot reach it anyway; clamping keeps the loss bounded
        norm = np.clip(norm, -1.5, 1.5)
        dev = self.trained.device
        return (torch.tensor(norm, dtype=torch.float32, device=dev),
                torch.tensor(finite, dtype=torch.float32, device=dev))

    @torch.no_grad()
    def step(self, obs: np.ndarray) -> ERTick:
        """Add one observation (raw units, NaN = joint missing), regress, predict."""
        obs_norm, mask = self.normalize_observation(obs)
        self._append(obs_norm, mask)
        n = self.obs.shape[0]
        cfg = self.cfg
        if n < cfg.window and not cfg.growing_window:
            return ERTick(None, None, math.nan, [math.nan] * len(self.model.z_sizes), math.nan, [], np.zeros(0), n, 0)
        K = cfg.first_iterations if self.ticks == 0 else cfg.iterations
        if cfg.adam_reset:
            self.adam = AdamState.zeros_like(self.a_mu)
        Z = self.model.z_total
        eps = None
        if cfg.sample_posterior and K > 0:
            eps = torch.randn((K, 1, n, Z), generator=self.generator, device=self.a_mu.device)
        problem = WindowProblem(
            model=self.model, fw=self.fw, h0=self.start.h, d0=self.start.d,
            target=self.model.coding.target(self.obs[None]), joint_mask=self.mask[None],
            kl_w=self.kl_w, kl_w1=self.kl_w1, first_is_unit_prior=self.at_stream_start,
            eps=eps, lr=cfg.lr, iterations=K, keep_best=cfg.keep_best,
        )
        if K > 0:
            result = self.backend.regress(problem, self.a_mu, self.a_ls, self.adam)
            self.a_mu, self.a_ls, self.adam = result.a_mu, result.a_ls, result.adam
            losses = result.losses[:, 0].cpu().numpy()
        else:
            losses = np.zeros(0)
        self.ticks += 1
        return self._final_pass(problem, losses, K)

    def _final_pass(self, problem: WindowProblem, losses: np.ndarray, K: int) -> ERTick:
        model, cfg = self.model, self.cfg
        noise = None
        if cfg.samples > 0:
            noise = torch.randn((cfg.samples, cfg.horizon, model.z_total), generator=self.generator,
                                device=self.a_mu.device)
        window_pass = getattr(self.backend, "window_pass", reference_window_pass)
        wp = window_pass(problem, self.a_mu, self.a_ls, cfg.horizon, noise)
        self.next_start = wp.first
        Z = model.z_total
        self.next_slot = (wp.prior_next[:Z], wp.prior_next[Z:])
        decode, denormalize = model.coding.decode, self.trained.normalizer.denormalize
        samples = denormalize(decode(wp.rollout_raw).cpu().double().numpy())  # [S, P, D]
        spread = None
        if noise is not None:
            # Monte Carlo predictive distribution: its mean is the prediction (the MSE-optimal
            # point estimate when the future branches), its std the spread
            prediction, spread = samples.mean(axis=0), samples.std(axis=0)
        else:
            prediction = samples[0]  # the prior's mean path
        decoded = decode(wp.raw)
        m = self.mask
        mse = float((((decoded - self.obs) ** 2) * m).sum() / m.sum().clamp_min(1))
        n = self.obs.shape[0]
        latest = wp.mu_q_last.cpu().numpy()
        offsets = np.cumsum([0] + model.z_sizes)
        return ERTick(
            prediction=prediction,
            spread=spread,
            reconstruction_error=mse,
            kl_per_layer=(wp.kl_by_layer / n).tolist(),
            free_energy=wp.free_energy,
            latent_means=[latest[offsets[i]:offsets[i + 1]] for i in range(len(model.z_sizes))],
            losses=losses,
            window=n,
            iterations=K,
        )
