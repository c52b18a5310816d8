"""`pvrnn-ros lifecycle` and `pvrnn-ros up` driving managed nodes; `--help` lists parameters without ROS."""
from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def _cli(env, *argv, timeout=120):
    return subprocess.run([sys.executable, "-m", "pvrnn_ros.cli", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_lifecycle_verb_lists_and_triggers_transitions(ros, tmp_path):
    procs, _, env = ros
    rec = procs.start("recorder_node", "autostart:=false", "topics:=['/numbers']", f"output_dir:={tmp_path / 'bags'}")
    r = _cli(env, "lifecycle", "recorder_node")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/recorder_node: unconfigured" in r.stdout and "configure   -> inactive" in r.stdout
    r = _cli(env, "lifecycle", "recorder_node", "activate")  # out of order
    assert r.returncode == 1 and "refused or failed; state unconfigured" in r.stdout, r.stdout
    for transition, state in (("configure", "inactive"), ("activate", "active")):
        r = _cli(env, "lifecycle", "recorder_node", transition)
        assert r.returncode == 0 and f"state {state}" in r.stdout, r.stdout + r.stderr
    r = _cli(env, "lifecycle", "recorder_node")
    assert "deactivate  -> inactive" in r.stdout and "shutdown    -> finalized" in r.stdout
    r = _cli(env, "lifecycle", "recorder_node", "shutdown")
    assert r.returncode == 0 and "state finalized" in r.stdout
    assert rec.wait(15) == 0
    r = _cli(env, "lifecycle", "no_such_node", "--timeout", "2")
    assert r.returncode == 2 and "offers no lifecycle services" in r.stdout


def test_up_reports_a_failed_configure_and_stops(ros, tmp_path):
    _, _, env = ros
    missing = tmp_path / "missing.pt"
    r = _cli(env, "up", "er_real_robot", "--domain-id", env["ROS_DOMAIN_ID"], "--run-dir", str(tmp_path / "run"),
             "-p", f"er_node.model_path:={missing}", "--duration", "30")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "er_node: configure refused or failed" in r.stdout and "no such checkpoint" in r.stdout, r.stdout
    assert "er_node            exit 0" in r.stdout  # stopped cleanly, not crashed


def test_node_help_lists_parameters_without_starting_ros(capsys):
    import rclpy

    from pvrnn_ros.commands.node import run_raw
    from pvrnn_ros.ros import er_node

    assert run_raw(["er_node", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pvrnn-ros node er_node")
    for p in er_node.PARAMS:
        assert f"  {p.name} = " in out and p.description in out
    assert "lr = -1.0  [in [1e-09, 1000] or -1]  (live)" in out
    assert "model_path = ''  (when unconfigured)" in out
    assert not rclpy.ok()  # no context was initialised
    r = subprocess.run([sys.executable, "-m", "pvrnn_ros.ros.sim_node", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0 and "real_time_factor = 1.0" in r.stdout and "[INFO]" not in r.stdout + r.stderr
