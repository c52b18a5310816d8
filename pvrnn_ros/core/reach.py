"""Reaching unseen goals: the metrics, and the baselines a user would pick instead of planning.

Pure numpy / PyTorch (the simulator side is `pvrnn_ros.sim.reach`).

    outcome = reach_outcome(times, end_effector_path, goal, tolerance=0.03)   # final error, time to reach
    i, dist = nearest_demonstration(reach_points, goal)                      # baseline 1: replay demo i
    policy = fit_reach_policy(episodes, goals, settings)                     # baseline 2: goal-conditioned BC
    policy.next_target(q_measured, goal)                                     # -> next joint target (raw)

The goal-conditioned behaviour-cloning policy is an MLP from (current joints, goal) to the next
joint posture, trained on the outbound part of each demonstration (reach and hold: what reaching a
goal is), with `core.baselines.train_early_stopping` on a split by episode, one model per hidden
size, the lowest validation loss kept. Its input joints are perturbed in training (`state_noise`, as
in DART-style noise injection) so that the closed-loop rollout recovers from its own errors.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .baselines import BaselineSettings, split_episodes, train_early_stopping, train_epochs
from .coding import Normalizer

__all__ = ["ReachOutcome", "reach_outcome", "nearest_demonstration", "ReachPolicy", "FittedReachPolicy",
           "fit_reach_policy", "summarize_outcomes"]


def _point(goal, what: str = "goal") -> np.ndarray:
    g = np.asarray(goal, dtype=float).reshape(-1)
    if g.shape != (3,) or not np.all(np.isfinite(g)):
        raise ValueError(f"{what} {np.asarray(goal).tolist()} is invalid: expected 3 finite coordinates x, y, z (m)")
    return g


@dataclass
class ReachOutcome:
    final_error: float  # m, end effector to goal at the end (after settling)
    time_to_reach: float | None  # s from the start to the first time within tolerance; None = never
    success: bool  # final_error <= tolerance
    min_error: float  # m, closest approach
    tolerance: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def reach_outcome(times, end_effector, goal, tolerance: float = 0.03) -> ReachOutcome:
    """times [S] (s from the start), end_effector [S, 3] measured (m), goal [3] -> the outcome."""
    g = _point(goal)
    t = np.asarray(times, dtype=float).reshape(-1)
    ee = np.asarray(end_effector, dtype=float)
    if ee.ndim != 2 or ee.shape != (t.size, 3) or t.size == 0:
        raise ValueError(f"end_effector has shape {ee.shape}, expected [{t.size}, 3] (one point per time)")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance = {tolerance!r} is invalid: expected a distance > 0 (m)")
    dist = np.linalg.norm(ee - g, axis=1)
    within = np.flatnonzero(dist <= tolerance)
    first = float(t[within[0]] - t[0]) if within.size else None
    return ReachOutcome(float(dist[-1]), first, bool(dist[-1] <= tolerance), float(dist.min()), float(tolerance))


def nearest_demonstration(reach_points, goal) -> tuple[int, float]:
    """Index of the demonstration whose reached end-effector point [N, 3] is closest to `goal`, and the distance."""
    pts = np.asarray(reach_points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"reach_points has shape {pts.shape}, expected [N >= 1, 3]")
    d = np.linalg.norm(pts - _point(goal), axis=1)
    i = int(np.argmin(d))
    return i, float(d[i])


# ------------------------------------------------------------------------------------- BC policy
class ReachPolicy(nn.Module):
    """MLP: (joints, goal) normalised -> change of the joints to the next step (normalised)."""

    def __init__(self, n_joints: int, hidden: int):
        super().__init__()
        self.n_joints, self.hidden = n_joints, hidden
        self.net = nn.Sequential(nn.Linear(n_joints + 3, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, n_joints))

    def forward(self, q: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:  # [B, J], [B, 3] -> [B, J]
        return q + self.net(torch.cat([q, goal], -1))


def _policy_loss(model: ReachPolicy, batch) -> torch.Tensor:
    q, goal, nxt = batch[:3]
    if model.training and len(batch) > 3 and batch[3] > 0:
        # perturbed states, clean targets: the policy learns to steer back onto the demonstrations,
        # which closed-loop rollouts need (without it, small errors compound: 0/20 goals reached)
        q = q + torch.randn(q.shape, generator=batch[4]) * batch[3]
    return ((model(q, goal) - nxt) ** 2).mean()


@dataclass
class FittedReachPolicy:
    model: ReachPolicy
    joint_norm: Normalizer
    goal_norm: Normalizer
    info: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def next_target(self, q, goal) -> np.ndarray:
        """Measured joints [J] (raw) and the goal [3] (m) -> the next joint target [J] (raw)."""
        q = np.asarray(q, dtype=float).reshape(-1)
        if q.shape != (self.model.n_joints,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joints {q.tolist()} are invalid: expected {self.model.n_joints} finite values")
        qn = torch.as_tensor(self.joint_norm.normalize(q), dtype=torch.float32)[None]
        gn = torch.as_tensor(self.goal_norm.normalize(_point(goal)), dtype=torch.float32)[None]
        return self.joint_norm.denormalize(self.model(qn, gn)[0].double().numpy())


def fit_reach_policy(episodes: Sequence[np.ndarray], goals, settings: BaselineSettings | None = None,
                     progress: bool = False, state_noise: float = 0.01) -> FittedReachPolicy:
    """episodes: per demonstration the joints [T_i, J] at the model rate over the part to imitate
    (reach and hold); goals [N, 3]: the end-effector point each demonstration reached.
    state_noise: std (normalised joint units, the range maps to +-0.8) of the noise added to the input
    joints in training (the targets stay clean), so the policy corrects its own drift."""
    settings = (settings or BaselineSettings()).validate()
    if not (state_noise >= 0 and math.isfinite(state_noise)):
        raise ValueError(f"state_noise = {state_noise!r} is invalid: expected a finite std >= 0")
    episodes = [np.asarray(e, dtype=float) for e in episodes]
    goals = np.asarray(goals, dtype=float).reshape(-1, 3)
    if len(episodes) != len(goals):
        raise ValueError(f"{len(episodes)} episodes but {len(goals)} goals: expected one goal per episode")
    if any(e.ndim != 2 or len(e) < 2 or e.shape[1] != episodes[0].shape[1] for e in episodes):
        raise ValueError("episodes must be [T >= 2, J] arrays with the same joints")
    joint_norm = Normalizer.fit(episodes)
    goal_norm = Normalizer.fit([goals])

    bad = [i for i, e in enumerate(episodes) if not np.all(np.isfinite(e))] + \
        [i for i, g in enumerate(goals) if not np.all(np.isfinite(g))]
    if bad:
        raise ValueError(f"episode {bad[0]}: its joints or goal hold NaN/inf; expected finite values")
    noise_gen = torch.Generator().manual_seed(settings.seed)

    def pairs(idx, noisy=True):
        q = np.concatenate([joint_norm.normalize(episodes[i][:-1]) for i in idx])
        nxt = np.concatenate([joint_norm.normalize(episodes[i][1:]) for i in idx])
        g = np.concatenate([np.repeat(goal_norm.normalize(goals[i])[None], len(episodes[i]) - 1, 0) for i in idx])
        tensors = tuple(torch.as_tensor(a, dtype=torch.float32) for a in (q, g, nxt))
        return tensors + ((float(state_noise), noise_gen) if noisy else ())

    train_idx, val_idx = split_episodes(len(episodes), settings.val_fraction, settings.seed)
    J = episodes[0].shape[1]
    started = time.perf_counter()
    best, candidates = None, []
    for hidden in settings.hidden_sizes:
        torch.manual_seed(settings.seed)
        model = ReachPolicy(J, hidden)
        _, report = train_early_stopping(model, pairs(train_idx), pairs(val_idx, noisy=False), _policy_loss,
                                         patience=settings.patience, max_epochs=settings.max_epochs, lr=settings.lr,
                                         min_delta=settings.min_delta, progress=progress, desc=f"BC policy {hidden}")
        row = {"hidden": hidden, **report.as_dict()}
        candidates.append(row)
        if best is None or report.best_val_loss < best[1]["best_val_loss"]:
            best = (model, row)
    model, row = best
    refit = None
    if settings.refit:  # the validation episodes are demonstrations too: the PV-RNN sees all of them
        torch.manual_seed(settings.seed)
        model = ReachPolicy(J, row["hidden"])
        final, secs = train_epochs(model, pairs(range(len(episodes))), _policy_loss, row["best_epoch"], settings.lr)
        refit = {"epochs": row["best_epoch"], "seconds": secs, "final_train_mse": final}
    model.eval()
    info = {"hidden": row["hidden"], "epochs": row["epochs"], "best_epoch": row["best_epoch"],
            "best_val_mse": row["best_val_loss"], "stopped_early": row["stopped_early"], "refit": refit,
            "seconds": row["seconds"] + (refit["seconds"] if refit else 0.0),
            "seconds_all_candidates": time.perf_counter() - started,
            "train_episodes": len(train_idx), "val_episodes": len(val_idx), "state_noise": float(state_noise),
            "candidates": candidates}
    return FittedReachPolicy(model, joint_norm, goal_norm, info)


def summarize_outcomes(outcomes: Sequence[ReachOutcome]) -> dict[str, Any]:
    """Success rate, final errors (median, mean, max) and the median time to reach of the successes."""
    if not outcomes:
        raise ValueError("no outcomes to summarise")
    err = np.array([o.final_error for o in outcomes])
    reach_t = [o.time_to_reach for o in outcomes if o.success and o.time_to_reach is not None]
    return {"goals": len(outcomes), "successes": int(sum(o.success for o in outcomes)),
            "success_rate": float(np.mean([o.success for o in outcomes])),
            "median_error": float(np.median(err)), "mean_error": float(err.mean()), "max_error": float(err.max()),
            "median_time_to_reach": float(np.median(reach_t)) if reach_t else None}
