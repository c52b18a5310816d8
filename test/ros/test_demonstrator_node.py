"""demonstrator_node over DDS on a robot it does not know: joints, limits and start pose from the MJCF,
the role of each joint said, wrong-length limits a clear error, falling behind the clock warned."""
from __future__ import annotations

import time

import numpy as np

from test.ros.test_sim_node import OWN_ROBOT


def test_demonstrator_reads_the_model_and_says_the_roles(ros, tmp_path):
    from std_msgs.msg import Float64MultiArray, String

    procs, probe, _ = ros
    scene = tmp_path / "own_robot.xml"
    scene.write_text(OWN_ROBOT)
    probe.subscribe(Float64MultiArray, "forward_position_controller/commands")
    procs.start("demonstrator_node", "robot:=''", f"scene:={scene}", "rate:=50.0")
    probe.wait_for(lambda: len(probe.messages("forward_position_controller/commands")) > 100, 30, "commands")
    cmds = np.array([m.data for _, m in probe.messages("forward_position_controller/commands")])
    assert cmds.shape[1] == 2  # the rotary joints yaw, pitch; the gripper slide is not driven
    log = procs.log("demonstrator_node")
    assert "via posture yaw 0.3, pitch -0.2" in log  # the model's (unnamed) keyframe
    assert np.all(cmds[:, 0] >= -1.5) and np.all(cmds[:, 0] <= 1.5)
    assert np.all(cmds[:, 1] >= -1.0) and np.all(cmds[:, 1] <= 1.0)
    assert np.ptp(cmds, axis=0).min() > 0.01  # both joints move
    assert "yaw -> shoulder_pan (next unused role)" in log and "pitch -> shoulder_lift (next unused role)" in log
    assert "keyframe '<unnamed #0>'" in log
    # the primitive topic is latched: a late subscriber still gets the current primitive
    from rclpy.qos import DurabilityPolicy, QoSProfile

    box = []
    probe.node.create_subscription(String, "primitive", lambda m: box.append(m.data),
                                   QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
    probe.wait_for(lambda: box, 10, "the latched primitive")
    assert box[0] in ("rest", "reach_left", "reach_right", "circle", "wave")


def test_demonstrator_limits_of_the_wrong_length_are_a_clear_error(ros, tmp_path):
    procs, _, _ = ros
    p = procs.start("demonstrator_node", "joints:=['yaw', 'pitch']", "lower:=[-1.0, -1.0, -1.0]",
                    "upper:=[1.0, 1.0, 1.0]")
    assert p.wait(30) != 0
    log = procs.log("demonstrator_node")
    assert "lower has 3 and upper 3 values for 2 joints ['yaw', 'pitch']" in log
    # unknown joint names without limits: the error says how to give them
    p = procs.start("demonstrator_node", "joints:=['yaw', 'pitch']")
    assert p.wait(30) != 0
    assert "set `scene` to its MJCF, or `lower` and `upper`" in procs.log("demonstrator_node")


def test_demonstrator_warns_when_it_falls_behind_the_clock(ros):
    """Sim time running 10x faster than the demonstrator can follow: a warning with the figures."""
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    procs, probe, _ = ros
    clock = probe.publisher(Clock, "/clock")
    procs.start("demonstrator_node", "use_sim_time:=true", "rate:=50.0")
    probe.wait_for(lambda: clock.get_subscription_count() > 0, 30, "the demonstrator to subscribe to /clock")
    t = 1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "falling behind" not in procs.log("demonstrator_node"):
        t += 0.2  # 0.2 s of sim time every ~20 ms: 10 commands due per clock tick, one can go out
        clock.publish(Clock(clock=Time(sec=int(t), nanosec=int((t % 1) * 1e9))))
        time.sleep(0.02)
    log = procs.log("demonstrator_node")
    assert "falling behind the clock" in log and "real_time_factor" in log, log[-2000:]


def test_demonstrator_on_a_real_arm_starts_from_its_joint_states(ros):
    """No model: joints and limits from parameters, the via posture from the first joint_states."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    procs, probe, _ = ros
    probe.subscribe(Float64MultiArray, "arm/forward_position_controller/commands")
    states = probe.publisher(JointState, "arm/joint_states")
    procs.start("demonstrator_node", "robot:=arm", "joints:=['j2', 'j1']", "lower:=[-1.0, 0.0]",
                "upper:=[1.0, 2.0]", "start_from_joint_states:=true")
    probe.wait_for(lambda: states.get_subscription_count() > 0, 30, "the demonstrator to subscribe")
    time.sleep(0.5)
    assert not probe.messages("arm/forward_position_controller/commands")  # waits for the robot
    msg = JointState(name=["j1", "j2", "gripper"], position=[1.5, -0.4, 0.01])
    probe.wait_for(lambda: (states.publish(msg), len(probe.messages("arm/forward_position_controller/commands")) > 20)[1],
                   20, "commands")
    cmds = np.array([m.data for _, m in probe.messages("arm/forward_position_controller/commands")])
    assert "via posture j2 -0.4, j1 1.5" in procs.log("demonstrator_node")
    assert np.all(cmds[:, 0] >= -1.0) and np.all(cmds[:, 0] <= 1.0) and np.all(cmds[:, 1] >= 0) and np.all(cmds[:, 1] <= 2)
