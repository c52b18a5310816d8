"""Imitation settings derived from a robot's own recordings instead of the bundled arm's numbers.

Pure numpy. Two figures matter when the ER node drives a position-controlled learner:

- ``lead``: the learner's servo reaches a commanded position some time after the command. The
  teacher has the same servos, so that lag is measured: in the physics for a sim robot
  (``imitation_settings_in_sim``, no transport jitter), else on recordings that hold the commands
  (the shift that best maps the teacher's commands onto its measured joints). To it comes one
  model step (1 / model rate): ER's prediction trails the observed motion by about that much (on
  the bundled arm and the Jaco the learner's residual lag was 0.06-0.09 s at 10 Hz). Commanding
  the prediction ``lead`` seconds ahead cancels both.
- ``max_step``: the safety filter's cap per command. Too low and the learner cannot follow the
  fastest demonstrated motion (it falls behind and overshoots); too high removes the guard. It is
  set from the fastest per-command change seen in the demonstrations, with headroom.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["servo_lag_in_sim", "imitation_settings_in_sim", "ImitationSettings", "servo_lag", "max_step_for", "suggest_imitation_settings", "command_streams"]


@dataclass
class ImitationSettings:
    lead: float  # s
    max_step: float  # joint units per command
    lag_rmse: float  # RMSE of the lag fit (joint units): how well one delay explains the servo
    notes: str


def servo_lag(cmd_t: np.ndarray, cmd_q: np.ndarray, meas_t: np.ndarray, meas_q: np.ndarray,
              max_lag: float = 0.5, resolution: float = 0.01) -> tuple[float, float]:
    """(lag in s, RMSE) of `meas_q` (measured, [N, D]) behind `cmd_q` (commanded, [M, D]).

    Both on their own time stamps (same clock); the lag minimises the RMSE between the measured
    joints and the commands delayed by it, over a grid of `resolution` s up to `max_lag`."""
    cmd_t, meas_t = np.asarray(cmd_t, float), np.asarray(meas_t, float)
    cmd_q, meas_q = np.atleast_2d(np.asarray(cmd_q, float)), np.atleast_2d(np.asarray(meas_q, float))
    if cmd_q.shape[1] != meas_q.shape[1]:
        raise ValueError(f"commands have {cmd_q.shape[1]} joints, measurements {meas_q.shape[1]}")
    if len(cmd_t) < 2 or len(meas_t) < 2:
        raise ValueError("need at least 2 commands and 2 measurements to estimate a lag")
    best = (0.0, np.inf)
    for lag in np.arange(0.0, max_lag + 1e-9, resolution):
        ok = (meas_t - lag >= cmd_t[0]) & (meas_t - lag <= cmd_t[-1])
        if ok.sum() < 2:
            continue
        delayed = np.stack([np.interp(meas_t[ok] - lag, cmd_t, cmd_q[:, j]) for j in range(cmd_q.shape[1])], 1)
        err = float(np.sqrt(np.mean((delayed - meas_q[ok]) ** 2)))
        if err < best[1]:
            best = (float(lag), err)
    return best


def max_step_for(times: np.ndarray, q: np.ndarray, command_rate: float, headroom: float = 3.0,
                 quantile: float = 99.9) -> float:
    """`headroom` x the `quantile` (percent) of the per-command joint change in a demonstration."""
    times, q = np.asarray(times, float), np.atleast_2d(np.asarray(q, float))
    speed = np.abs(np.diff(q, axis=0)) / np.diff(times)[:, None]  # [T-1, D] units/s
    return float(headroom * np.percentile(speed, quantile) / command_rate)


def suggest_imitation_settings(commands: list[tuple[np.ndarray, np.ndarray]],
                               measured: list[tuple[np.ndarray, np.ndarray]],
                               command_rate: float, model_rate: float = 10.0) -> ImitationSettings:
    """Lead and max_step from (times, commands) and (times, measured joints) of the same episodes."""
    if not commands or len(commands) != len(measured):
        raise ValueError(f"need commands and measurements of the same episodes, got {len(commands)} "
                         f"and {len(measured)}")
    lags, errs = [], []
    for (ct, cq), (mt, mq) in zip(commands, measured):
        lag, err = servo_lag(ct, cq, mt, mq)
        lags.append(lag)
        errs.append(err)
    steps = [max_step_for(mt, mq, command_rate) for mt, mq in measured]
    lag, step = float(np.median(lags)), float(max(steps))
    lead = lag + 1.0 / model_rate
    return ImitationSettings(lead, step, float(np.median(errs)),
                             f"servo lag {lag:.2f} s on the recordings (median over {len(lags)} episodes, fit RMSE "
                             f"{np.median(errs):.3g}) + one model step {1.0 / model_rate:g} s = lead {lead:.2f} s; "
                             f"max_step {step:.3g} per command at {command_rate:g} Hz "
                             f"(3 x the 99.9th percentile of the demonstrated speed)")


def imitation_settings_in_sim(scene: str, position_kp: float = 0.0, model_rate: float = 10.0,
                              command_rate: float = 50.0) -> ImitationSettings:
    """Lead and max_step of a sim robot, measured in the physics (see servo_lag_in_sim)."""
    lag, err, step = servo_lag_in_sim(scene, position_kp, control_dt=1.0 / command_rate)
    lead = lag + 1.0 / model_rate
    return ImitationSettings(lead, step, err,
                             f"servo lag {lag:.2f} s in the physics (fit RMSE {err:.3g}) + one model step "
                             f"{1.0 / model_rate:g} s = lead {lead:.2f} s; max_step {step:.3g} per command at "
                             f"{command_rate:g} Hz (3 x the 99.9th percentile of the demonstrated speed)")


def command_streams(bags, joint_topic: str):
    """Per rosbag2 recording: ((times, commands), (times, measured)) of a robot, for
    suggest_imitation_settings. Commands: Float64MultiArray on `<namespace>/<controller>/commands`
    (bag time); measured: the same joints from `joint_topic` (header stamps: the same clock when the
    recorder runs on sim time). The commands are ordered like the robot's rotary joints (what the
    demonstrator sends by default). Raises RuntimeError when a bag has no commands."""
    from pathlib import Path

    from rosbags.highlevel import AnyReader

    from pvrnn_ros.core.data import read_joint_types

    ns = joint_topic.rstrip("/").rsplit("/", 1)[0]
    commands, measured = [], []
    for bag in bags:
        bag = Path(bag)
        types = read_joint_types(bag, joint_topic) or {}
        ct, cq, mt, mq, names = [], [], [], [], None
        with AnyReader([bag]) as reader:
            cmd_topics = sorted(c.topic for c in reader.connections if c.msgtype == "std_msgs/msg/Float64MultiArray"
                                and c.topic.startswith(ns + "/") and c.topic.endswith("/commands"))
            conns = [c for c in reader.connections if c.topic in (joint_topic, *cmd_topics[:1])]
            for conn, stamp, raw in reader.messages(connections=conns):
                msg = reader.deserialize(raw, conn.msgtype)
                if conn.topic != joint_topic:
                    ct.append(stamp * 1e-9)
                    cq.append(np.asarray(msg.data, dtype=float))
                    continue
                if names is None:
                    names = [n for n in msg.name if types.get(n, "revolute") != "prismatic"]
                pos = dict(zip(msg.name, msg.position))
                mt.append(msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec)
                mq.append([pos[n] for n in names])
        if not ct or not mt:
            raise RuntimeError(f"{bag}: no commands under {ns}/ or no {joint_topic} recorded; cannot measure "
                               "the servo lag")
        cq_arr = np.stack(cq)
        if cq_arr.shape[1] != len(names):
            raise RuntimeError(f"{bag}: commands have {cq_arr.shape[1]} values, {joint_topic} has {len(names)} "
                               f"rotary joints {names}; cannot match them")
        commands.append((np.asarray(ct), cq_arr))
        measured.append((np.asarray(mt), np.asarray(mq)))
    return commands, measured


def servo_lag_in_sim(scene: str, position_kp: float = 0.0, seconds: float = 30.0, seed: int = 0,
                     control_dt: float = 0.02, unlimited_range: float = 1.5) -> tuple[float, float, float]:
    """(lag s, fit RMSE, max_step per control step) of a model's robot driven by its default
    demonstrator through the physics (no DDS, so no transport jitter in the figure).

    `scene`: a one-robot MJCF (servos added with `position_kp` where the model has none) or a bundled
    scene (its first robot)."""
    from .arm_sim import ArmSim
    from .robot import demonstrator_for, load_robot, resolve_scene, robot_joints
    from .scenes import SCENES, spec_with_position_servos

    if scene in SCENES:
        probe, prefix = load_robot(scene, "auto", "teacher")
        sim = ArmSim(resolve_scene(scene), control_dt=control_dt)
    else:
        probe, prefix = load_robot(scene, "")
        sim = ArmSim(spec_with_position_servos(resolve_scene(scene), position_kp), control_dt=control_dt)
    info = robot_joints(probe, prefix)
    probe.close()
    info = info.select(info.default_command_joints())
    demo = demonstrator_for(info, unlimited_range, seed=seed)
    full = [prefix + n for n in info.names]
    sim.reset(positions=dict(zip(full, demo.sample(0.0))))
    n = int(round(seconds / sim.control_dt))
    t = np.empty(n)
    cmd = np.empty((n, len(full)))
    meas = np.empty((n, len(full)))
    for k in range(n):
        t[k] = sim.time
        cmd[k] = sim.set_targets(demo.sample(sim.time), full)
        sim.step()
        meas[k] = sim.positions(full)
    sim.close()
    lag, err = servo_lag(t, cmd, t + sim.control_dt, meas)
    return lag, err, max_step_for(t, meas, 1.0 / sim.control_dt)
