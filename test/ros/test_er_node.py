"""er_node over DDS: predictions from a shuffled-order JointState stream; survives malformed input;
resumes after the robot (sim) is killed and restarted."""
from __future__ import annotations

import math
import signal
import threading
import time

import numpy as np

from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, kinematic_episode

NAMES = list(DEFAULT_JOINT_NAMES)


class Streamer:
    """Publishes a demonstrator episode as JointState at `rate` Hz, shuffled joint order + an extra joint."""

    def __init__(self, probe, topic="joint_states", rate=50.0, seed=3):
        from sensor_msgs.msg import JointState

        self.JointState = JointState
        self.pub = probe.publisher(JointState, topic)
        _, self.q, _ = kinematic_episode(60.0, rate, seed)
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.i = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def msg(self, k):
        order = self.rng.permutation(len(NAMES))
        m = self.JointState()
        t = time.time()
        m.header.stamp.sec, m.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        m.name = [NAMES[j] for j in order] + ["gripper"]
        m.position = [float(self.q[k % len(self.q), j]) for j in order] + [0.01]
        return m

    def _run(self):
        next_t = time.monotonic()
        while not self.stop.is_set():
            self.pub.publish(self.msg(self.i))
            self.i += 1
            next_t += 1.0 / self.rate
            time.sleep(max(0.0, next_t - time.monotonic()))

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.stop.set()
        self.thread.join(2)


def test_er_predicts_from_shuffled_joint_states(ros, tiny_model):
    from std_msgs.msg import Float64, Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    procs, probe, _ = ros
    probe.subscribe(JointTrajectory, "pvrnn/prediction")
    probe.subscribe(Float64MultiArray, "pvrnn/free_energy")
    probe.subscribe(Float64, "pvrnn/tick_latency")
    er = procs.start("er_node", f"model_path:={tiny_model}", "mode:=observe")
    stream = Streamer(probe)
    try:
        probe.wait_for(lambda: stream.pub.get_subscription_count() > 0, 30, "er_node to subscribe")
        stream.start()
        probe.wait_for(lambda: len(probe.messages("pvrnn/prediction")) >= 10, 20, "10 predictions")
    finally:
        stream.close()
    preds = [m for _, m in probe.messages("pvrnn/prediction")]
    p = preds[-1]
    assert list(p.joint_names) == NAMES  # model order, whatever the input order; extra joint dropped
    assert len(p.points) == 10  # the checkpoint's horizon
    dt = [pt.time_from_start.sec + 1e-9 * pt.time_from_start.nanosec for pt in p.points]
    assert np.allclose(dt, np.arange(1, 11) / 10.0)
    pos = np.array([pt.positions for pt in p.points])
    assert pos.shape == (10, 7) and np.all(np.isfinite(pos))
    stamp = p.header.stamp.sec + 1e-9 * p.header.stamp.nanosec
    assert abs(stamp - time.time()) < 5.0  # answers a recent observation (wall stamps)
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for m in preds]
    assert np.all(np.diff(stamps) > 0)
    fe = probe.messages("pvrnn/free_energy")[-1][1].data
    assert len(fe) == 2 + 2 and all(math.isfinite(v) for v in fe)  # F, rec, KL per layer (2 layers)
    lat = [m.data for _, m in probe.messages("pvrnn/tick_latency")]
    assert lat and max(lat) < 1000
    assert er.poll() is None
    procs.stop(er)
    # the ER worker thread runs torch with the node's `threads` (1), not the per-thread default
    assert "(worker torch threads 1)" in procs.log("er_node")
    assert "first prediction" in procs.log("er_node") and "s after the node started" in procs.log("er_node")


def test_malformed_input_leaves_every_node_alive(ros, tiny_model):
    from builtin_interfaces.msg import Duration
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    procs, probe, _ = ros
    probe.subscribe(JointTrajectory, "pvrnn/prediction")
    sim = procs.start("sim_node", "scene:=arm7", "robots:=['']", "real_time_factor:=1.0")
    er = procs.start("er_node", f"model_path:={tiny_model}", "mode:=generate", "input_topic:=bad_states")
    rec = procs.start("recorder_node", "topics:=['/bad_states']", f"output_dir:={procs.log_dir / 'bags'}")
    bad = probe.publisher(JointState, "bad_states")
    cmd = probe.publisher(Float64MultiArray, "forward_position_controller/commands")
    traj = probe.publisher(JointTrajectory, "forward_position_controller/joint_trajectory")
    probe.wait_for(lambda: bad.get_subscription_count() >= 2 and cmd.get_subscription_count() >= 1, 40,
                   "er_node, recorder and sim to subscribe")

    def js(names, pos, t):
        m = JointState(name=names, position=pos)
        m.header.stamp.sec, m.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
        return m

    good = [0.0, 0.4, 0.0, 1.5, 0.0, 0.0, 0.0]
    now = time.time()
    junk = [
        js(NAMES, [math.nan] * 7, now),  # all NaN
        js(NAMES, good[:5], now + 0.01),  # names/positions length mismatch
        js(["foo", "bar"], [1.0, 2.0], now + 0.02),  # unknown joints only
        js(NAMES + NAMES[:1], good + [0.0], now + 0.03),  # duplicate joint name
        js(NAMES, [math.inf] + good[1:], now + 0.04),  # inf
        js(NAMES, good, now + 0.05),
        js(NAMES, good, now - 0.5),  # out of order
        js(NAMES, good, now + 0.05),  # repeated stamp
        js(NAMES[:3], good[:3], now + 0.06),  # missing joints
    ]
    for _ in range(3):
        for m in junk:
            bad.publish(m)
        cmd.publish(Float64MultiArray(data=[1.0, 2.0]))  # wrong length
        cmd.publish(Float64MultiArray(data=[math.nan] * 7))
        cmd.publish(Float64MultiArray(data=[1e9] * 7))  # far outside limits: clipped
        t = JointTrajectory(joint_names=["elbow", "nope"])
        t.points = [JointTrajectoryPoint(positions=[1.0], time_from_start=Duration(sec=1)),  # wrong length
                    JointTrajectoryPoint(positions=[1.0, 2.0], time_from_start=Duration(sec=0))]  # time backwards
        traj.publish(t)
        traj.publish(JointTrajectory(joint_names=["unknown"], points=[JointTrajectoryPoint(positions=[1.0])]))
        time.sleep(0.2)
    # then a clean stream: the ER node must still answer
    stream = Streamer(probe, topic="bad_states").start()
    try:
        probe.wait_for(lambda: len(probe.messages("pvrnn/prediction")) >= 3, 20, "predictions after bad input")
    finally:
        stream.close()
    for name, p in (("sim_node", sim), ("er_node", er), ("recorder_node", rec)):
        assert p.poll() is None, f"{name} died:\n{procs.log(name)}"
    log = procs.log("er_node")
    assert "names but" in log and "out of order" in log and "missing joints" in log
    assert "commands: got 2 values" in procs.log("sim_node")
    for name, p in (("sim_node", sim), ("er_node", er), ("recorder_node", rec)):
        assert procs.stop(p) == 0, f"{name} did not exit cleanly:\n{procs.log(name)}"


def test_er_resumes_after_sim_is_killed_and_restarted(ros, tiny_model):
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    procs, probe, _ = ros
    probe.subscribe(JointTrajectory, "pvrnn/prediction")
    probe.subscribe(JointState, "joint_states")
    sim_args = ("scene:=arm7", "robots:=['']", "real_time_factor:=1.0")
    sim = procs.start("sim_node", *sim_args, name="sim_node")
    er = procs.start("er_node", f"model_path:={tiny_model}", "mode:=observe", "stale_timeout:=0.3")
    probe.wait_for(lambda: len(probe.messages("pvrnn/prediction")) >= 5, 40, "predictions")
    sim.send_signal(signal.SIGKILL)
    sim.wait(5)
    time.sleep(1.5)  # the ER node goes stale
    n_pred = len(probe.messages("pvrnn/prediction"))
    n_js = len(probe.messages("joint_states"))
    procs.start("sim_node", *sim_args, name="sim_node")
    probe.wait_for(lambda: len(probe.messages("joint_states")) > n_js, 40, "the restarted sim's joint states")
    t_data = probe.messages("joint_states")[n_js][0]
    probe.wait_for(lambda: len(probe.messages("pvrnn/prediction")) > n_pred + 1, 20, "predictions after restart")
    t_pred = probe.messages("pvrnn/prediction")[n_pred][0]
    # the ER node discovers the restarted publisher on its own, independently of the probe: under
    # load that takes a few seconds; a node stuck on its stale window would never resume at all
    assert t_pred - t_data < 3.0, f"ER resumed {t_pred - t_data:.2f} s after data returned"
    assert er.poll() is None
    assert "restarting the ER window" in procs.log("er_node")
