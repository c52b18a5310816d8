"""MuJoCo simulation layer: 7-DoF arm scenes, ArmSim, scripted demonstrator, synthesis, gym env.

Importing this package is light: mujoco is imported only by ``arm_sim``/``env``/``synth``;
``pvrnn_ros.sim.primitives`` is pure numpy. Reaching (region, IK, demonstrator, execution
measured in the sim) is ``pvrnn_ros.sim.reach``, its evaluation against baselines ``reach_eval``.
The gymnasium env ``pvrnn_ros/ArmImitation-v0`` is registered here (lazy entry point) when
gymnasium is installed.
"""
from __future__ import annotations

import os

# Headless default for offscreen rendering (takes effect only if mujoco is not imported yet).
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

from .scenes import available_scenes, scene_path

__all__ = ["ENV_ID", "ArmSim", "available_scenes", "scene_path"]

ENV_ID = "pvrnn_ros/ArmImitation-v0"


def _register() -> None:
    try:
        import gymnasium
    except ImportError:  # gymnasium is optional for the rest of the package
        return
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="pvrnn_ros.sim.env:ArmImitationEnv")


_register()


def __getattr__(name: str):  # lazy: `from pvrnn_ros.sim import ArmSim` imports mujoco only then
    if name == "ArmSim":
        from .arm_sim import ArmSim

        return ArmSim
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
