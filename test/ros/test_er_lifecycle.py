"""er_node as a managed node over DDS, driven by this process's own service clients: lifecycle
transitions (in order, out of order), no command while inactive, a bad model_path then a good one,
live parameters accepted / rejected with reasons and taking effect on the next tick, /diagnostics
levels when ticks slow down and when the input stops, a best-effort JointState publisher heard.

One er_node process serves the whole sequence (process start and model warm-up dominate the cost)."""
from __future__ import annotations

import threading
import time

import numpy as np

from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, kinematic_episode

from .clients import latest_status, set_parameter, statuses, trigger

NAMES = list(DEFAULT_JOINT_NAMES)
COMMANDS = "forward_position_controller/commands"
ER_STATUS, INPUT_STATUS = "er_node: error regression", "er_node: input"


class BestEffortStreamer:
    """A robot driver as many real arms have it: JointState at `rate` Hz with sensor-data QoS (best effort)."""

    def __init__(self, probe, topic="joint_states", rate=50.0):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        self.JointState = JointState
        self.pub = probe.node.create_publisher(JointState, topic, qos_profile_sensor_data)
        _, self.q, _ = kinematic_episode(60.0, rate, 7)
        self.rate = rate
        self.stop_event = threading.Event()
        self.thread = None

    def _run(self):
        i, next_t = 0, time.monotonic()
        while not self.stop_event.is_set():
            t = time.time()
            m = self.JointState(name=NAMES, position=[float(v) for v in self.q[i % len(self.q)]])
            m.header.stamp.sec, m.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
            self.pub.publish(m)
            i += 1
            next_t += 1.0 / self.rate
            time.sleep(max(0.0, next_t - time.monotonic()))

    def start(self):
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(2)


def _count(probe, topic):
    return len(probe.messages(topic))


def test_er_node_lifecycle_parameters_and_diagnostics(ros, tiny_model, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Float64, Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory

    from pvrnn_ros.ros.lifecycle import LifecycleClient

    procs, probe, _ = ros
    for msg_type, topic in ((JointTrajectory, "pvrnn/prediction"), (Float64, "pvrnn/tick_latency"),
                            (Float64MultiArray, COMMANDS), (DiagnosticArray, "/diagnostics")):
        probe.subscribe(msg_type, topic)
    er = procs.start("er_node", "autostart:=false", f"model_path:={tmp_path / 'missing.pt'}", "mode:=observe",
                     "stale_timeout:=0.5")
    life = LifecycleClient(probe.node, "er_node")
    assert life.wait(40), f"er_node lifecycle services never came up:\n{procs.log('er_node')}"
    assert life.state() == "unconfigured"  # autostart false: waits for us
    assert {t for t, _ in life.available()} == {"configure", "shutdown"}

    # out of order: nothing to activate or deactivate yet
    assert life.change("activate") is False
    assert life.change("deactivate") is False
    assert life.state() == "unconfigured"

    # a bad model_path: configure fails with the reason, the node stays unconfigured and alive
    assert life.change("configure") is False
    assert life.state() == "unconfigured" and er.poll() is None
    assert "configure failed" in procs.log("er_node") and "missing.pt" in procs.log("er_node")
    probe.wait_for(lambda: (s := latest_status(probe, ER_STATUS)) is not None and s[1] == "ERROR"
                   and "missing.pt" in s[2], 10, "diagnostics ERROR naming the bad model_path")
    # ... a good one then configures
    assert set_parameter(probe, "er_node", "model_path", str(tiny_model)) == (True, "")
    t0 = time.monotonic()
    assert life.change("configure", timeout=180) is True, procs.log("er_node")  # loads + warms up the backend
    configure_s = time.monotonic() - t0
    assert life.state() == "inactive"
    assert life.change("configure") is False  # already configured
    ok, reason = set_parameter(probe, "er_node", "model_path", "other.pt")
    assert not ok and "cannot change while the node is configured" in reason and "cleanup" in reason

    stream = BestEffortStreamer(probe)
    stream.start()
    try:
        # inactive: not subscribed, nothing published
        time.sleep(1.5)
        assert _count(probe, "pvrnn/prediction") == 0 and _count(probe, COMMANDS) == 0
        assert latest_status(probe, ER_STATUS)[1] == "STALE"

        # active: the best-effort stream is heard (a reliable subscription would hear nothing)
        assert life.change("activate") is True and life.state() == "active"
        probe.wait_for(lambda: _count(probe, "pvrnn/prediction") >= 5, 30, "predictions from a best-effort stream")
        t_ok = time.monotonic()
        probe.wait_for(lambda: sum(s[1] == "OK" for s in statuses(probe, INPUT_STATUS, t_ok)) >= 2, 10,
                       "input OK on /diagnostics twice")
        inp = latest_status(probe, INPUT_STATUS, t_ok)[3]  # a whole report interval of streaming
        assert 20.0 < float(inp["input rate (Hz)"]) < 80.0, inp  # 50 Hz stream (loose: a shared machine)
        er_status = latest_status(probe, ER_STATUS, t_ok)[3]
        assert er_status["backend"] in ("cpu", "reference") and er_status["model"] == str(tiny_model)
        assert _count(probe, COMMANDS) == 0  # observe mode commands nothing

        # rejected with reasons naming the value and the valid range / the reconfigure
        ok, reason = set_parameter(probe, "er_node", "iterations", -5)
        assert not ok and "-5" in reason and "[0, 100000]" in reason
        ok, reason = set_parameter(probe, "er_node", "mode", "dance")
        assert not ok and "'dance'" in reason and "observe, imitate, generate" in reason
        ok, reason = set_parameter(probe, "er_node", "window", 12)
        assert not ok and "window cannot change while the node is configured" in reason
        ok, reason = set_parameter(probe, "er_node", "lr", 0.0)
        assert not ok and "lr=0.0" in reason
        ok, reason = set_parameter(probe, "er_node", "stale_timeout", -1.0)  # the descriptor's range, rclpy's words
        assert not ok and "out of range" in reason and "0.001" in reason and "-1.0" in reason

        # live: mode imitate commands the learner arm, whose joint states nobody publishes here: it must
        # say so (WARN, and a warning in its log), not wait silently
        assert set_parameter(probe, "er_node", "mode", "imitate") == (True, "")
        t_im = time.monotonic()
        probe.wait_for(lambda: any(s[1] == "WARN" and "learner/joint_states" in s[2]
                                   for s in statuses(probe, INPUT_STATUS, t_im)), 10, "WARN: no learner feedback")
        probe.wait_for(lambda: "not commanding (check feedback_topic)" in procs.log("er_node"), 5, "the warning")

        # live: mode imitate -> generate starts commanding (the safety stage seeds from the measured joints)
        assert set_parameter(probe, "er_node", "mode", "generate") == (True, "")
        probe.wait_for(lambda: _count(probe, COMMANDS) >= 5, 10, "commands after switching to generate")
        cmd = probe.messages(COMMANDS)[-1][1]
        assert len(cmd.data) == 7 and np.all(np.isfinite(cmd.data))

        # live: many more iterations make the very next ticks slower, and /diagnostics says ERROR (misses)
        base = np.median([m.data for _, m in probe.messages("pvrnn/tick_latency")[-10:]])
        n_lat = _count(probe, "pvrnn/tick_latency")
        # (enough iterations that a tick outlasts the 100 ms period on a quiet machine too: ~30 ms per
        # 1000 iterations of this model)
        assert set_parameter(probe, "er_node", "iterations", 30000) == (True, "")
        probe.wait_for(lambda: _count(probe, "pvrnn/tick_latency") >= n_lat + 2, 30, "ticks after the change")
        slowed = [m.data for _, m in probe.messages("pvrnn/tick_latency")[n_lat:]]
        assert max(slowed[:2]) > 5 * base, (base, slowed)  # taken up by the next ticks (the change) ...
        t_slow = time.monotonic()
        probe.wait_for(lambda: any(s[1] == "ERROR" and "deadline misses" in s[2]
                                   for s in statuses(probe, ER_STATUS, t_slow)), 30, "ERROR on deadline misses")
        assert set_parameter(probe, "er_node", "iterations", -1) == (True, "")  # back to the checkpoint's K
        t_back = time.monotonic()
        probe.wait_for(lambda: (s := latest_status(probe, ER_STATUS, t_back)) is not None and s[1] == "OK", 30,
                       "OK again once ticks are fast")
        assert latest_status(probe, ER_STATUS, t_back)[3]["iterations"] == "5"

        # ~/reset restarts ER from the next observation
        assert trigger(probe, "/er_node/reset")[0] is True
        assert "reset requested" in procs.log("er_node")

        # the input stops while commanding: ERROR (stale); commands hold (none published: nothing fresh)
        stream.stop()
        t_stop = time.monotonic()
        probe.wait_for(lambda: any(s[1] == "ERROR" and "stale" in s[2] for s in statuses(probe, INPUT_STATUS, t_stop)),
                       10, "input ERROR on /diagnostics once the stream stops")
        stream.start()
        probe.wait_for(lambda: (s := latest_status(probe, INPUT_STATUS, time.monotonic() - 0.5)) is not None
                       and s[1] == "OK", 15, "input OK after the stream resumed")

        # deactivate: commanding stops at once
        assert life.change("deactivate") is True and life.state() == "inactive"
        time.sleep(0.3)
        n_cmd, n_pred = _count(probe, COMMANDS), _count(probe, "pvrnn/prediction")
        time.sleep(1.5)
        assert _count(probe, COMMANDS) == n_cmd and _count(probe, "pvrnn/prediction") == n_pred
        assert trigger(probe, "/er_node/reset")[0] is False  # nothing to reset while inactive
    finally:
        stream.stop()

    # cleanup releases the model: model_path may change again, and configure loads it
    assert life.change("activate") is True and life.change("cleanup") is False  # active: deactivate first
    assert life.change("deactivate") is True and life.change("cleanup") is True
    assert life.state() == "unconfigured"
    assert set_parameter(probe, "er_node", "model_path", str(tiny_model.parent)) == (True, "")
    assert life.change("configure", timeout=max(60.0, 3 * configure_s)) is True and life.state() == "inactive"
    # shutdown from inactive ends the process cleanly
    assert life.change("shutdown") is True
    assert er.wait(20) == 0, procs.log("er_node")
    assert "ER summary" in procs.log("er_node")
