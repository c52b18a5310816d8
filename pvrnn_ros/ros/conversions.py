"""Message <-> array conversions, always by joint *name*; plus small stream helpers.

Pure numpy + message classes (no node, no executor), so the nodes stay thin and these
functions are unit-testable without DDS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "JointSample", "joint_state_to_array", "make_joint_state", "float64_multiarray",
    "make_trajectory", "trajectory_points", "stamp_to_sec", "sec_to_stamp", "sec_to_duration",
    "duration_to_sec", "Resampler", "TrajectoryFollower", "robot_name", "message_class",
]


# ----------------------------------------------------------------------------- time
def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time (or Duration) -> float seconds."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


duration_to_sec = stamp_to_sec


def _split(t: float) -> tuple[int, int]:
    ns = int(round(float(t) * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


def sec_to_stamp(t: float):
    from builtin_interfaces.msg import Time

    sec, nsec = _split(max(0.0, t))
    return Time(sec=sec, nanosec=nsec)


def sec_to_duration(t: float):
    from builtin_interfaces.msg import Duration

    sec, nsec = _split(t)
    return Duration(sec=sec, nanosec=nsec)


def robot_name(prefix: str) -> str:
    """Robot namespace for a joint prefix: "teacher_" -> "teacher", "" -> ""."""
    return prefix.rstrip("_/")


def message_class(type_name: str):
    """'sensor_msgs/msg/JointState' (or 'sensor_msgs/JointState') -> the Python message class."""
    import importlib

    parts = type_name.split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"not a ROS message type name: {type_name!r}")
    module = importlib.import_module(f"{parts[0]}.{parts[1]}")
    return getattr(module, parts[2])


# ----------------------------------------------------------------------------- JointState
@dataclass
class JointSample:
    """One JointState mapped onto a fixed joint list."""

    values: np.ndarray | None  # [D] in `names` order, NaN where missing or non-finite; None = unusable
    problems: list[str]  # human-readable problems (empty = clean)
    missing: list[str]
    unknown: list[str]


def joint_state_to_array(msg, names: Sequence[str], field: str = "position") -> JointSample:
    """Map `msg.<field>` onto `names` by joint name.

    Extra joints are ignored (reported in `unknown`), missing ones become NaN, non-finite
    values become NaN. A message whose name and value arrays differ in length is unusable
    (values None): we cannot tell which value belongs to which joint.
    """
    msg_names = list(msg.name)
    vals = np.asarray(getattr(msg, field), dtype=np.float64).reshape(-1)
    problems: list[str] = []
    if len(msg_names) != vals.shape[0]:
        return JointSample(None, [f"{len(msg_names)} names but {vals.shape[0]} {field} values"], [], [])
    if len(set(msg_names)) != len(msg_names):
        dup = sorted({n for n in msg_names if msg_names.count(n) > 1})
        return JointSample(None, [f"duplicate joint names {dup}"], [], [])
    index = {n: i for i, n in enumerate(msg_names)}
    out = np.full(len(names), np.nan)
    missing = []
    for j, n in enumerate(names):
        i = index.get(n)
        if i is None:
            missing.append(n)
        else:
            out[j] = vals[i]
    known = set(names)
    unknown = [n for n in msg_names if n not in known]
    if missing:
        problems.append(f"missing joints {missing}")
    bad = [names[j] for j in np.flatnonzero(~np.isfinite(out)) if names[j] not in missing]
    if bad:
        problems.append(f"non-finite {field} for joints {bad}")
    out[~np.isfinite(out)] = np.nan
    return JointSample(out, problems, missing, unknown)


def make_joint_state(names: Sequence[str], positions, velocities=None, stamp_sec: float | None = None,
                     frame_id: str = ""):
    from sensor_msgs.msg import JointState

    msg = JointState()
    if stamp_sec is not None:
        msg.header.stamp = sec_to_stamp(stamp_sec)
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in positions]
    if velocities is not None:
        msg.velocity = [float(v) for v in velocities]
    return msg


def float64_multiarray(values):
    from std_msgs.msg import Float64MultiArray

    return Float64MultiArray(data=[float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)])


# ----------------------------------------------------------------------------- trajectories
def make_trajectory(names: Sequence[str], positions: np.ndarray, dt: float, stamp=None, start: int = 1):
    """JointTrajectory of P points; point h (h = start, start+1, ...) at time_from_start = h * dt."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.joint_names = list(names)
    pos = np.asarray(positions, dtype=np.float64)
    for h, row in enumerate(pos):
        pt = JointTrajectoryPoint()
        pt.positions = [float(v) for v in row]
        pt.time_from_start = sec_to_duration((h + start) * dt)
        msg.points.append(pt)
    return msg


def trajectory_points(msg, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(times [N], positions [N, D] in `names` order with NaN for joints the message lacks, problems)."""
    problems: list[str] = []
    index = {n: i for i, n in enumerate(msg.joint_names)}
    cols = [index.get(n) for n in names]
    if all(c is None for c in cols):
        return np.zeros(0), np.zeros((0, len(names))), [f"no known joints in {list(msg.joint_names)}"]
    times, rows = [], []
    for k, pt in enumerate(msg.points):
        p = list(pt.positions)
        if len(p) != len(msg.joint_names):
            problems.append(f"point {k} has {len(p)} positions for {len(msg.joint_names)} joints")
            continue
        row = np.array([p[c] if c is not None else np.nan for c in cols], dtype=np.float64)
        times.append(duration_to_sec(pt.time_from_start))
        rows.append(row)
    t = np.asarray(times)
    if t.size > 1 and np.any(np.diff(t) <= 0):
        problems.append("time_from_start is not strictly increasing")
        return np.zeros(0), np.zeros((0, len(names))), problems
    return t, np.asarray(rows).reshape(len(rows), len(names)), problems


class TrajectoryFollower:
    """Follow trajectory points by time_from_start, linearly interpolating from the start posture."""

    def __init__(self, start_time: float, start_pos: np.ndarray, times: np.ndarray, positions: np.ndarray):
        start_pos = np.asarray(start_pos, dtype=np.float64)
        positions = np.where(np.isfinite(positions), positions, start_pos[None])  # joints absent: hold
        if times.size == 0 or times[0] > 0:
            times = np.concatenate([[0.0], times])
            positions = np.concatenate([start_pos[None], positions])
        self.t0 = float(start_time)
        self.times = times
        self.positions = positions

    @property
    def end_time(self) -> float:
        return self.t0 + float(self.times[-1])

    def sample(self, t: float) -> np.ndarray:
        s = float(t) - self.t0
        return np.array([np.interp(s, self.times, self.positions[:, j]) for j in range(self.positions.shape[1])])


# ----------------------------------------------------------------------------- resampling
class Resampler:
    """Keeps recent (t, x) samples of a stream; returns x at tick times by linear interpolation.

    Samples must arrive with increasing stamps; an older or equal stamp is rejected (`add`
    returns a problem string). Per joint, NaN samples are skipped, so a joint missing from one
    message is interpolated from its neighbours; a joint never seen recently stays NaN.
    """

    def __init__(self, n: int, keep: int = 64):
        self.n = n
        self.keep = keep
        self.t: list[float] = []
        self.x: list[np.ndarray] = []

    def clear(self) -> None:
        self.t.clear()
        self.x.clear()

    def add(self, t: float, x: np.ndarray) -> str | None:
        if not math.isfinite(t):
            return f"non-finite stamp {t}"
        if self.t and t <= self.t[-1]:
            return f"stamp {t:.6f} is not after the previous {self.t[-1]:.6f} (out of order or repeated)"
        self.t.append(float(t))
        self.x.append(np.asarray(x, dtype=np.float64).copy())
        if len(self.t) > self.keep:
            del self.t[0], self.x[0]
        return None

    @property
    def latest_time(self) -> float | None:
        return self.t[-1] if self.t else None

    def at(self, t: float, hold: float = math.inf) -> np.ndarray | None:
        """Value at time t (linear interpolation; beyond the newest sample hold it for `hold` s)."""
        if not self.t:
            return None
        if t > self.t[-1] + hold:
            return None
        ts = np.asarray(self.t)
        xs = np.stack(self.x)  # [N, D]
        out = np.full(self.n, np.nan)
        for j in range(self.n):
            ok = np.isfinite(xs[:, j])
            if ok.any():
                out[j] = np.interp(t, ts[ok], xs[ok, j])
        return out
