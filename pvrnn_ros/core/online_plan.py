"""Online goal-directed planning (T-GLean's online planner, DESIGN.md section 7) on a live joint stream.

Every tick one observation comes in and the plan is redone on a sliding window: the last `past`
observed steps followed by `horizon` planned ones, a `Planner.plan` call with few Adam iterations,
warm-started from the previous tick's adaptive vectors A shifted to the new window (the window grows
until `past` steps are observed, then slides; a new step's A is a copy of the last one, as in
T-GLean). A new goal keeps the warm start, so the motion turns towards it without a stop.

A goal term's `from_step` counts from the goal's arrival, not from each tick: `from_step=14` at
10 Hz asks for the goal 1.4 s after it was given and held from then on, so every tick plans to
the same moment in time (max(0, 14 - ticks since the goal) steps ahead). A deadline that slid with
the window would keep the goal ever out of reach; `from_step=0` asks for it at once.

A goal-status state machine says how the pursuit goes:
    idle      no goal
    pursuing  planning towards the goal
    reached   the current error has stayed within the goal's tolerance for `settle_s`
              (planning goes on, holding the goal; leaving twice the tolerance -> pursuing again)
    given_up  the current error has not improved by `min_progress` (a fraction) for `give_up_s`:
              planning stops until a new goal
The current error is measured on what is observed where possible: for a joint goal the newest
observed joint positions; for another modality (never observed by the joint stream) the model's
estimate of it one step ahead, the plan's first step.

    online = OnlinePlanner(trained, PlanConfig(horizon=20, iterations=30, candidates=1))
    online.set_goal([GoalTerm("joints", [1.2], ["elbow"], tolerance=0.05)])  # GoalError if bad
    tick = online.step(q_now, now=t)     # -> OnlineTick: plan, status, errors, event
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import TrainedModel
from .config import PlanConfig
from .plan import GoalError, GoalTerm, Plan, Planner

__all__ = ["GoalError", "GoalTerm", "OnlinePlanner", "OnlineTick", "STATUSES", "shift_warm_start"]

STATUSES = ("idle", "pursuing", "reached", "given_up")


@dataclass
class OnlineTick:
    """What one online planning tick returns."""

    plan: Plan | None  # None while idle or given up (nothing to command: hold)
    status: str  # one of STATUSES, after this tick
    event: str  # "" or a sentence when the status changed at this tick (reached, given up, ...)
    errors: list[float]  # current error per goal term (raw units; NaN = not measurable now)
    planned_errors: list[float]  # the plan's error at its last step, per goal term
    iterations: int  # Adam iterations run this tick
    warm: bool  # whether this tick started from the previous tick's A
    past: int  # observed steps in the window

    @property
    def error(self) -> float:
        """The current error of a one-term goal (the usual case: the node builds one term per goal
        message); with several terms the largest, each in its own units."""
        return self.errors[0] if len(self.errors) == 1 else (max(self.errors) if self.errors else math.nan)


def shift_warm_start(a: tuple[torch.Tensor, torch.Tensor], offset: int, length: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous window's A ([W_prev, Z] each), moved `offset` steps later in time and cut or padded
    to `length` steps; steps past the previous window's end copy its last step (T-GLean)."""
    out = []
    for t in a:
        rows = t[offset:]
        if rows.shape[0] == 0:
            rows = t[-1:]
        if rows.shape[0] < length:
            rows = torch.cat([rows, rows[-1:].expand(length - rows.shape[0], -1)], 0)
        out.append(rows[:length].clone())
    return out[0], out[1]


class OnlinePlanner:
    """Sliding-window replanning towards a goal, one observation per `step` (see module docstring).

    config: the plan settings per tick (horizon, iterations, lr, candidates, goal_weight...);
    past: observed steps kept in the window; first_iterations: Adam iterations of a tick without a
    warm start (the first plan); settle_s, give_up_s (0 = never), min_progress: the state machine."""

    def __init__(self, trained: TrainedModel, config: PlanConfig | None = None, past: int = 10,
                 first_iterations: int | None = None, settle_s: float = 0.5, give_up_s: float = 10.0,
                 min_progress: float = 0.05, backend=None):
        for name, value, ok, expected in (
                ("past", past, isinstance(past, int) and past >= 1, "an integer >= 1"),
                ("first_iterations", first_iterations, first_iterations is None or first_iterations >= 0,
                 "None or an integer >= 0"),
                ("settle_s", settle_s, math.isfinite(settle_s) and settle_s >= 0, "a time >= 0 (s)"),
                ("give_up_s", give_up_s, math.isfinite(give_up_s) and give_up_s >= 0, "a time >= 0 (s), 0 = never"),
                ("min_progress", min_progress, 0 <= min_progress < 1, "a fraction in [0, 1)")):
            if not ok:
                raise ValueError(f"OnlinePlanner {name}={value!r} is invalid: expected {expected}")
        self.trained = trained
        self.planner = Planner(trained, copy.deepcopy(config or trained.config.plan), backend=backend, past=past)
        self.cfg = self.planner.cfg  # live settings: iterations, lr may change between ticks
        self.past = past
        self.first_iterations = self.cfg.iterations if first_iterations is None else int(first_iterations)
        self.settle_s, self.give_up_s, self.min_progress = float(settle_s), float(give_up_s), float(min_progress)
        self.dt = 1.0 / float(trained.rate_hz)
        self.J = trained.layout.n_joints
        self.goal: list[GoalTerm] | None = None
        self.status = "idle"
        self.reset()

    @property
    def backend(self):
        return self.planner.backend

    # ------------------------------------------------------------------ stream and goal
    def reset(self) -> None:
        """Forget the observed stream and the warm start (a stream restart); the goal stays."""
        self.history: deque[np.ndarray] = deque(maxlen=self.past)
        self.t = 0  # observations so far
        self._warm: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warm_start_t = 0  # absolute step of the warm start's first row
        self._warm_horizon = 0
        if self.goal is not None and self.status != "given_up":
            self._start_pursuit(None)

    def validate_goal(self, goal: list[GoalTerm]) -> None:
        """GoalError naming the bad value if the model cannot plan for `goal`; no state changes."""
        for term in goal or []:
            for i, v in enumerate(term.values):
                if term.modality != "joints" and term.modality in self.trained.layout.names \
                        and self.trained.layout.get(term.modality).kind == "categorical":
                    break
                try:
                    ok = math.isfinite(float(v))
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    comps = term.components or (self.trained.joint_names if term.modality == "joints" else None)
                    where = f"{term.modality}.{comps[i]}" if comps and i < len(comps) else term.modality
                    raise GoalError(f"goal {where} = {v!r} is not a finite number")
        self.planner.goal_arrays(goal, self.cfg.horizon)
        bad = [t.tolerance for t in goal if not (isinstance(t.tolerance, (int, float)) and t.tolerance > 0
                                                 and math.isfinite(t.tolerance))]
        if bad:
            raise GoalError(f"goal tolerance {bad[0]!r} is invalid: expected a finite value > 0")

    def set_goal(self, goal: list[GoalTerm], now: float | None = None) -> None:
        """Pursue `goal` from the next step (validated first: a GoalError leaves the previous goal).
        The warm start is kept, so a goal changed mid-motion is followed without a stop."""
        self.validate_goal(goal)
        self.goal = list(goal)
        self._start_pursuit(now)

    def clear_goal(self) -> None:
        self.goal = None
        self.status = "idle"

    def _start_pursuit(self, now: float | None) -> None:
        self.status = "pursuing"
        self._goal_since = now  # None: set at the next step
        self._goal_t = self.t + 1  # the first tick planning for it (its from_steps count from there)
        self._best = math.inf
        self._progress_at = now
        self._within_since = None

    def _now(self, now: float | None) -> float:
        return self.t * self.dt if now is None else float(now)

    # ------------------------------------------------------------------ one tick
    def step(self, obs, now: float | None = None) -> OnlineTick:
        """Append one observation (raw joints in the model's order, NaN = missing) and replan.
        now: the time of this tick in seconds (default: steps x model period), for settle and give-up."""
        obs = np.asarray(obs, dtype=np.float64).reshape(-1)
        if obs.shape[0] != self.J:
            raise ValueError(f"observation has {obs.shape[0]} values, expected {self.J} joints "
                             f"({', '.join(self.trained.joint_names)})")
        if not np.isfinite(obs).any():
            raise ValueError("observation has no finite joint value")
        self.history.append(obs.copy())
        self.t += 1
        now = self._now(now)
        if self.goal is None or self.status == "given_up":
            self._warm = None  # the robot moves on without a plan: an old A would be stale
            return OnlineTick(None, self.status, "", [], [], 0, False, len(self.history))
        if self._goal_since is None:
            self._goal_since = self._progress_at = now
        n = len(self.history)
        H = self.cfg.horizon
        warm = None
        if self._warm is not None and self._warm_horizon == H:
            warm = shift_warm_start(self._warm, (self.t - n) - self._warm_start_t, n + H)
        iterations = self.cfg.iterations if warm is not None else self.first_iterations
        saved = self.cfg.iterations
        self.cfg.iterations = iterations
        try:
            plan = self.planner.plan(np.stack(self.history), self._goal_now(), warm_start=warm)
        finally:
            self.cfg.iterations = saved
        a_mu, a_ls = self.planner.last_a
        self._warm = (a_mu[plan.chosen].detach(), a_ls[plan.chosen].detach())
        self._warm_start_t, self._warm_horizon = self.t - n, H
        errors = self.current_errors(obs, plan)
        event = self._update_status(errors, now)
        plan_out = plan if self.status != "given_up" else None
        return OnlineTick(plan_out, self.status, event, errors, list(plan.goal_errors), iterations,
                          warm is not None, n)

    def _goal_now(self) -> list[GoalTerm]:
        """The goal as this tick plans it: each `from_step` counted from the goal's arrival."""
        elapsed = self.t - self._goal_t
        return [t if t.from_step is None or t.from_step == 0 else
                dataclasses.replace(t, from_step=max(0, t.from_step - elapsed)) for t in self.goal]

    def current_errors(self, obs: np.ndarray, plan: Plan) -> list[float]:
        """Per goal term: the observed joint error (max over its joints), or the plan's first step for
        other modalities (see module docstring); NaN when a goal joint is not observed now."""
        names = self.trained.joint_names
        out = []
        for term in self.goal:
            if term.modality == "joints":
                comps = term.components or names
                got = obs[[names.index(c) for c in comps]]
                want = np.asarray([float(v) for v in term.values])
                err = float(np.max(np.abs(got - want))) if np.isfinite(got).all() else math.nan
            else:
                mod = self.trained.layout.get(term.modality)
                first = plan.modalities[mod.name][0]
                if mod.kind == "categorical":
                    err = float(1.0 - first[mod.components.index(term.values[0])])
                else:
                    comps = term.components or mod.components
                    got = first[[mod.components.index(c) for c in comps]]
                    err = float(np.linalg.norm(got - np.asarray([float(v) for v in term.values])))
            out.append(err)
        return out

    def _update_status(self, errors: list[float], now: float) -> str:
        ratios = [e / t.tolerance for e, t in zip(errors, self.goal)]
        if any(not math.isfinite(r) for r in ratios):
            return ""  # not measurable this tick (a goal joint unobserved): no verdict
        score = max(ratios)  # <= 1: every term within its tolerance
        what = ", ".join(f"{_term_name(t)} error {e:.3g} (tolerance {t.tolerance:g})" for e, t in zip(errors, self.goal))
        if score < self._best * (1.0 - self.min_progress) or score <= 1.0:
            self._progress_at = now
        self._best = min(self._best, score)
        if self.status == "reached":
            if score > 2.0:
                self.status, self._within_since = "pursuing", None
                self._best, self._progress_at = score, now
                return f"left the goal: {what}; pursuing again"
            return ""
        if score <= 1.0:
            if self._within_since is None:
                self._within_since = now
            if now - self._within_since >= self.settle_s - 1e-9:
                self.status = "reached"
                return f"goal reached after {now - self._goal_since:.2f} s: {what}"
            return ""
        self._within_since = None
        if self.give_up_s > 0 and now - self._progress_at >= self.give_up_s:
            self.status = "given_up"
            self._warm = None
            return (f"gave up after {now - self._goal_since:.2f} s: no progress for {now - self._progress_at:.2f} s "
                    f"(give-up time {self.give_up_s:g} s): {what}")
        return ""


def _term_name(term: GoalTerm) -> str:
    if term.modality == "joints" and term.components:
        return "joints " + ",".join(term.components) if len(term.components) <= 3 else "joints"
    return term.modality
