"""Reaching goals not seen in training, measured in MuJoCo: PV-RNN planning against the baselines.

For every goal each method gives a joint trajectory from the home posture, the sim executes it under
position control (`sim.reach.execute_trajectory`), lets it settle, and the end effector's distance to
the goal is measured with MuJoCo (`core.reach.reach_outcome`).

- "pvrnn": `core.plan.Planner` from the home posture (one observed step) to the goal
  `end_effector=x,y,z` held from the step the demonstrations end their reach until the end of their
  hold (`plan_horizon`); the chosen plan's joints are executed. A goal the planner refuses (far
  outside what the model's outputs reach) leaves the arm at home and counts as a failure.
- "pvrnn_online": the same model replanning every model step in closed loop
  (`core.online_plan.OnlinePlanner`, as `er_node` mode `plan` does): it reads the measured joints,
  plans to the goal due when the demonstrations end their reach (counted from the goal's arrival)
  with a warm start and few iterations, and commands its plan `lead_steps` ahead, which makes up
  for the position controller's lag.
- "nearest": the demonstration whose reached end effector is closest to the goal, replayed (its
  recorded joints over the reach and hold).
- "bc": the goal-conditioned behaviour-cloning policy (`core.reach.fit_reach_policy`), closed loop:
  each model step it reads the measured joints and commands its next posture.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pvrnn_ros.core.reach import ReachOutcome, nearest_demonstration, reach_outcome, summarize_outcomes

from .reach import END_EFFECTOR_SITE, REACH_REGION, ReachRegion, ReachTiming, execute_trajectory, read_target

__all__ = ["ReachData", "load_reach_data", "plan_horizon", "GoalResult", "run_pvrnn", "run_online", "run_nearest",
           "run_bc",
           "bc_training_episodes", "summaries"]


@dataclass
class ReachData:
    """Reach demonstrations at the model rate, with their sidecars."""

    paths: list[Path]
    demos: list  # core.data.Demonstration, resampled to rate_hz, joints + end_effector extra
    targets: np.ndarray  # [N, 3] the targets drawn
    reached: np.ndarray  # [N, 3] the end effector measured at the end of the hold
    timing: ReachTiming
    rate_hz: float
    region: ReachRegion = REACH_REGION


def load_reach_data(data_dir, rate_hz: float, modalities=()) -> ReachData:
    from pvrnn_ros.core.data import discover, load_demonstrations, resample

    paths = discover(data_dir)
    demos = [resample(d, rate_hz) for d in load_demonstrations(data_dir, modalities=modalities)]
    sides = [read_target(p) for p in paths]
    timings = {tuple(sorted(s["timing"].items())) for s in sides}
    if len(timings) != 1:
        raise ValueError(f"{data_dir}: the reach demonstrations have different timings {sorted(timings)}; "
                         "expected one timing for all")
    region = ReachRegion(tuple(sides[0]["region"]["lo"]), tuple(sides[0]["region"]["hi"]))
    return ReachData(list(paths), demos, np.array([s["target"] for s in sides]),
                     np.array([s["reached_end_effector"] for s in sides]), ReachTiming(**sides[0]["timing"]),
                     float(rate_hz), region)


def plan_horizon(timing: ReachTiming, rate_hz: float) -> tuple[int, int]:
    """(H, K): plan H steps (the reach and the hold) after the observed home step; the goal holds from
    future step K (the step the reach ends) to the last."""
    H = int(round((timing.reach_s + timing.hold_s) * rate_hz))
    K = max(0, int(round(timing.reach_s * rate_hz)) - 1)
    return H, K


@dataclass
class GoalResult:
    method: str
    goal: np.ndarray
    label: str  # "inside" / "edge"
    outcome: ReachOutcome
    times: np.ndarray  # [S] execution time
    end_effector: np.ndarray  # [S, 3] measured
    seconds: float  # to produce the trajectory (planning / rollout), not counting execution
    extra: dict[str, Any] = field(default_factory=dict)


def _progress(items, desc: str, progress: bool):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="goal", leave=False)


def _result(method, goal, label, ex, tolerance, seconds, **extra) -> GoalResult:
    return GoalResult(method, np.asarray(goal), label, reach_outcome(ex.times, ex.end_effector, goal, tolerance),
                      ex.times, ex.end_effector, seconds, {"settled": ex.settled, **extra})


def run_pvrnn(trained, plan_config, sim, home, goals, labels, timing: ReachTiming, tolerance: float = 0.03,
              settle_s: float = 1.5, progress: bool = False) -> list[GoalResult]:
    """Plan from `home` to each goal with `plan_config` (its horizon is set from the timing) and execute."""
    import copy

    from pvrnn_ros.core.plan import GoalError, GoalTerm, Planner

    cfg = copy.deepcopy(plan_config)
    H, K = plan_horizon(timing, trained.rate_hz)
    cfg.horizon = H
    planner = Planner(trained, cfg, past=1)
    joints = list(trained.joint_names)
    sim.reset(positions=dict(zip(joints, home)))
    home_ee = sim.site_position(END_EFFECTOR_SITE)
    out = []
    for g, label in _progress(list(zip(goals, labels)), "plan + execute", progress):
        t0 = time.perf_counter()
        term = GoalTerm("end_effector", [float(v) for v in g], from_step=K, tolerance=tolerance)
        mods = {"end_effector": home_ee[None]} if "end_effector" in trained.layout.names else None
        try:
            plan = planner.plan(np.asarray(home)[None], [term], history_modalities=mods)
        except GoalError as exc:  # beyond what the model can output: the arm stays home, counted as a failure
            secs = time.perf_counter() - t0
            ex = execute_trajectory(sim, joints, np.repeat(np.asarray(home)[None], H, 0), trained.rate_hz,
                                    start=home, settle_s=settle_s, target=g)
            out.append(_result("pvrnn", g, label, ex, tolerance, secs, refused=str(exc)))
            continue
        secs = time.perf_counter() - t0
        ex = execute_trajectory(sim, joints, plan.positions, trained.rate_hz, start=home, settle_s=settle_s, target=g)
        out.append(_result("pvrnn", g, label, ex, tolerance, secs, plan_goal_error=plan.goal_errors[0],
                           losses=plan.losses[:, plan.chosen].copy(), free_energy=dict(plan.free_energy),
                           planned_end_effector=plan.modalities.get("end_effector")))
    return out


# online replanning per tick, chosen on the demo's seed-0 goals (docs/results.md)
ONLINE_ITERATIONS, ONLINE_CANDIDATES, ONLINE_LEAD_STEPS = 80, 4, 4


def run_online(trained, plan_config, sim, home, goals, labels, timing: ReachTiming, tolerance: float = 0.03,
               iterations_per_tick: int = ONLINE_ITERATIONS, candidates: int = ONLINE_CANDIDATES,
               lead_steps: int = ONLINE_LEAD_STEPS, past: int = 10,
               settle_s: float = 1.5, progress: bool = False) -> list[GoalResult]:
    """Closed-loop replanning towards each goal for the reach and hold (H model steps), then settle.
    The first tick plans with `plan_config.iterations`, later ones warm-started with
    `iterations_per_tick`; `seconds` is the planning time summed over the ticks."""
    import copy

    from pvrnn_ros.core.online_plan import OnlinePlanner
    from pvrnn_ros.core.plan import GoalError, GoalTerm

    H, K = plan_horizon(timing, trained.rate_hz)
    if not 0 <= lead_steps < H:
        raise ValueError(f"lead_steps={lead_steps} is invalid: expected a step in 0..{H - 1}")
    cfg = copy.deepcopy(plan_config)
    cfg.horizon, cfg.iterations, cfg.candidates = H, int(iterations_per_tick), int(candidates)
    joints = list(trained.joint_names)
    out = []
    for g, label in _progress(list(zip(goals, labels)), "online replanning", progress):
        online = OnlinePlanner(trained, cfg, past=past, first_iterations=plan_config.iterations, give_up_s=0.0)
        ticks: list[float] = []
        try:
            online.set_goal([GoalTerm("end_effector", [float(v) for v in g], from_step=K, tolerance=tolerance)])
        except GoalError as exc:  # as run_pvrnn: a refused goal leaves the arm at home
            ex = execute_trajectory(sim, joints, np.repeat(np.asarray(home)[None], H, 0), trained.rate_hz,
                                    start=home, settle_s=settle_s, target=g)
            out.append(_result("pvrnn_online", g, label, ex, tolerance, 0.0, refused=str(exc)))
            continue

        def act(q):
            t0 = time.perf_counter()
            tick = online.step(q)
            ticks.append(time.perf_counter() - t0)
            return q if tick.plan is None else tick.plan.positions[lead_steps]

        ex = execute_trajectory(sim, joints, None, trained.rate_hz, start=home, settle_s=settle_s, policy=act,
                                steps=H, target=g)
        out.append(_result("pvrnn_online", g, label, ex, tolerance, float(np.sum(ticks)),
                           tick_ms_median=1000 * float(np.median(ticks)), tick_ms_max=1000 * float(np.max(ticks)),
                           status=online.status))
    return out


def run_nearest(data: ReachData, sim, home, goals, labels, tolerance: float = 0.03, settle_s: float = 1.5,
                progress: bool = False) -> list[GoalResult]:
    H, _ = plan_horizon(data.timing, data.rate_hz)
    out = []
    for g, label in _progress(list(zip(goals, labels)), "nearest demo", progress):
        t0 = time.perf_counter()
        i, dist = nearest_demonstration(data.reached, g)
        traj = data.demos[i].positions[1:H + 1]
        secs = time.perf_counter() - t0
        ex = execute_trajectory(sim, data.demos[i].joint_names, traj, data.rate_hz, start=home, settle_s=settle_s,
                                target=g)
        out.append(_result("nearest", g, label, ex, tolerance, secs, demo=data.paths[i].name, demo_distance=dist))
    return out


def bc_training_episodes(data: ReachData) -> tuple[list[np.ndarray], np.ndarray]:
    """The outbound part (reach and hold) of each demonstration, and the point it reached."""
    H, _ = plan_horizon(data.timing, data.rate_hz)
    return [d.positions[:H + 1] for d in data.demos], data.reached


def run_bc(policy, joint_names: Sequence[str], sim, home, goals, labels, steps: int, rate_hz: float,
           tolerance: float = 0.03, settle_s: float = 1.5, progress: bool = False) -> list[GoalResult]:
    out = []
    for g, label in _progress(list(zip(goals, labels)), "BC rollout", progress):
        spent = [0.0]

        def act(q, g=g):
            t0 = time.perf_counter()
            nxt = policy.next_target(q, g)
            spent[0] += time.perf_counter() - t0
            return nxt

        ex = execute_trajectory(sim, joint_names, None, rate_hz, start=home, settle_s=settle_s, policy=act,
                                steps=steps, target=g)
        out.append(_result("bc", g, label, ex, tolerance, spent[0]))
    return out


def summaries(results: Sequence[GoalResult]) -> dict[str, dict[str, Any]]:
    """Per method: all goals, and the inside / edge goals apart."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r.method for r in results):
        rs = [r for r in results if r.method == method]
        out[method] = {"all": summarize_outcomes([r.outcome for r in rs])}
        for label in dict.fromkeys(r.label for r in rs):
            out[method][label] = summarize_outcomes([r.outcome for r in rs if r.label == label])
        out[method]["seconds_per_goal"] = float(np.mean([r.seconds for r in rs]))
    return out
