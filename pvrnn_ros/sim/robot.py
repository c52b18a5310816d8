"""What a node needs to know about one robot of a MuJoCo model: joints, types, limits, start pose.

Used by the demonstrator (limits and start pose from the model instead of copied by hand), the sim
node (which joints commands address, the robot description it publishes) and synth. The robot
description is a minimal URDF (joints with type and limits; links only to make it well formed):
the format real robots publish on ``robot_description``, so training reads joint types and units the
same way from a real robot's recording and from the sim's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

__all__ = ["RobotJoints", "robot_joints", "demonstrator_range", "robot_description_urdf", "resolve_scene"]

ROTARY = ("revolute", "continuous")


@dataclass
class RobotJoints:
    """One robot's actuated joints, in model order; `names` without the robot's prefix."""

    names: list[str]
    types: list[str]  # "revolute", "continuous" (unlimited hinge) or "prismatic"
    lower: np.ndarray  # -inf where unlimited
    upper: np.ndarray  # +inf where unlimited
    start: np.ndarray  # the keyframe's (or qpos0) positions, inside the limits
    keyframe: str | None  # the keyframe `start` comes from; None = qpos0
    source: str

    def select(self, joints: Sequence[str]) -> "RobotJoints":
        """The same robot restricted to `joints` (short names), in that order."""
        unknown = [j for j in joints if j not in self.names]
        if unknown:
            raise ValueError(f"joints {unknown} are not actuated joints of this robot in {self.source}; "
                             f"its joints: {self.names}")
        idx = [self.names.index(j) for j in joints]
        return RobotJoints([self.names[i] for i in idx], [self.types[i] for i in idx], self.lower[idx],
                           self.upper[idx], self.start[idx], self.keyframe, self.source)

    def default_command_joints(self) -> list[str]:
        """The joints a demonstrator drives unless told otherwise: every rotary joint; prismatic
        joints (gripper slides, linear axes) only when there are no rotary ones."""
        rotary = [n for n, t in zip(self.names, self.types) if t in ROTARY]
        return rotary or list(self.names)


def resolve_scene(scene: str) -> str:
    """A bundled scene name ("arm7", "teacher_learner") or an MJCF path -> a file path."""
    from .scenes import SCENES, scene_path

    return str(scene_path(scene)) if scene in SCENES else str(scene)


def robot_joints(sim, prefix: str = "") -> RobotJoints:
    """The actuated joints of `sim` (an ArmSim) that start with `prefix`, names without it."""
    full = sim.robot_joints(prefix) if prefix else list(sim.joint_names)
    lo, hi = sim.joint_limits(full)
    return RobotJoints([sim.strip_prefix(n, prefix) for n in full], sim.joint_types(full), lo, hi,
                       sim.start_positions(full), sim.keyframe, sim.source)


def demonstrator_range(robot: RobotJoints, unlimited_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Finite (lower, upper) for a demonstrator: the limits, and for unlimited joints the start
    position +- `unlimited_range` (rad or m)."""
    if not (unlimited_range > 0 and math.isfinite(unlimited_range)):
        raise ValueError(f"unlimited_range must be a finite half-width > 0, got {unlimited_range}")
    free = ~(np.isfinite(robot.lower) & np.isfinite(robot.upper))
    lo = np.where(free, robot.start - unlimited_range, robot.lower)
    hi = np.where(free, robot.start + unlimited_range, robot.upper)
    return lo, hi


def robot_description_urdf(name: str, joints: Sequence[str], types: Sequence[str], lower, upper) -> str:
    """A minimal URDF naming each joint's type and limits (a serial chain of empty links)."""
    lines = [f"<robot name={quoteattr(name or 'robot')}>", '  <link name="base"/>']
    parent = "base"
    for k, (j, t, lo, hi) in enumerate(zip(joints, types, lower, upper)):
        child = f"link_{k + 1}"
        lines.append(f"  <link name={quoteattr(child)}/>")
        lines.append(f"  <joint name={quoteattr(j)} type={quoteattr(t)}>")
        lines.append(f"    <parent link={quoteattr(parent)}/><child link={quoteattr(child)}/>")
        if t != "continuous" and np.isfinite(lo) and np.isfinite(hi):
            lines.append(f'    <limit lower="{float(lo):.6g}" upper="{float(hi):.6g}" effort="0" velocity="0"/>')
        lines.append("  </joint>")
        parent = child
    lines.append("</robot>")
    return "\n".join(lines) + "\n"


def load_robot(scene: str, prefix: str = "auto", robot: str = "", keyframe: str | None = "home"):
    """(ArmSim, prefix) of one robot in a bundled scene or MJCF file. A model without actuators (the
    sim node adds servos with position_kp) is read with unit servos on its hinge/slide joints.
    prefix "auto": "<robot>_" when the model has such joints, else ""."""
    from .arm_sim import ArmSim
    from .scenes import spec_with_position_servos

    path = resolve_scene(scene)
    try:
        sim = ArmSim(path, keyframe=keyframe or None)
    except ValueError as exc:
        if "driven by an actuator" not in str(exc):
            raise
        sim = ArmSim(spec_with_position_servos(path, 1.0), keyframe=keyframe or None)
    if prefix == "auto":
        prefix = f"{robot}_" if robot and any(n.startswith(f"{robot}_") for n in sim.joint_names) else ""
    return sim, prefix


def demonstrator_for(info: RobotJoints, unlimited_range: float = 1.5, roles: Sequence[str] | None = None,
                     seed: int | None = 0, config=None):
    """The Demonstrator a robot gets by default: its joints, limits (continuous joints +-
    `unlimited_range` around the start), its keyframe as via posture when it has one."""
    from .primitives import Demonstrator, assign_roles, fit_working_range

    lower, upper = demonstrator_range(info, unlimited_range)
    chosen, _ = assign_roles(info.names, roles, info.types)
    start = info.start if info.keyframe is not None else None
    lower, upper = fit_working_range(lower, upper, chosen, start)
    return Demonstrator(info.names, lower, upper, config, seed=seed, roles=roles, types=info.types)
