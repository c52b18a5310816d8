"""Synthesize demonstrations through the physics: demonstrator targets -> ArmSim -> measured CSV.

Each control step the demonstrator's target at the current sim time is sent to the position
servos, the physics advances one control step, and the *measured* joint positions are
recorded, so the data carry real tracking dynamics (lag, smoothing, torque limits).

Output per episode ``i``: ``episode_{i:03d}.csv`` with header ``time,<joint names>`` (time in
seconds from 0) followed by ``end_effector.x,end_effector.y,end_effector.z`` (world position in
metres of the arm's ``end_effector`` site, measured with the joints of the same row), and
``episode_{i:03d}.segments.json`` = ``[{"start_time": s, "primitive": name}]``. Once per
directory, ``robot_description.urdf`` names each joint's type and limits (training reads the
joint types and units from it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pvrnn_ros.core.data import write_csv

from .primitives import Demonstrator, DemonstratorConfig
from .scenes import scene_path

__all__ = ["synthesize", "run_episode", "episode_seeds"]

# scene -> prefix of the arm the demonstrator drives ("" = all actuated joints)
DRIVEN_PREFIX = {"arm7": "", "teacher_learner": "teacher_"}


def episode_seeds(seed: int, episodes: int) -> list[int]:
    """Independent per-episode seeds derived from one base seed."""
    ss = np.random.SeedSequence(int(seed))
    return [int(c.generate_state(1)[0]) for c in ss.spawn(int(episodes))]


END_EFFECTOR_COLUMNS = ["end_effector.x", "end_effector.y", "end_effector.z"]


def run_episode(sim, demo: Demonstrator, joints: Sequence[str], n_steps: int,
                seed: int | None, site: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reset sim and demonstrator, run `n_steps` control steps; returns (times, measured positions,
    positions [T, 3] of `site` or None).

    Row 0 is the reset state (t = 0); row k is measured after k control steps.
    """
    demo.reset(seed)
    sim.reset(positions=dict(zip(joints, demo.sample(0.0))))
    times = np.empty(n_steps + 1)
    q = np.empty((n_steps + 1, len(joints)))
    ee = np.empty((n_steps + 1, 3)) if site else None
    times[0], q[0] = sim.time, sim.positions(joints)
    if ee is not None:
        ee[0] = sim.site_position(site)
    for k in range(1, n_steps + 1):
        sim.set_targets(demo.sample(sim.time), joints)
        sim.step()
        times[k] = sim.time
        q[k] = sim.positions(joints)
        if ee is not None:
            ee[k] = sim.site_position(site)
    return times, q, ee


def synthesize(out_dir, episodes: int, duration_s: float, seed: int, scene: str = "arm7",
               rate_hz: float | None = None, progress: bool = True,
               config: DemonstratorConfig | None = None, control_dt: float = 0.02) -> list[Path]:
    """Run `episodes` demonstrations of `duration_s` seconds through the physics; write CSVs.

    Samples are at the control rate (1 / control_dt) unless `rate_hz` is given, in which case
    the measured trajectory is linearly interpolated at ``arange(T) / rate_hz``. Each file
    holds ``T = round(duration_s * rate)`` rows. In "teacher_learner" the teacher arm is driven
    and its joint names are written without the ``teacher_`` prefix. Returns the CSV paths.
    """
    from .arm_sim import ArmSim  # mujoco only when synthesizing

    if scene not in DRIVEN_PREFIX:
        raise ValueError(f"unknown scene {scene!r}; available scenes: {sorted(DRIVEN_PREFIX)}")
    episodes = int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if rate_hz is not None and not rate_hz > 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")

    sim = ArmSim(scene_path(scene), control_dt=control_dt)
    prefix = DRIVEN_PREFIX[scene]
    joints = sim.robot_joints(prefix) if prefix else list(sim.joint_names)
    out_names = [ArmSim.strip_prefix(n, prefix) for n in joints]
    lo, hi = sim.joint_limits(joints)
    demo = Demonstrator(joints, lo, hi, config, seed=0)
    site = f"{prefix}end_effector" if f"{prefix}end_effector" in sim.site_names() else None
    columns = out_names + (END_EFFECTOR_COLUMNS if site else [])

    rate = (1.0 / sim.control_dt) if rate_hz is None else float(rate_hz)
    n_rows = max(1, int(round(duration_s * rate)))
    out_times = np.arange(n_rows) / rate
    n_steps = int(np.ceil(out_times[-1] / sim.control_dt - 1e-9))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from .robot import robot_description_urdf

    (out / "robot_description.urdf").write_text(
        robot_description_urdf(scene, out_names, sim.joint_types(joints), lo, hi))
    paths: list[Path] = []
    seeds = episode_seeds(seed, episodes)
    iterator = range(episodes)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"synth {scene}", unit="ep")
    for i in iterator:
        times, q, ee = run_episode(sim, demo, joints, n_steps, seeds[i], site)
        if ee is not None:
            q = np.concatenate([q, ee], axis=1)
        if rate_hz is None or abs(rate_hz * sim.control_dt - 1.0) < 1e-9:
            q_out = q[:n_rows]  # samples are exactly the control steps
        else:
            q_out = np.stack([np.interp(out_times, times, q[:, j]) for j in range(q.shape[1])], axis=1)
        path = out / f"episode_{i:03d}.csv"
        write_csv(path, out_times, q_out, columns)
        demo.sample(out_times[-1])  # segment list covers every written row
        segs = [{"start_time": round(float(s), 6), "primitive": name}
                for s, name in demo.segments if s <= out_times[-1]]
        (out / f"episode_{i:03d}.segments.json").write_text(json.dumps(segs, indent=1) + "\n")
        paths.append(path)
    sim.close()
    return paths
