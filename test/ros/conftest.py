"""Fixtures for the ROS 2 tests: nodes as separate processes over real DDS kept on loopback.

Every test gets its own ROS_DOMAIN_ID (from its name and the pid) and
ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, so tests never hear each other or other machines.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

REPO = Path(__file__).resolve().parents[2]


def domain_for(name: str) -> int:
    return 1 + zlib.crc32(f"{name}:{os.getpid()}".encode()) % 200


class Procs:
    """Start node processes; on teardown SIGINT, then SIGKILL, whatever is left."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, module: str, *params: str, name: str | None = None, extra: list[str] | None = None) -> subprocess.Popen:
        name = name or module
        cmd = [sys.executable, "-m", f"pvrnn_ros.ros.{module}", "--ros-args"]
        for p in params:
            cmd += ["-p", p]
        cmd += extra or []
        log = (self.log_dir / f"{name}.{len(self.procs)}.log").open("wb")
        p = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
        log.close()
        self.procs.append((name, p))
        return p

    def log(self, name: str) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.log_dir.glob(f"{name}.*.log")))

    def stop(self, p: subprocess.Popen, sig=signal.SIGINT, timeout: float = 10.0) -> int:
        if p.poll() is None:
            p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait(5)

    def cleanup(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class Probe:
    """An rclpy node in the test process (own context + domain), spun on a background thread."""

    def __init__(self, domain_id: int):
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("test_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.inbox: dict[str, list] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                break

    def subscribe(self, msg_type, topic: str, depth: int = 100) -> list:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        box = self.inbox.setdefault(topic, [])

        def cb(msg):
            with self.lock:
                box.append((time.monotonic(), msg))

        self.node.create_subscription(msg_type, topic, cb, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))
        return box

    def publisher(self, msg_type, topic: str, depth: int = 100):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE))

    def messages(self, topic: str) -> list:
        with self.lock:
            return list(self.inbox.get(topic, []))

    def wait_for(self, pred, timeout: float, what: str = "condition") -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if pred():
                return time.monotonic() - t0
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.executor.shutdown(timeout_sec=1)
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def ros(request, tmp_path):
    """(procs, probe, env) for one test on its own DDS domain."""
    dom = domain_for(request.node.nodeid)
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(dom), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               RCUTILS_COLORIZED_OUTPUT="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    procs = Procs(env, log_dir)
    probe = Probe(dom)
    try:
        yield procs, probe, env
    finally:
        procs.cleanup()
        probe.close()


def _kinematic_model(tmp_path_factory, name: str, episodes: int, seconds: float, epochs: int,
                     plan: bool = False) -> Path:
    """A small PV-RNN (arm7 joints, 10 Hz) trained on kinematic primitive chains; returns model.pt."""
    import torch

    from pvrnn_ros.core.config import Config, LayerConfig
    from pvrnn_ros.core.data import Demonstration
    from pvrnn_ros.core.train import train
    from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, kinematic_episode

    torch.set_num_threads(1)
    demos = []
    for s in range(episodes):
        t, q, _ = kinematic_episode(seconds, 10.0, s)
        demos.append(Demonstration(f"ep{s}", t, q, list(DEFAULT_JOINT_NAMES)))
    cfg = Config()
    cfg.model.layers = [LayerConfig(d=16, z=2, tau=2.0), LayerConfig(d=8, z=1, tau=4.0)]
    cfg.er.window, cfg.er.iterations, cfg.er.first_iterations = 8, 5, 10
    if plan:
        cfg.plan.horizon, cfg.plan.iterations = 15, 100
    out = tmp_path_factory.mktemp(name)
    train(cfg, demos, out, epochs=epochs, progress=False)
    return out / "model.pt"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Trained for a few seconds on two kinematic episodes."""
    return _kinematic_model(tmp_path_factory, "tiny_model", episodes=2, seconds=6.0, epochs=30)


@pytest.fixture(scope="session")
def plan_model(tmp_path_factory) -> Path:
    """Trained a little longer than `tiny_model` (three episodes), so that goal-directed planning
    reaches postures of its repertoire."""
    return _kinematic_model(tmp_path_factory, "plan_model", episodes=3, seconds=10.0, epochs=800, plan=True)
