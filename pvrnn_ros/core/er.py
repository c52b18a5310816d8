"""Online error regression (ER): infer the latent state from the last W observations, predict P steps.

Per tick (DESIGN.md section 3): reset to the carried state at the window start; K iterations of
window forward/backward with Adam on the window's A only (weights frozen); run the window once
more; carry the state after its first step; roll the prior forward P steps. The K iterations are
a `WindowProblem` solved by a backend from `pvrnn_ros.kernels` (reference autograd, fused CPU,
Triton) so faster backends replace that function without touching this engine.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import TrainedModel
from .config import ERConfig
from .model import FlatWeights, State
from .window import AdamState, WindowPass, WindowProblem, WindowResult, reference_window_pass

__all__ = ["AdamState", "ERTick", "ErrorRegression", "WindowPass", "WindowProblem", "WindowResult",
           "reference_window_pass"]


@dataclass
class ModalityEstimate:
    """What a tick says about one modality beside the joints (raw units for continuous ones)."""

    name: str
    kind: str  # "continuous" | "categorical"
    components: list[str]  # component names, or class names
    current: np.ndarray  # newest step of the window: values [k], or class probabilities [C] (of the
    # step er.recognition_lag before the newest)
    prediction: np.ndarray  # next P steps: [P, k], or class probabilities [P, C]
    observed: bool  # whether the newest step observed it (False: inferred, e.g. recognition)

    @property
    def top_class(self) -> str | None:
        return self.components[int(np.argmax(self.current))] if self.kind == "categorical" else None


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
    modalities: dict[str, ModalityEstimate] = field(default_factory=dict)  # beside the joints
    hypothesis: int = 0  # the winning hypothesis (0 = the carried A; er.hypotheses > 1)
    hypothesis_losses: np.ndarray | None = None  # [hypotheses] the free energy each was chosen by
    # [D] the window's reconstruction of the newest step's joints (raw units): ER's estimate of the
    # current posture, also for a joint missing from the newest observation
    reconstruction: np.ndarray | None = None

    @property
    def recognition(self) -> dict[str, np.ndarray]:
        """Class probabilities at the newest step of every categorical modality."""
        return {n: m.current for n, m in self.modalities.items() if m.kind == "categorical"}


class ErrorRegression:
    """Feed one observation at a time with `step(obs)`; see module docstring."""

    def __init__(self, trained: TrainedModel, config: ERConfig | None = None, backend=None,
                 compiled_tick: bool = True):
        """compiled_tick: with a backend that offers it (cpu), keep the window in the backend and run
        each tick as one compiled call; False: build a `WindowProblem` per tick (the generic path)."""
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
        self.layout = trained.layout
        self.n_dims = self.layout.n_dims
        self.dim_weights = torch.as_tensor(self.layout.dim_weights(), dtype=torch.float32, device=trained.device)
        self._dim_weights_np = self.dim_weights.cpu().double().numpy()
        self._continuous = np.asarray([k != "categorical" for k in self.model.coding.dim_kinds])
        self._z_offsets = np.cumsum([0] + self.model.z_sizes)
        self.generator = torch.Generator(device=trained.device)
        # the compiled stream holds one window; several hypotheses run as a batch on the generic path
        open_stream = getattr(self.backend, "open_stream", None) if compiled_tick and self.cfg.hypotheses == 1 else None
        self.stream = open_stream(self.model, self.fw, self.kl_w, self.kl_w1, self.cfg.window) if open_stream else None
        self.reset()

    # --------------------------------------------------------------------------------------
    def reset(self) -> None:
        dev = self.trained.device
        Z = self.model.z_total
        self.generator.manual_seed(self.cfg.seed)
        self.obs = torch.zeros(0, self.n_dims, device=dev)  # [n, D] normalised, 0 where missing
        self.mask = torch.zeros(0, self.n_dims, device=dev)  # weight c_j where observed, else 0
        self.a_mu = torch.zeros(1, 0, Z, device=dev)
        self.a_ls = torch.zeros(1, 0, Z, device=dev)
        self.adam = AdamState.zeros_like(self.a_mu)
        self.start = self.model.zero_state(1)
        self.at_stream_start = True
        self.next_start: State | None = None  # state after the window's first step (last pass)
        self.next_slot: tuple[torch.Tensor, torch.Tensor] | None = None  # prior pre-activations
        self.ticks = 0
        if getattr(self, "stream", None) is not None:
            self.stream.reset()

    @property
    def window_length(self) -> int:
        """Observations in the window now (at most er.window)."""
        return self.stream.n if self.stream is not None else int(self.obs.shape[0])

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

    def normalize_observation(self, obs: np.ndarray, modalities: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised data vector [D], mask [D]: the dimension's weight where observed, else 0)."""
        norm, observed = self._normalize(obs, modalities)
        dev = self.trained.device
        return (torch.tensor(norm, dtype=torch.float32, device=dev),
                torch.tensor(observed, dtype=torch.float32, device=dev) * self.dim_weights)

    def _normalize(self, obs: np.ndarray, modalities: dict | None) -> tuple[np.ndarray, np.ndarray]:
        """(normalised data vector [D], 1 where observed else 0 [D]), float64."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        if obs.shape[0] != self.n_joints:
            raise ValueError(f"observation has {obs.shape[0]} values, expected {self.n_joints} "
                             f"(joints {self.trained.joint_names})")
        finite = np.isfinite(obs)
        if finite.all():  # the common case, in as few numpy calls as a tick can afford
            norm = self.trained.normalizer.normalize(obs)
        else:
            norm = self.trained.normalizer.normalize(np.where(finite, obs, 0.0))
            norm[~finite] = 0.0
        # far outside the training range tanh cannot reach it anyway; clamping keeps the loss bounded
        np.clip(norm, -1.5, 1.5, out=norm)
        observed = finite.astype(np.float64)
        if not modalities and not self.layout.modalities:
            return norm, observed
        modalities = dict(modalities or {})
        unknown = sorted(set(modalities) - set(self.layout.names))
        if unknown:
            raise ValueError(f"observation has modality {unknown[0]!r}, but the model learned "
                             f"{', '.join(['joints'] + self.layout.names)}")
        values = {k: ([v] if isinstance(v, str) or v is None else np.asarray(v, dtype=np.float64).reshape(1, -1))
                  for k, v in modalities.items()}
        extra, seen = self.layout.encode(values, 1)
        extra = extra[0]
        # categorical dimensions hold class indices: not clamped
        extra = np.where(self._continuous[self.n_joints:], np.clip(extra, -1.5, 1.5), extra)
        return np.concatenate([norm, extra]), np.concatenate([observed, seen[0]])

    def step(self, obs: np.ndarray, modalities: dict | None = None) -> ERTick:
        """Add one observation (joints in raw units, NaN = joint missing), regress, predict.
        modalities: values of the modalities observed at this step ({"end_effector": [x, y, z],
        "task": "wave"}); any modality not given is unobserved and inferred (recognition)."""
        if self.stream is not None:  # no autograd there: torch only draws the noise
            return self._step_compiled(*self._normalize(obs, modalities))
        with torch.no_grad():
            return self._step_generic(obs, modalities)

    def _step_generic(self, obs: np.ndarray, modalities: dict | None) -> ERTick:
        obs_norm, mask = self.normalize_observation(obs, modalities)
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
            target=self.model.coding.target(self.obs[None]), joint_mask=self._aged(self.mask)[None],
            kl_w=self.kl_w, kl_w1=self.kl_w1, first_is_unit_prior=self.at_stream_start,
            eps=eps, lr=cfg.lr, iterations=K, keep_best=cfg.keep_best,
        )
        chosen, hypothesis_losses = 0, None
        if K > 0 and cfg.hypotheses > 1:
            losses, chosen, hypothesis_losses = self._regress_hypotheses(problem)
        elif K > 0:
            result = self.backend.regress(problem, self.a_mu, self.a_ls, self.adam)
            self.a_mu, self.a_ls, self.adam = result.a_mu, result.a_ls, result.adam
            losses = result.losses[:, 0].cpu().numpy()
        else:
            losses = np.zeros(0)
        self.ticks += 1
        tick = self._final_pass(problem, losses, K)
        tick.hypothesis, tick.hypothesis_losses = chosen, hypothesis_losses
        return tick

    def _aged(self, mask: torch.Tensor) -> torch.Tensor:
        """The window's weights [n, D] with er.forgetting applied: a step `age` steps older than the
        newest weighs forgetting^age."""
        f = self.cfg.forgetting
        if f == 1.0:
            return mask
        age = torch.arange(mask.shape[0] - 1, -1, -1, device=mask.device, dtype=mask.dtype)
        return mask * (f ** age)[:, None]

    def _regress_hypotheses(self, problem: WindowProblem) -> tuple[np.ndarray, int, np.ndarray]:
        """Regress the carried A and er.hypotheses - 1 perturbed copies as one batch of windows
        (same targets, same carried state, copies of the Adam moments); keep the one with the lowest
        free energy. Returns (its losses [K], its index, every hypothesis's choosing loss)."""
        cfg = self.cfg
        n_hyp, K = cfg.hypotheses, problem.iterations
        _, n, Z = self.a_mu.shape
        dev = self.a_mu.device
        perturb = torch.randn((n_hyp - 1, n, Z), generator=self.generator, device=dev) * cfg.hypothesis_spread
        a_mu = torch.cat([self.a_mu, self.a_mu + perturb])
        a_ls = self.a_ls.expand(n_hyp, -1, -1).contiguous()

        def rep(x: torch.Tensor) -> torch.Tensor:
            return x.expand(n_hyp, *x.shape[1:]).contiguous()

        ad = self.adam
        adam = AdamState(rep(ad.m_mu), rep(ad.v_mu), rep(ad.m_ls), rep(ad.v_ls), ad.step)
        eps = None
        if problem.eps is not None:  # independent posterior noise per hypothesis
            eps = torch.cat([problem.eps, torch.randn((K, n_hyp - 1, n, Z), generator=self.generator, device=dev)], 1)
        batch = dataclasses.replace(problem, h0=rep(problem.h0), d0=rep(problem.d0), target=rep(problem.target),
                                    joint_mask=rep(problem.joint_mask), eps=eps)
        result = self.backend.regress(batch, a_mu, a_ls, adam)
        losses = result.losses.cpu().double().numpy()  # [K, hypotheses]
        # without keep_best the returned A is one update past the last loss; that loss stands for it
        score = losses.min(axis=0) if cfg.keep_best else losses[-1]
        best = int(np.argmin(np.where(np.isfinite(score), score, np.inf)))
        pick = slice(best, best + 1)
        self.a_mu, self.a_ls = result.a_mu[pick], result.a_ls[pick]
        r = result.adam
        self.adam = AdamState(r.m_mu[pick], r.v_mu[pick], r.m_ls[pick], r.v_ls[pick], r.step)
        return losses[:, best], best, score

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
        decode = model.coding.decode
        return self._report(wp.raw.cpu().numpy(), wp.rollout_raw.cpu().numpy(), decode(wp.raw).cpu().double().numpy(),
                            decode(wp.rollout_raw).cpu().double().numpy(), wp.free_energy,
                            wp.kl_by_layer.cpu().double().numpy(), wp.mu_q_last.cpu().numpy(),
                            self.obs.cpu().double().numpy(), self.mask.cpu().double().numpy(), losses, K,
                            noise is not None)

    def _step_compiled(self, norm: np.ndarray, observed: np.ndarray) -> ERTick:
        """`step` on the backend's compiled tick: the window lives in `self.stream`."""
        cfg, stream = self.cfg, self.stream
        weights = self._dim_weights_np
        n = stream.n + (stream.n < stream.window)
        if n < cfg.window and not cfg.growing_window:
            stream.step(norm, observed * weights, cfg.slide_init, 0, cfg.lr, False, False, None, None,
                        cfg.horizon, regress=False, forgetting=cfg.forgetting)
            return ERTick(None, None, math.nan, [math.nan] * len(self.model.z_sizes), math.nan, [], np.zeros(0), n, 0)
        K = cfg.first_iterations if self.ticks == 0 else cfg.iterations
        Z = self.model.z_total
        eps = noise = None  # drawn in the generic path's order, from the same generator
        if cfg.sample_posterior and K > 0:
            eps = torch.randn((K, 1, n, Z), generator=self.generator, device=self.trained.device).double().numpy()
        if cfg.samples > 0:
            noise = torch.randn((cfg.samples, cfg.horizon, Z), generator=self.generator,
                                device=self.trained.device).double().numpy()
        t = stream.step(norm, observed * weights, cfg.slide_init, K, cfg.lr, cfg.adam_reset, cfg.keep_best,
                        eps, noise, cfg.horizon, forgetting=cfg.forgetting)
        self.ticks += 1
        sampled = noise is not None
        joints = stream.joint_report(t, self.n_joints, cfg.residual_decay, cfg.residual_velocity,
                                     self.trained.normalizer, sampled)
        return self._report(t.raw, t.rollout_raw, t.decoded, t.decoded_rollouts, t.free_energy, t.kl_by_layer,
                            t.mu_q_last, stream.obs, stream.observed, t.losses, K, sampled, joints)

    def _report(self, raw: np.ndarray, rollout_raw: np.ndarray, decoded: np.ndarray, decoded_rollouts: np.ndarray,
                free_energy: float, kl_by_layer: np.ndarray, mu_q_last: np.ndarray, obs: np.ndarray,
                mask: np.ndarray, losses: np.ndarray, K: int, sampled: bool, joints: tuple | None = None) -> ERTick:
        """The tick's report from its final pass (numpy): raw [W, O] and rollout_raw [S, P, O]
        output pre-activations, decoded [W, D] and decoded_rollouts [S, P, D] (normalised), the
        window's observations and mask [W, D]; joints: `_joint_report`'s result if already computed
        (the compiled tick's own)."""
        model = self.model
        if joints is None:
            joints = self._joint_report(decoded, decoded_rollouts, obs, mask, sampled)
        prediction, spread, reconstruction, mse = joints
        n = obs.shape[0]
        offsets = self._z_offsets
        return ERTick(
            prediction=prediction,
            spread=spread,
            reconstruction_error=mse,
            kl_per_layer=(kl_by_layer / n).tolist(),
            free_energy=free_energy,
            latent_means=[mu_q_last[offsets[i]:offsets[i + 1]] for i in range(len(model.z_sizes))],
            losses=losses,
            window=n,
            iterations=K,
            modalities=self._modality_estimates(raw, rollout_raw, mask, decoded, decoded_rollouts),
            reconstruction=reconstruction,
        )

    def _joint_report(self, decoded: np.ndarray, decoded_rollouts: np.ndarray, obs: np.ndarray, mask: np.ndarray,
                      sampled: bool) -> tuple:
        """(prediction [P, J], spread [P, J] or None, the newest step's reconstruction [J], raw
        units, and the window's reconstruction MSE, normalised) of the joints; compiled for the
        stream as `kernels.cpu_stream._joint_report`."""
        J = self.n_joints
        rollouts = decoded_rollouts[..., :J]
        if self.cfg.residual_decay > 0:
            rollouts = rollouts + self._residual_correction(decoded[:, :J], obs[:, :J], mask[:, :J], rollouts.shape[-2])
        samples = self.trained.normalizer.denormalize(rollouts)  # [S, P, joints]
        spread = None
        if sampled:
            # Monte Carlo predictive distribution: its mean is the prediction (the MSE-optimal
            # point estimate when the future branches), its std the spread
            prediction, spread = samples.mean(axis=0), samples.std(axis=0)
        else:
            prediction = samples[0]  # the prior's mean path
        m = mask[:, :J] > 0  # the joints' error, normalised units
        mse = float(np.where(m, (decoded[:, :J] - obs[:, :J]) ** 2, 0.0).sum() / max(1, int(m.sum())))
        return prediction, spread, self.trained.normalizer.denormalize(decoded[-1, :J]), mse

    def _residual_correction(self, decoded: np.ndarray, obs: np.ndarray, mask: np.ndarray, horizon: int) -> np.ndarray:
        """[P, J] added to the predicted joints (normalised units), er.residual_decay/_velocity:
        decay^h * (r + g * h * v) with r the newest step's observed - reconstructed and v = r minus
        the step before's. A joint not observed at the newest step gets none; v needs both steps."""
        cfg = self.cfg
        seen = mask[-1] > 0
        r = np.where(seen, obs[-1] - decoded[-1], 0.0)
        v = np.zeros_like(r)
        if cfg.residual_velocity > 0 and obs.shape[0] >= 2:
            both = seen & (mask[-2] > 0)
            v = np.where(both, r - (obs[-2] - decoded[-2]), 0.0)
        h = np.arange(1, horizon + 1, dtype=np.float64)[:, None]
        return cfg.residual_decay ** h * (r + cfg.residual_velocity * h * v)

    def _modality_estimates(self, raw: np.ndarray, rollout_raw: np.ndarray, mask: np.ndarray,
                            decoded: np.ndarray, decoded_rollouts: np.ndarray) -> dict:
        out = {}
        for mod in self.layout.modalities:
            sl = self.layout.slice(mod.name)
            observed = bool((mask[-1, sl] > 0).all())
            if mod.kind == "categorical":
                back = min(self.cfg.recognition_lag, raw.shape[0] - 1)  # er.recognition_lag
                units = self._class_units(sl.start)
                current = _softmax(raw[-1 - back, units])
                prediction = _softmax(rollout_raw[..., units]).mean(0)
            else:
                current = mod.normalizer.denormalize(decoded[-1, sl])
                prediction = mod.normalizer.denormalize(decoded_rollouts[..., sl].mean(0))
            out[mod.name] = ModalityEstimate(mod.name, mod.kind, list(mod.components), current, prediction, observed)
        return out

    def _class_units(self, dim: int) -> slice:
        """The output units of categorical data dimension `dim`."""
        coding = self.model.coding
        if coding.kind == "tanh" or coding.dim_kinds[dim] != "categorical":
            raise ValueError(f"output dimension {dim} is {coding.dim_kinds[dim]!r}, not categorical")
        off = int(coding.index[dim, 0])
        return slice(off, off + coding.bins[dim])


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
