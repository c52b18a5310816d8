"""Scripted demonstrator: smooth joint-space motion primitives chained by a probabilistic FSM.

Pure numpy (no mujoco): training code and tests can import it to make kinematic data.

Primitives
----------
Each primitive is a smooth curve in *normalised* joint space ``u`` (``u = -1`` at the lower
joint limit, ``+1`` at the upper), so it adapts to any arm's limits. Every primitive starts and
ends at the shared via posture ``HOME_U`` with zero velocity and acceleration (minimum-jerk
segments / a minimum-jerk envelope), so any chain of primitives is C2-continuous at the joins.
All primitives stay within ``|u| <= 0.85`` even with amplitude jitter, i.e. inside the limits.

The 7 columns of a primitive are joint *roles* (``DEFAULT_JOINT_NAMES``). For another arm
(``assign_roles``): roles given by name win; else a joint whose name ends with a default name
(``teacher_elbow`` -> ``elbow``) gets that role; the remaining joints take the unused roles in
role order, and joints beyond seven get the role ``hold`` (they stay at their via posture).
``Demonstrator.role_report()`` says which joint got which role and why.

FSM
---
``DemonstratorConfig.transitions[a][b]`` is the probability that ``b`` follows ``a``. The
default mixes genuinely probabilistic branches (after ``reach_left``: 70 % ``circle``, 30 %
``wave``) with deterministic ones (``circle`` is always followed by ``rest``). Each segment's
duration is its nominal duration times ``1 + U(-jitter, jitter)``; its amplitude is scaled by
``1 + U(-amplitude_jitter, amplitude_jitter)``.

API (time-indexed, rate-independent)
------------------------------------
``Demonstrator.sample(t)`` returns the joint-target vector at time ``t >= 0`` seconds since
``reset``. Segments are drawn lazily as ``t`` grows; the trajectory for a seed does not depend
on how (or how often) it is sampled. After ``sample(t)``, ``current_primitive`` is the primitive
active at ``t`` and ``segments`` lists ``(start_time, name)`` of all segments started by ``t``.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_JOINT_NAMES",
    "DEFAULT_JOINT_LIMITS",
    "DEFAULT_TRANSITIONS",
    "DEFAULT_DURATIONS",
    "HOME_U",
    "PRIMITIVES",
    "Demonstrator",
    "ROLE_NAMES",
    "assign_roles",
    "fit_working_range",
    "DemonstratorConfig",
    "default_limits",
    "home_position",
    "kinematic_episode",
]

DEFAULT_JOINT_NAMES: tuple[str, ...] = (
    "shoulder_pan",
    "shoulder_lift",
    "upper_arm_roll",
    "elbow",
    "forearm_roll",
    "wrist_flex",
    "wrist_roll",
)

# (lower, upper) in radians -- must match sim/arm7.xml (checked by a test).
DEFAULT_JOINT_LIMITS: dict[str, tuple[float, float]] = {
    "shoulder_pan": (-2.8, 2.8),
    "shoulder_lift": (-1.75, 1.75),
    "upper_arm_roll": (-2.8, 2.8),
    "elbow": (0.0, 2.6),
    "forearm_roll": (-2.8, 2.8),
    "wrist_flex": (-1.7, 1.7),
    "wrist_roll": (-2.9, 2.9),
}

# Via ("home") posture in normalised coordinates, one entry per role. Matches the "home"
# keyframe of sim/arm7.xml: q = (0, 0.4375, 0, 1.56, 0, -0.425, 0).
HOME_U = np.array([0.0, 0.25, 0.0, 0.2, 0.0, -0.25, 0.0])

N_ROLES = len(DEFAULT_JOINT_NAMES)
HOLD = "hold"  # a role that keeps the joint at its via posture (index N_ROLES)
ROLE_NAMES: tuple[str, ...] = DEFAULT_JOINT_NAMES + (HOLD,)
U_MAX = 0.95  # hard guard; primitives are designed to stay below 0.85


# --------------------------------------------------------------------------- shapes
def _minjerk(x):
    """Minimum-jerk blend 0 -> 1 on x in [0, 1] (zero velocity/acceleration at both ends)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))


def _envelope(s: float, ramp: float = 0.2) -> float:
    """Smooth 0 -> 1 -> 0 window over s in [0, 1] with minimum-jerk ramps of width `ramp`."""
    return float(_minjerk(s / ramp) * _minjerk((1.0 - s) / ramp))


def _via(s: float, knots: Sequence[tuple[float, np.ndarray]]) -> np.ndarray:
    """Piecewise minimum-jerk interpolation through (phase, offset) knots."""
    for (s0, u0), (s1, u1) in zip(knots[:-1], knots[1:]):
        if s <= s1:
            return u0 + (u1 - u0) * _minjerk((s - s0) / (s1 - s0))
    return knots[-1][1]


def _vec(**kw: float) -> np.ndarray:
    v = np.zeros(N_ROLES)
    for name, val in kw.items():
        v[DEFAULT_JOINT_NAMES.index(name)] = val
    return v


_ZERO = np.zeros(N_ROLES)
_REACH_LEFT = _vec(shoulder_pan=0.35, shoulder_lift=0.2, elbow=-0.35, forearm_roll=0.12, wrist_flex=0.2,
                   wrist_roll=0.15)
_REACH_RIGHT = _vec(shoulder_pan=-0.35, shoulder_lift=0.25, elbow=-0.3, forearm_roll=-0.12, wrist_flex=0.1,
                    wrist_roll=-0.15)


def _rest(s: float, a: float) -> np.ndarray:
    w = 2.0 * math.pi * s
    return _envelope(s, 0.3) * a * _vec(shoulder_pan=0.03 * math.sin(w), wrist_flex=0.06 * math.sin(w),
                                        shoulder_lift=-0.03 * (1 - math.cos(w)))


def _reach_left(s: float, a: float) -> np.ndarray:
    return _via(s, [(0.0, _ZERO), (0.4, a * _REACH_LEFT), (0.6, a * _REACH_LEFT), (1.0, _ZERO)])


def _reach_right(s: float, a: float) -> np.ndarray:
    return _via(s, [(0.0, _ZERO), (0.4, a * _REACH_RIGHT), (0.6, a * _REACH_RIGHT), (1.0, _ZERO)])


def _circle(s: float, a: float) -> np.ndarray:
    th = 2.0 * math.pi * 2.0 * s  # two loops
    return _envelope(s, 0.2) * a * _vec(
        shoulder_pan=0.16 * math.sin(th),
        shoulder_lift=0.1 + 0.12 * math.cos(th),
        elbow=-0.1 - 0.1 * math.cos(th),
        wrist_flex=0.1 * math.sin(th),
        upper_arm_roll=0.06 * math.cos(th),
        wrist_roll=0.1 * math.sin(th),
    )


def _wave(s: float, a: float) -> np.ndarray:
    th = 2.0 * math.pi * 2.0 * s  # two waves
    raise_ = _envelope(s, 0.25)
    return a * (raise_ * _vec(shoulder_lift=-0.15, elbow=0.35, upper_arm_roll=0.1)
                + _envelope(s, 0.3) * _vec(forearm_roll=0.12 * math.sin(th),
                                           wrist_flex=0.25 * math.sin(th + 0.5 * math.pi),
                                           shoulder_pan=0.04 * math.sin(th)))


PRIMITIVES: dict[str, Callable[[float, float], np.ndarray]] = {
    "rest": _rest,
    "reach_left": _reach_left,
    "reach_right": _reach_right,
    "circle": _circle,
    "wave": _wave,
}

DEFAULT_DURATIONS: dict[str, float] = {
    "rest": 2.0,
    "reach_left": 2.5,
    "reach_right": 2.5,
    "circle": 3.0,
    "wave": 2.5,
}

DEFAULT_TRANSITIONS: dict[str, dict[str, float]] = {
    "rest": {"reach_left": 0.5, "reach_right": 0.5},
    "reach_left": {"circle": 0.7, "wave": 0.3},
    "reach_right": {"wave": 1.0},
    "circle": {"rest": 1.0},
    "wave": {"rest": 0.6, "reach_left": 0.4},
}


# --------------------------------------------------------------------------- config
@dataclass
class DemonstratorConfig:
    """FSM and timing of the demonstrator.

    transitions: ``{from: {to: prob}}``; every row must sum to 1, every name must be a known
        primitive (``PRIMITIVES``), and every reachable primitive must have a row.
    durations: nominal seconds per primitive (defaults from ``DEFAULT_DURATIONS``).
    jitter: relative duration jitter; each segment lasts ``nominal * (1 + U(-jitter, jitter))``.
    amplitude_jitter: relative amplitude jitter per segment (at most 0.1 keeps within limits).
    start: the first primitive of every episode.
    """

    transitions: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TRANSITIONS.items()})
    durations: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_DURATIONS))
    jitter: float = 0.15
    amplitude_jitter: float = 0.1
    start: str = "rest"

    @classmethod
    def from_matrix(cls, names: Sequence[str], matrix, **kwargs) -> "DemonstratorConfig":
        """Build from a square matrix ``matrix[i][j] = P(names[j] | names[i])``."""
        m = np.asarray(matrix, dtype=float)
        if m.shape != (len(names), len(names)):
            raise ValueError(f"transition matrix shape {m.shape} does not match {len(names)} names")
        trans = {a: {b: float(m[i, j]) for j, b in enumerate(names) if m[i, j] != 0.0}
                 for i, a in enumerate(names)}
        kwargs.setdefault("start", names[0])
        return cls(transitions=trans, **kwargs)

    def validate(self) -> None:
        known = sorted(PRIMITIVES)
        if not self.transitions:
            raise ValueError("transitions is empty")

        def check(name: str, where: str) -> None:
            if name not in PRIMITIVES:
                raise ValueError(f"unknown primitive {name!r} in {where}; known primitives: {known}")

        for src, row in self.transitions.items():
            check(src, "transitions")
            if not isinstance(row, Mapping) or not row:
                raise ValueError(f"transitions[{src!r}] must be a non-empty dict of probabilities")
            for dst, p in row.items():
                check(dst, f"transitions[{src!r}]")
                if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0.0):
                    raise ValueError(f"transitions[{src!r}][{dst!r}] = {p!r} is not a probability >= 0")
                if dst not in self.transitions:
                    raise ValueError(f"primitive {dst!r} is reachable from {src!r} but has no row in transitions")
            total = float(sum(row.values()))
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"transitions[{src!r}] sums to {total:.6g}, must sum to 1")
        check(self.start, "start")
        if self.start not in self.transitions:
            raise ValueError(f"start primitive {self.start!r} has no row in transitions")
        for name, d in self.durations.items():
            check(name, "durations")
            if not (isinstance(d, (int, float)) and math.isfinite(d) and d > 0):
                raise ValueError(f"durations[{name!r}] = {d!r} must be > 0")
        for name in self.transitions:
            if name not in self.durations:
                raise ValueError(f"no duration for primitive {name!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if not 0.0 <= self.amplitude_jitter <= 0.1:
            raise ValueError(f"amplitude_jitter must be in [0, 0.1] (keeps targets inside limits), "
                             f"got {self.amplitude_jitter}")


# --------------------------------------------------------------------------- helpers
def _role_of(name: str, index: int) -> int:
    if name in DEFAULT_JOINT_NAMES:
        return DEFAULT_JOINT_NAMES.index(name)
    for i, base in enumerate(DEFAULT_JOINT_NAMES):
        if name.endswith("_" + base):
            return i
    return index % N_ROLES


def assign_roles(joint_names: Sequence[str], roles: Sequence[str] | None = None,
                 types: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """(role per joint, why per joint). `roles`: one role name per joint (``ROLE_NAMES``), or
    empty strings to leave a joint to the automatic choice (by name suffix, then the unused
    roles in order, then ``hold``). With `types`, prismatic joints (gripper slides) hold unless
    given a role."""
    names = list(joint_names)
    given = list(roles) if roles else [""] * len(names)
    if len(given) != len(names):
        raise ValueError(f"roles has {len(given)} entries for {len(names)} joints {names}; "
                         f"give one role per joint (one of {list(ROLE_NAMES)}, '' = automatic)")
    out: list[str | None] = [None] * len(names)
    why = [""] * len(names)
    for i, r in enumerate(given):
        if r:
            if r not in ROLE_NAMES:
                raise ValueError(f"role {r!r} for joint {names[i]!r} is not a primitive role; "
                                 f"roles: {list(ROLE_NAMES)}")
            out[i], why[i] = r, "given"
        elif types is not None and types[i] == "prismatic":
            out[i], why[i] = HOLD, "prismatic"
    for i, n in enumerate(names):
        if out[i] is None:
            base = n if n in DEFAULT_JOINT_NAMES else next(
                (b for b in DEFAULT_JOINT_NAMES if n.endswith("_" + b)), None)
            if base is not None:
                out[i], why[i] = base, "by name"
    free = [r for r in DEFAULT_JOINT_NAMES if r not in out]
    for i in range(len(names)):
        if out[i] is None:
            out[i], why[i] = (free.pop(0), "next unused role") if free else (HOLD, "all 7 roles taken")
    return [str(r) for r in out], why


def fit_working_range(lower, upper, roles: Sequence[str], start=None) -> tuple[np.ndarray, np.ndarray]:
    """The (lower, upper) a Demonstrator should be given so that its via posture is `start`.

    Without `start` the limits come back unchanged. With it, each joint's range keeps its width
    where it can and is shifted so that the role's via posture ``HOME_U`` lands on ``start``; it is
    narrowed where that would leave the limits (the returned range lies inside them).
    """
    lo = np.asarray(lower, dtype=float).reshape(-1)
    hi = np.asarray(upper, dtype=float).reshape(-1)
    if start is None:
        return lo.copy(), hi.copy()
    q0 = np.clip(np.asarray(start, dtype=float).reshape(-1), lo, hi)
    u0 = np.array([np.append(HOME_U, 0.0)[ROLE_NAMES.index(r)] for r in roles])
    half = 0.5 * (hi - lo)
    # room on each side of q0 for the whole normalised range u in [-1, 1] around the via posture u0
    half = np.minimum(half, (q0 - lo) / (u0 + 1.0))
    half = np.minimum(half, (hi - q0) / (1.0 - u0))
    half = np.maximum(half, 1e-6)
    center = q0 - u0 * half
    return center - half, center + half


def default_limits(joint_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """arm7 joint limits for `joint_names` (default names, or prefixed ones like ``teacher_elbow``)."""
    names = list(DEFAULT_JOINT_NAMES if joint_names is None else joint_names)
    lo, hi = [], []
    for n in names:
        base = n if n in DEFAULT_JOINT_LIMITS else next(
            (b for b in DEFAULT_JOINT_NAMES if n.endswith("_" + b)), None)
        if base is None:
            raise ValueError(f"unknown joint {n!r}: arm7 joints are {list(DEFAULT_JOINT_NAMES)} "
                             "(optionally with a prefix, e.g. 'teacher_elbow')")
        lo.append(DEFAULT_JOINT_LIMITS[base][0])
        hi.append(DEFAULT_JOINT_LIMITS[base][1])
    return np.array(lo), np.array(hi)


def home_position(joint_names: Sequence[str] | None = None) -> np.ndarray:
    """The via/home posture (radians) of the arm7 joints `joint_names`."""
    names = list(DEFAULT_JOINT_NAMES if joint_names is None else joint_names)
    lo, hi = default_limits(names)
    roles = [_role_of(n, i) for i, n in enumerate(names)]
    return 0.5 * (lo + hi) + HOME_U[roles] * 0.5 * (hi - lo)


# --------------------------------------------------------------------------- demonstrator
class Demonstrator:
    """Joint-space demonstrator: ``q = demo.sample(t)`` (see module docstring)."""

    def __init__(self, joint_names: Sequence[str] | None = None, lower=None, upper=None,
                 config: DemonstratorConfig | None = None, seed: int | None = 0,
                 roles: Sequence[str] | None = None, types: Sequence[str] | None = None):
        self.joint_names = list(DEFAULT_JOINT_NAMES if joint_names is None else joint_names)
        n = len(self.joint_names)
        if n == 0:
            raise ValueError("joint_names is empty")
        if lower is None or upper is None:
            dlo, dhi = default_limits(self.joint_names)
            lower = dlo if lower is None else lower
            upper = dhi if upper is None else upper
        self.lower = np.asarray(lower, dtype=float).reshape(-1)
        self.upper = np.asarray(upper, dtype=float).reshape(-1)
        if self.lower.shape != (n,) or self.upper.shape != (n,):
            raise ValueError(f"lower/upper must have {n} entries (one per joint), "
                             f"got {self.lower.shape[0]} and {self.upper.shape[0]}")
        if not (np.all(np.isfinite(self.lower)) and np.all(np.isfinite(self.upper))
                and np.all(self.upper > self.lower)):
            raise ValueError("joint limits must be finite with upper > lower for every joint")
        self.config = config if config is not None else DemonstratorConfig()
        self.config.validate()
        self.roles, self._role_why = assign_roles(self.joint_names, roles, types)
        self._roles = np.array([ROLE_NAMES.index(r) for r in self.roles])
        self._center = 0.5 * (self.lower + self.upper)
        self._half = 0.5 * (self.upper - self.lower)
        self.home = self._to_q(HOME_U)
        self.reset(seed)

    # -- state
    def reset(self, seed: int | None = None) -> None:
        """Restart at t = 0 with the start primitive; `seed=None` keeps the constructor's seed."""
        if seed is not None or not hasattr(self, "seed"):
            self.seed = seed
        self._rng = np.random.default_rng(self.seed)
        self._starts: list[float] = []
        self._segs: list[tuple[str, float, float]] = []  # (name, duration, amplitude)
        self._end = 0.0
        self._t = 0.0
        self._append(self.config.start)

    def _append(self, name: str) -> None:
        cfg = self.config
        dur = cfg.durations[name] * (1.0 + self._rng.uniform(-cfg.jitter, cfg.jitter))
        amp = 1.0 + self._rng.uniform(-cfg.amplitude_jitter, cfg.amplitude_jitter)
        self._starts.append(self._end)
        self._segs.append((name, dur, amp))
        self._end += dur

    def _next_name(self, name: str) -> str:
        row = self.config.transitions[name]
        names = list(row)
        probs = np.array([row[k] for k in names], dtype=float)
        return names[int(self._rng.choice(len(names), p=probs / probs.sum()))]

    def _extend_to(self, t: float) -> None:
        while self._end <= t:
            self._append(self._next_name(self._segs[-1][0]))

    def role_report(self) -> str:
        """One line per joint: its role and how it got it."""
        return "; ".join(f"{n} -> {r} ({w})" for n, r, w in zip(self.joint_names, self.roles, self._role_why))

    def _to_q(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(np.append(u, 0.0)[self._roles], -U_MAX, U_MAX)  # index N_ROLES: hold
        return self._center + u * self._half

    # -- sampling
    def sample(self, t: float) -> np.ndarray:
        """Joint targets (radians, joint order of `joint_names`) at time `t` >= 0 s."""
        t = float(t)
        if not (t >= 0.0 and math.isfinite(t)):
            raise ValueError(f"t must be a finite time >= 0, got {t}")
        self._extend_to(t)
        i = bisect.bisect_right(self._starts, t) - 1
        name, dur, amp = self._segs[i]
        s = (t - self._starts[i]) / dur
        self._t = max(self._t, t)
        self._cur = i
        return self._to_q(HOME_U + PRIMITIVES[name](min(s, 1.0), amp))

    @property
    def time(self) -> float:
        """Latest time sampled so far."""
        return self._t

    @property
    def current_primitive(self) -> str:
        """Primitive active at the most recently sampled time."""
        return self._segs[getattr(self, "_cur", 0)][0]

    @property
    def segments(self) -> list[tuple[float, str]]:
        """``(start_time, primitive)`` of every segment started at or before the latest sampled time."""
        return [(s, seg[0]) for s, seg in zip(self._starts, self._segs) if s <= self._t]

    def generate_segments(self, n: int) -> list[tuple[float, str]]:
        """Draw the FSM until at least `n` segments exist; returns all (start_time, name) pairs.

        Cheap (no trajectory evaluation); used for checking transition statistics.
        """
        while len(self._segs) < n:
            self._append(self._next_name(self._segs[-1][0]))
        return [(s, seg[0]) for s, seg in zip(self._starts, self._segs)]


def kinematic_episode(duration_s: float, rate_hz: float, seed: int | None,
                      joint_names: Sequence[str] | None = None,
                      config: DemonstratorConfig | None = None):
    """Sample a demonstrator episode without physics (arm7 joint limits).

    Returns ``(times, positions, segments)``: times ``(T,)`` = ``arange(T) / rate_hz`` with
    ``T = round(duration_s * rate_hz)``, positions ``(T, J)`` in radians, and segments a list
    of ``(start_time, primitive)`` for segments starting before ``duration_s``.
    `joint_names` defaults to ``DEFAULT_JOINT_NAMES``; prefixed names (``teacher_elbow``) work.
    """
    if not (duration_s > 0 and rate_hz > 0):
        raise ValueError(f"duration_s and rate_hz must be > 0, got {duration_s} and {rate_hz}")
    names = list(DEFAULT_JOINT_NAMES if joint_names is None else joint_names)
    lo, hi = default_limits(names)
    demo = Demonstrator(names, lo, hi, config, seed=seed)
    n = max(1, int(round(duration_s * rate_hz)))
    times = np.arange(n) / float(rate_hz)
    positions = np.stack([demo.sample(t) for t in times])
    segments = [(s, name) for s, name in demo.segments if s < duration_s]
    return times, positions, segments
