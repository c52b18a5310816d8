"""Locate the bundled MJCF scenes (sim/*.xml) in a source checkout or an installed package."""
from __future__ import annotations

from pathlib import Path

SCENES: dict[str, str] = {
    "arm7": "arm7.xml",
    "teacher_learner": "teacher_learner.xml",
}


def _candidate_dirs() -> list[Path]:
    dirs = [Path(__file__).resolve().parents[2] / "sim"]  # repo checkout: <repo>/sim
    try:  # colcon / ament install: share/pvrnn_ros/sim
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory("pvrnn_ros")) / "sim")
    except Exception:  # not a ROS environment, or package not in the ament index
        pass
    # pip install puts data_files under <prefix>/share/pvrnn_ros/sim
    import sys

    for prefix in {sys.prefix, sys.exec_prefix}:
        dirs.append(Path(prefix) / "share" / "pvrnn_ros" / "sim")
    return dirs


def available_scenes() -> list[str]:
    return sorted(SCENES)


def scene_dir() -> Path:
    """The first directory holding the bundled scenes."""
    for d in _candidate_dirs():
        if (d / SCENES["arm7"]).is_file():
            return d
    raise FileNotFoundError("bundled MJCF scenes not found; looked in: "
                            + ", ".join(str(d) for d in _candidate_dirs()))


def scene_path(name: str) -> Path:
    """Path of a bundled scene: ``"arm7"`` (one arm) or ``"teacher_learner"`` (two arms)."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; available scenes: {', '.join(available_scenes())}")
    for d in _candidate_dirs():
        path = d / SCENES[name]
        if path.is_file():
            return path
    raise FileNotFoundError(f"scene {name!r} ({SCENES[name]}) not found; looked in: "
                            + ", ".join(str(d) for d in _candidate_dirs()))


def robot_pair_spec(mjcf, prefixes: tuple[str, ...] = ("teacher_", "learner_"), spacing: float = 1.0,
                    position_kp: float = 0.0, position_dampratio: float = 1.0):
    """One world holding a copy of a one-robot MJCF per prefix (a teacher/learner pair), as an `MjSpec`.

    The user's file is read as it is (its meshes, defaults and includes stay where they are; nothing
    is copied): each copy is attached with MuJoCo's attach at y = spacing/2, -spacing/2, ... with
    every name prefixed (``joint_1`` -> ``teacher_joint_1``). The physics options (timestep,
    integrator, gravity) and keyframes of the file carry over. ``position_kp > 0`` adds a position
    servo (gain kp, damping ratio ``position_dampratio``) to every hinge/slide joint that no actuator
    drives yet -- for models shipped with motors or without actuators, such as dm_control's Kinova Jaco.
    """
    import mujoco  # here, so that importing scenes stays light

    if not prefixes or len(set(prefixes)) != len(prefixes) or not all(prefixes):
        raise ValueError(f"prefixes must be distinct non-empty strings, got {list(prefixes)}")
    if not (position_kp >= 0 and position_dampratio >= 0):
        raise ValueError(f"position_kp and position_dampratio must be >= 0, got {position_kp}, {position_dampratio}")
    path = Path(mjcf)
    if not path.is_file():
        raise FileNotFoundError(f"MJCF file not found: {path}")

    def robot() -> "mujoco.MjSpec":
        return spec_with_position_servos(path, position_kp, position_dampratio)

    first = robot()
    world = mujoco.MjSpec()
    world.modelname = f"{first.modelname or path.stem}_pair"
    world.option.timestep = first.option.timestep
    world.option.integrator = first.option.integrator
    world.option.gravity = first.option.gravity
    world.worldbody.add_light(name="pair_light", pos=[0, 0, 3], dir=[0, 0, -1])
    n = len(prefixes)
    for k, prefix in enumerate(prefixes):
        frame = world.worldbody.add_frame(pos=[0.0, spacing * ((n - 1) / 2 - k), 0.0])
        world.attach(first if k == 0 else robot(), prefix=prefix, frame=frame)
    _merge_keyframes(world, [k.name for k in first.keys], prefixes)
    return world


def _merge_keyframes(world, names: list[str], prefixes) -> None:
    """Attaching gives one keyframe per copy ("teacher_home", "learner_home"), each setting its own
    copy only: merge them into one keyframe per original name ("home") that poses every copy."""
    import numpy as np

    if not names:
        return
    model = world.compile()
    qpos0 = np.asarray(model.qpos0)
    keys = {k.name: k for k in world.keys}
    for name in names:
        parts = [keys[p + name] for p in prefixes if p + name in keys]
        if not parts:
            continue
        qpos, ctrl = qpos0.copy(), np.zeros(model.nu)
        for key in parts:
            kq = np.asarray(key.qpos, dtype=float)
            if kq.size == qpos.size:
                qpos += kq - qpos0  # each part differs from qpos0 only on its own copy's joints
            kc = np.asarray(key.ctrl, dtype=float)
            if kc.size == ctrl.size:
                ctrl += kc
        for key in parts:
            world.delete(key)
        world.add_key(name=name or "start", qpos=qpos.tolist(), ctrl=ctrl.tolist())


def spec_with_position_servos(mjcf, position_kp: float = 0.0, position_dampratio: float = 1.0):
    """The MJCF file as an `MjSpec`, with a position servo on every named hinge/slide joint that no
    actuator drives when ``position_kp > 0``."""
    import mujoco

    path = Path(mjcf)
    try:
        spec = mujoco.MjSpec.from_file(str(path))
    except ValueError as exc:
        raise ValueError(f"failed to load MJCF {path}: {exc}") from None
    if position_kp > 0:
        driven = {a.target for a in spec.actuators if a.trntype == mujoco.mjtTrn.mjTRN_JOINT}
        for joint in spec.joints:
            if joint.type in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE) \
                    and joint.name and joint.name not in driven:
                act = spec.add_actuator(name=f"{joint.name}_position", target=joint.name,
                                        trntype=mujoco.mjtTrn.mjTRN_JOINT)
                act.set_to_position(kp=float(position_kp), dampratio=float(position_dampratio))
    return spec
