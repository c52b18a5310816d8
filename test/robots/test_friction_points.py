"""Issue 15's friction points that need a process: er_node on a wrong feedback_topic warns, naming the
topics that carry JointState; `train` reports units per joint and leaves prismatic joints out."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")


def test_er_node_warns_about_a_feedback_topic_nobody_publishes(ros, tiny_model):
    from test.ros.test_er_node import Streamer

    procs, probe, _ = ros
    procs.start("er_node", f"model_path:={tiny_model}", "mode:=imitate", "input_topic:=teacher/joint_states",
                "feedback_topic:=lerner/joint_states")
    stream = Streamer(probe, topic="teacher/joint_states")
    try:
        probe.wait_for(lambda: stream.pub.get_subscription_count() > 0, 30, "er_node to subscribe")
        stream.start()
        probe.wait_for(lambda: "no JointState on feedback_topic 'lerner/joint_states'" in procs.log("er_node"),
                       20, "the feedback warning")
    finally:
        stream.close()
    log = procs.log("er_node")
    line = next(ln for ln in log.splitlines() if "no JointState on feedback_topic" in ln)
    assert "WARN" in line and "/teacher/joint_states" in line


def test_train_leaves_prismatic_joints_out_and_reports_units(tmp_path, capsys):
    from pvrnn_ros.cli import main
    from pvrnn_ros.core.data import write_csv
    from pvrnn_ros.sim.primitives import kinematic_episode
    from pvrnn_ros.sim.robot import robot_description_urdf

    data = tmp_path / "demos"
    for s in range(2):
        t, q, _ = kinematic_episode(4.0, 20.0, s)
        grip = 0.02 + 0.01 * np.sin(t)[:, None]  # a gripper slide in metres
        write_csv(data / f"ep{s}.csv", t, np.concatenate([q[:, :2], grip], 1), ["shoulder_pan", "shoulder_lift", "grip"])
    (data / "robot_description.urdf").write_text(robot_description_urdf(
        "r", ["shoulder_pan", "shoulder_lift", "grip"], ["revolute", "revolute", "prismatic"],
        [-2.8, -1.75, 0.0], [2.8, 1.75, 0.04]))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model:\n  layers:\n    - {d: 8, z: 1, tau: 2.0, w: 0.01, w1: 1.0}\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--config", str(cfg), "--out", str(out), "--epochs", "3"]) == 0
    text = capsys.readouterr().out
    assert "left out prismatic joints ['grip']" in text
    assert "joints: shoulder_pan [rad], shoulder_lift [rad]" in text
    report = (out / "report.md").read_text()
    assert "rad over 2 joint(s)" in report and "grip" not in report
    # asked for by name, the slide is learned, in metres
    out2 = tmp_path / "run2"
    assert main(["train", "--data", str(data), "--config", str(cfg), "--out", str(out2), "--epochs", "3",
                 "--joints", "shoulder_pan,grip"]) == 0
    report = (out2 / "report.md").read_text()
    assert "rad over 1 joint(s)" in report and "m over 1 joint(s)" in report
    assert main(["train", "--data", str(data), "--config", str(cfg), "--out", str(tmp_path / "run3"),
                 "--epochs", "3", "--joints", "elbow"]) == 2
    assert "data.joints names ['elbow']" in capsys.readouterr().err


def test_no_progress_bars_when_output_is_not_a_terminal(tmp_path):
    """train and eval write their bars to stderr only when it is a terminal: none in a log file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pvrnn_ros.core.data import write_csv
    from pvrnn_ros.sim.primitives import kinematic_episode

    repo = Path(__file__).resolve().parents[2]
    data = tmp_path / "demos"
    for s in range(2):
        t, q, _ = kinematic_episode(3.0, 20.0, s)
        write_csv(data / f"ep{s}.csv", t, q[:, :2], ["shoulder_pan", "shoulder_lift"])
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model:\n  layers:\n    - {d: 8, z: 1, tau: 2.0, w: 0.01, w1: 1.0}\n"
                   "er:\n  window: 4\n  iterations: 2\n  first_iterations: 2\n  horizon: 3\n  samples: 2\n")
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = tmp_path / "log.txt"
    for args in (["train", "--data", str(data), "--config", str(cfg), "--out", str(tmp_path / "run"), "--epochs", "20"],
                 ["eval", "--model", str(tmp_path / "run" / "model.pt"), "--data", str(data), "--out",
                  str(tmp_path / "eval"), "--no-gru", "--backend", "reference"]):
        with log.open("w") as f:
            proc = subprocess.run([sys.executable, "-m", "pvrnn_ros.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                  env=env, cwd=str(repo), timeout=300)
        text = log.read_text()
        assert proc.returncode == 0, text[-2000:]
        assert "\r" not in text and "ep/s]" not in text and "tick/s]" not in text and "it/s]" not in text, text[-1000:]
