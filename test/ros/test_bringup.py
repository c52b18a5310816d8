"""`pvrnn-ros up` and `pvrnn-ros demo --quick` end to end (separate processes, own DDS domain)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, domain_for

pytest.importorskip("rclpy")


def _env(name):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env, domain_for(name)


def test_up_record_demos_runs_the_graph_and_stops(tmp_path):
    env, dom = _env("up")
    bags = tmp_path / "bags"
    r = subprocess.run([sys.executable, "-m", "pvrnn_ros.cli", "up", "record_demos", "--domain-id", str(dom),
                        "--run-dir", str(tmp_path / "run"), "-p", f"recorder_node.output_dir:={bags}",
                        "-p", "recorder_node.episode_count:=1", "-p", "recorder_node.episode_duration:=2.0",
                        "--duration", "60"], env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "recorder_node" in r.stdout and str(tmp_path / "run") in r.stdout
    for node in ("sim_node", "demonstrator_node", "recorder_node"):
        assert (tmp_path / "run" / f"{node}.log").is_file()
    from pvrnn_ros.core.data import read_any

    demo = read_any(bags / "episode_000", topic="/teacher/joint_states")
    assert demo.positions.shape[1] == 7 and len(demo) > 50  # 2 s of sim time at 50 Hz


def test_demo_quick(tmp_path):
    env, dom = _env("demo")
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "pvrnn_ros.cli", "demo", "--quick", "--no-progress", "--out", str(out),
                        "--domain-id", str(dom), "--episodes", "2", "--imitate-seconds", "4", "--epochs", "10"],
                       env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "report.md").read_text()
    for png in ("tracking.png", "free_energy.png", "latency.png"):
        assert (out / png).is_file() and png in report
    assert "deadline misses" in report and "PV-RNN + ER" in report
    assert (out / "eval" / "metrics.json").is_file()
    assert sorted(p.name for p in (out / "bags").glob("episode_*") if p.is_dir()) == ["episode_000", "episode_001"]
