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


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_up_stops_the_whole_graph_on_a_signal_even_started_in_the_background(tmp_path, sig):
    """A shell's background job starts with SIGINT ignored; `up` must still stop on it, and on SIGTERM
    (e.g. `kill`), taking its nodes down rather than leaving them running; killed outright, its nodes
    are told to stop (SIGTERM) by the kernel."""
    import signal
    import time

    env, dom = _env(f"up-{sig}")
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "pvrnn_ros.cli", "up", "record_demos", "--domain-id", str(dom),
                               "--run-dir", str(tmp_path / "run"), "-p", f"recorder_node.output_dir:={tmp_path}/bags",
                               "--duration", "120"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C to stop" not in log_path.read_text() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Ctrl-C to stop" in log_path.read_text(), log_path.read_text()
        pids = [int(line.split(" pid ")[1].split()[0]) for line in log_path.read_text().splitlines() if " pid " in line]
        assert len(pids) == 3, log_path.read_text()
        up.send_signal(getattr(signal, sig))
        rc = up.wait(30)
    finally:
        if up.poll() is None:
            up.kill()
    out = log_path.read_text()
    if sig == "SIGKILL":
        assert rc == -signal.SIGKILL
        deadline = time.monotonic() + 30  # orphans: init reaps them once they exit
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
    else:
        assert rc == 0 and "stopping ..." in out, out
    left = [pid for pid in pids if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"nodes {left} still running after up got {sig}"


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
