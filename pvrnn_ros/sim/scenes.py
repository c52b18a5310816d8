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
