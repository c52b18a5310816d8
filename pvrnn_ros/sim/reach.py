"""Reaching in the MuJoCo arm: the workspace region, inverse kinematics, the reaching demonstrator,
synthesis of reach demonstrations, and executing a joint trajectory to measure where the hand ends.

The teacher reaches a target drawn uniformly from `REACH_REGION` (a box in front of the bundled arm,
world frame, metres), holds, and returns:

    home --(minimum jerk, reach_s)--> reach posture --(hold_s)--> --(minimum jerk, return_s)--> home --(rest_s)

The reach posture is found in joint space by damped least squares on the Jacobian of the arm's
`end_effector` site (`sim/arm7.xml`), started from the home posture with a null-space pull towards
it, so neighbouring targets get neighbouring postures (a smooth map a network can learn). The scene's
`reach_target` site (visual only: sites never collide) is moved onto the target of each episode.

Everything is checked with MuJoCo alone: a plan's final posture can be put in `qpos` and the site read
back (`final_site_position`), or the trajectory executed under position control (`execute_trajectory`).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pvrnn_ros.core.data import write_csv

from .scenes import scene_path

__all__ = ["ReachRegion", "REACH_REGION", "END_EFFECTOR_SITE", "TARGET_SITE", "ReachIK", "IKResult",
           "ReachTiming", "ReachDemonstrator", "synthesize_reach", "read_target", "Execution",
           "execute_trajectory", "heldout_goals", "final_site_position"]

END_EFFECTOR_SITE = "end_effector"  # the hand's site in sim/arm7.xml (between the fingers)
TARGET_SITE = "reach_target"  # the visual target marker in sim/arm7.xml, moved per episode


@dataclass(frozen=True)
class ReachRegion:
    """An axis-aligned box of end-effector targets (world frame, metres)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def check(self, point, what: str = "target", tolerance: float = 1e-9) -> np.ndarray:
        """`point` as a float array [3]; ValueError naming the value and the box when it is not a finite
        point inside the region (within `tolerance` m)."""
        p = np.asarray(point, dtype=float).reshape(-1)
        if p.shape != (3,):
            raise ValueError(f"{what} {np.asarray(point).tolist()} is invalid: expected 3 coordinates x, y, z (m)")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{what} {p.tolist()} is invalid: expected finite coordinates x, y, z (m)")
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        out = np.flatnonzero((p < lo - tolerance) | (p > hi + tolerance))
        if out.size:
            axis = "xyz"[int(out[0])]
            raise ValueError(f"{what} {axis} = {p[out[0]]:.4g} m is outside the reach region "
                             f"{self.describe()} (IK is validated only there)")
        return p

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, 3] uniform points in the box."""
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return lo + rng.uniform(size=(int(n), 3)) * (hi - lo)

    def corners(self) -> np.ndarray:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return np.array([[(hi if (k >> a) & 1 else lo)[a] for a in range(3)] for k in range(8)])

    def describe(self) -> str:
        return ("x in [{:.2f}, {:.2f}], y in [{:.2f}, {:.2f}], z in [{:.2f}, {:.2f}] m"
                .format(self.lo[0], self.hi[0], self.lo[1], self.hi[1], self.lo[2], self.hi[2]))


# In front of and below the hand's home position (0.53, 0, 0.93): every point is reached by the IK
# below within 1 mm with joints inside their limits (test/sim/test_reach.py checks a grid over it).
REACH_REGION = ReachRegion(lo=(0.35, -0.25, 0.55), hi=(0.60, 0.25, 0.85))


def heldout_goals(region: ReachRegion = REACH_REGION, n_inside: int = 6, n_edge: int = 6,
                  seed: int = 12345) -> tuple[np.ndarray, list[str]]:
    """Goals for evaluation, drawn apart from the training targets: `n_inside` uniform in the box
    shrunk to its central 60 %, and `n_edge` on its faces (one coordinate at a bound, the others
    uniform). Returns ([n, 3], one label "inside" / "edge" per goal)."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(region.lo), np.asarray(region.hi)
    mid, half = 0.5 * (lo + hi), 0.5 * (hi - lo)
    inside = mid + rng.uniform(-0.6, 0.6, size=(n_inside, 3)) * half
    edge = lo + rng.uniform(size=(n_edge, 3)) * (hi - lo)
    for k in range(n_edge):
        axis = k % 3
        edge[k, axis] = (lo if (k // 3) % 2 == 0 else hi)[axis]
    return np.concatenate([inside, edge]), ["inside"] * n_inside + ["edge"] * n_edge


# ------------------------------------------------------------------------------------------- IK
@dataclass
class IKResult:
    positions: np.ndarray  # [J] joint posture (rad), joint order of ReachIK.joint_names
    site_position: np.ndarray  # [3] where MuJoCo puts the site for it
    error: float  # distance to the target (m)
    iterations: int
    converged: bool


class ReachIK:
    """Position inverse kinematics of one site by damped least squares (null space: stay near home).

    `model` is an `mujoco.MjModel` (e.g. `ArmSim.model`); it gets its own `MjData`, so solving never
    disturbs a running simulation."""

    def __init__(self, model, joint_names: Sequence[str], home, site: str = END_EFFECTOR_SITE,
                 damping: float = 0.02, null_gain: float = 0.2, max_step: float = 0.2):
        import mujoco

        self._mj = mujoco
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site)
        if self.site < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_SITE, i) for i in range(model.nsite)]
            raise ValueError(f"no site named {site!r} in the model; its sites: {names}")
        self.joint_names = list(joint_names)
        jids = []
        for n in self.joint_names:
            j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)
            if j < 0:
                raise ValueError(f"no joint named {n!r} in the model")
            jids.append(j)
        self._qadr = np.array([model.jnt_qposadr[j] for j in jids])
        self._dadr = np.array([model.jnt_dofadr[j] for j in jids])
        rng = np.array([model.jnt_range[j] for j in jids], dtype=float)
        limited = np.array([bool(model.jnt_limited[j]) for j in jids])
        margin = 0.02  # rad: stay clear of the stiff limit constraints
        self.lower = np.where(limited, rng[:, 0] + margin, -np.inf)
        self.upper = np.where(limited, rng[:, 1] - margin, np.inf)
        self.home = np.asarray(home, dtype=float).reshape(-1)
        if self.home.shape != (len(self.joint_names),):
            raise ValueError(f"home has {self.home.size} values for {len(self.joint_names)} joints")
        self.damping, self.null_gain, self.max_step = float(damping), float(null_gain), float(max_step)

    def site_position(self, q) -> np.ndarray:
        """Forward kinematics: the site's world position for joint posture `q` (others at qpos0)."""
        d = self.data
        d.qpos[:] = self.model.qpos0
        d.qpos[self._qadr] = np.asarray(q, dtype=float)
        self._mj.mj_kinematics(self.model, d)
        return d.site_xpos[self.site].copy()

    def solve(self, target, start=None, tolerance: float = 1e-4, max_iterations: int = 300) -> IKResult:
        mj, m, d = self._mj, self.model, self.data
        target = np.asarray(target, dtype=float).reshape(-1)
        if target.shape != (3,) or not np.all(np.isfinite(target)):
            raise ValueError(f"IK target {np.asarray(target).tolist()} is invalid: expected 3 finite coordinates (m)")
        q = (self.home if start is None else np.asarray(start, dtype=float)).copy()
        jacp = np.zeros((3, m.nv))
        lam2 = self.damping ** 2
        err = np.inf
        it = 0
        for it in range(1, max_iterations + 1):
            d.qpos[:] = m.qpos0
            d.qpos[self._qadr] = q
            mj.mj_kinematics(m, d)
            mj.mj_comPos(m, d)  # the Jacobian needs the com-based dof frames
            e = target - d.site_xpos[self.site]
            err = float(np.linalg.norm(e))
            if err < tolerance:
                break
            mj.mj_jacSite(m, d, jacp, None, self.site)
            J = jacp[:, self._dadr]  # [3, n]
            pinv = J.T @ np.linalg.inv(J @ J.T + lam2 * np.eye(3))  # damped pseudo-inverse [n, 3]
            # null space of the exact pseudo-inverse: the pull home leaves the site where it is
            null = np.eye(len(q)) - np.linalg.pinv(J) @ J
            dq = pinv @ e + null @ (self.null_gain * (self.home - q))
            big = np.max(np.abs(dq))
            if big > self.max_step:
                dq *= self.max_step / big
            q = np.clip(q + dq, self.lower, self.upper)
        site = self.site_position(q)
        err = float(np.linalg.norm(target - site))
        return IKResult(q, site, err, it, err < max(tolerance, 1e-3))


def final_site_position(model, joint_names: Sequence[str], positions, site: str = END_EFFECTOR_SITE) -> np.ndarray:
    """Forward kinematics with MuJoCo alone: where `site` is for joint posture `positions`."""
    return ReachIK(model, joint_names, np.asarray(positions, dtype=float), site).site_position(positions)


# ------------------------------------------------------------------------------------------- demonstrator
def _minjerk(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


@dataclass(frozen=True)
class ReachTiming:
    """Phase durations of a reach (s): out, hold at the target, back, rest at home."""

    reach_s: float = 1.5
    hold_s: float = 1.0
    return_s: float = 1.5
    rest_s: float = 0.5

    @property
    def duration_s(self) -> float:
        return self.reach_s + self.hold_s + self.return_s + self.rest_s

    def phases(self) -> list[tuple[float, str]]:
        """(start time, phase name) of the four phases."""
        t1 = self.reach_s
        t2 = t1 + self.hold_s
        t3 = t2 + self.return_s
        return [(0.0, "reach"), (t1, "hold"), (t2, "return"), (t3, "rest")]

    def validate(self) -> "ReachTiming":
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"reach timing {k} = {v!r} is invalid: expected seconds >= 0")
        if self.reach_s <= 0:
            raise ValueError(f"reach timing reach_s = {self.reach_s!r} is invalid: expected seconds > 0")
        return self


class ReachDemonstrator:
    """Joint targets of one reach: `sample(t)` (minimum-jerk home -> posture -> hold -> home -> rest)."""

    def __init__(self, home, posture, timing: ReachTiming | None = None):
        self.home = np.asarray(home, dtype=float).reshape(-1)
        self.posture = np.asarray(posture, dtype=float).reshape(-1)
        if self.home.shape != self.posture.shape:
            raise ValueError(f"home has {self.home.size} joints, the reach posture {self.posture.size}")
        self.timing = (timing or ReachTiming()).validate()

    def sample(self, t: float) -> np.ndarray:
        tm = self.timing
        t = float(t)
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"t must be a finite time >= 0, got {t}")
        delta = self.posture - self.home
        if t < tm.reach_s:
            return self.home + delta * _minjerk(t / tm.reach_s)
        t -= tm.reach_s
        if t < tm.hold_s:
            return self.posture.copy()
        t -= tm.hold_s
        if t < tm.return_s and tm.return_s > 0:
            return self.posture - delta * _minjerk(t / tm.return_s)
        return self.home.copy()


# ------------------------------------------------------------------------------------------- synthesis
def _arm(control_dt: float):
    from .arm_sim import ArmSim

    sim = ArmSim(scene_path("arm7"), control_dt=control_dt)
    return sim, list(sim.joint_names), sim.positions()


def set_target_marker(sim, point) -> None:
    """Move the scene's visual `reach_target` site (if the model has one) onto `point`."""
    import mujoco

    sid = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_SITE, TARGET_SITE)
    if sid >= 0:
        sim.model.site_pos[sid] = np.asarray(point, dtype=float)
        sim._kinematics_stale = True  # site_xpos is refreshed on the next read


def synthesize_reach(out_dir, episodes: int, seed: int = 0, region: ReachRegion = REACH_REGION,
                     timing: ReachTiming | None = None, rate_hz: float | None = None, control_dt: float = 0.02,
                     progress: bool = True, targets=None) -> list[Path]:
    """Reach demonstrations through the physics; returns the CSV paths.

    Per episode i: `episode_{i:03d}.csv` (time, the 7 joints measured, `end_effector.x/y/z` = the
    `end_effector` site measured with them), `episode_{i:03d}.target.json` (the target, the IK
    posture and its error, the phases, the region, the site names) and `episode_{i:03d}.segments.json`
    (the phases reach / hold / return / rest). Targets are uniform in `region` from `seed`, or given
    (`targets` [episodes, 3], each checked against the region)."""
    from .synth import END_EFFECTOR_COLUMNS, episode_seeds
    from .robot import robot_description_urdf

    episodes = int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if rate_hz is not None and not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    timing = (timing or ReachTiming()).validate()
    if targets is None:
        targets = np.stack([region.sample(np.random.default_rng(s), 1)[0] for s in episode_seeds(seed, episodes)])
    else:
        targets = np.asarray(targets, dtype=float).reshape(-1, 3)
        if len(targets) != episodes:
            raise ValueError(f"{len(targets)} targets given for {episodes} episodes")
        targets = np.stack([region.check(t, f"target {i}") for i, t in enumerate(targets)])
    sim, joints, home = _arm(control_dt)
    ik = ReachIK(sim.model, joints, home)
    rate = (1.0 / sim.control_dt) if rate_hz is None else float(rate_hz)
    n_rows = max(2, int(round(timing.duration_s * rate)) + 1)
    out_times = np.arange(n_rows) / rate
    n_steps = int(np.ceil(out_times[-1] / sim.control_dt - 1e-9))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lo, hi = sim.joint_limits(joints)
    (out / "robot_description.urdf").write_text(robot_description_urdf("arm7", joints, sim.joint_types(joints), lo, hi))
    iterator = range(episodes)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="synth reach", unit="ep")
    paths = []
    for i in iterator:
        target = targets[i]
        sol = ik.solve(target)
        if not sol.converged:
            raise RuntimeError(f"IK did not reach target {target.tolist()} (error {sol.error * 1000:.1f} mm)")
        demo = ReachDemonstrator(home, sol.positions, timing)
        sim.reset(positions=home)
        set_target_marker(sim, target)
        times = np.empty(n_steps + 1)
        rows = np.empty((n_steps + 1, len(joints) + 3))
        times[0], rows[0, :-3], rows[0, -3:] = sim.time, sim.positions(joints), sim.site_position(END_EFFECTOR_SITE)
        for k in range(1, n_steps + 1):
            sim.set_targets(demo.sample(sim.time), joints)
            sim.step()
            times[k] = sim.time
            rows[k, :-3], rows[k, -3:] = sim.positions(joints), sim.site_position(END_EFFECTOR_SITE)
        if abs(rate * sim.control_dt - 1.0) < 1e-9:
            values = rows[:n_rows]
        else:
            values = np.stack([np.interp(out_times, times, rows[:, j]) for j in range(rows.shape[1])], axis=1)
        path = out / f"episode_{i:03d}.csv"
        write_csv(path, out_times, values, joints + END_EFFECTOR_COLUMNS)
        hold_end = timing.reach_s + timing.hold_s
        k_hold = int(np.argmin(np.abs(times - hold_end)))
        side = {"target": target.tolist(), "reach_posture": dict(zip(joints, sol.positions.tolist())),
                "ik_error_m": sol.error, "reached_end_effector": rows[k_hold, -3:].tolist(),
                "timing": asdict(timing), "region": {"lo": list(region.lo), "hi": list(region.hi)},
                "end_effector_site": END_EFFECTOR_SITE, "target_site": TARGET_SITE, "scene": "arm7"}
        (out / f"episode_{i:03d}.target.json").write_text(json.dumps(side, indent=1) + "\n")
        segs = [{"start_time": s, "primitive": name} for s, name in timing.phases()]
        (out / f"episode_{i:03d}.segments.json").write_text(json.dumps(segs, indent=1) + "\n")
        paths.append(path)
    sim.close()
    return paths


def read_target(csv_path) -> dict:
    """The `<episode>.target.json` sidecar of a reach demonstration."""
    p = Path(csv_path)
    side = p.with_suffix(".target.json")
    if not side.is_file():
        raise FileNotFoundError(f"{p}: no target sidecar {side.name} (written by `pvrnn-ros synth --task reach`)")
    return json.loads(side.read_text())


# ------------------------------------------------------------------------------------------- execution
@dataclass
class Execution:
    times: np.ndarray  # [S] s since the start, at the control rate
    end_effector: np.ndarray  # [S, 3] the site measured by MuJoCo
    positions: np.ndarray  # [S, J] joints measured
    commanded_until: float  # s: when the trajectory ended (then its last posture was held)
    settled: bool  # joint speeds below `settle_speed` at the end
    info: dict = field(default_factory=dict)


def execute_trajectory(sim, joint_names: Sequence[str], trajectory, rate_hz: float, start=None,
                       settle_s: float = 1.5, settle_speed: float = 0.02, policy=None, steps: int | None = None,
                       target=None) -> Execution:
    """Run joint targets in the sim under position control and measure the end effector.

    trajectory [H, J] (raw units, one row per model step at `rate_hz`, the first row one step after
    the start): commanded with linear interpolation at the control rate, as a trajectory controller
    does. Or `policy(q_measured) -> next joint target` (closed loop) called once per model step for
    `steps` steps. Then the last target is held for `settle_s` s. `start`: the posture to reset to
    (default the sim's home keyframe); `target`: where to put the visual target marker."""
    joints = list(joint_names)
    sim.reset(positions=dict(zip(joints, np.asarray(start, dtype=float))) if start is not None else None)
    if target is not None:
        set_target_marker(sim, target)
    per_step = rate_hz * sim.control_dt
    n_sub = int(round(1.0 / per_step))
    if n_sub < 1 or abs(n_sub * per_step - 1.0) > 1e-6:
        raise ValueError(f"model rate {rate_hz:g} Hz is not a whole fraction of the control rate "
                         f"{1 / sim.control_dt:g} Hz")
    times, ee, qs = [sim.time], [sim.site_position(END_EFFECTOR_SITE)], [sim.positions(joints)]

    def advance(cmd):
        sim.set_targets(cmd, joints)
        sim.step()
        times.append(sim.time)
        ee.append(sim.site_position(END_EFFECTOR_SITE))
        qs.append(sim.positions(joints))

    last = sim.positions(joints)
    if policy is None:
        traj = np.asarray(trajectory, dtype=float)
        if traj.ndim != 2 or traj.shape[1] != len(joints) or not np.all(np.isfinite(traj)):
            raise ValueError(f"trajectory has shape {traj.shape} (or non-finite values), expected finite [H, {len(joints)}]")
        for row in traj:
            for s in range(1, n_sub + 1):
                advance(last + (row - last) * s / n_sub)
            last = row
    else:
        for _ in range(int(steps)):
            row = np.asarray(policy(sim.positions(joints)), dtype=float)
            for s in range(1, n_sub + 1):
                advance(last + (row - last) * s / n_sub)
            last = row
    commanded_until = sim.time
    for _ in range(int(round(settle_s / sim.control_dt))):
        advance(last)
    settled = bool(np.max(np.abs(sim.velocities(joints))) < settle_speed)
    return Execution(np.asarray(times), np.asarray(ee), np.asarray(qs), commanded_until, settled)
