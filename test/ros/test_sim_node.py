"""sim_node over DDS: publishes at its rate, follows Float64MultiArray and JointTrajectory commands."""
from __future__ import annotations

import time

import numpy as np


def test_sim_rate_and_commands(ros):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint
    from builtin_interfaces.msg import Duration

    procs, probe, _ = ros
    states = probe.subscribe(JointState, "joint_states")
    cmd = probe.publisher(Float64MultiArray, "forward_position_controller/commands")
    traj = probe.publisher(JointTrajectory, "forward_position_controller/joint_trajectory")
    procs.start("sim_node", "scene:=arm7", "robots:=['']", "publish_rate:=50.0", "real_time_factor:=1.0")
    probe.wait_for(lambda: len(probe.messages("joint_states")) > 5, 30, "joint_states")

    # rate, measured on arrival over 2 s
    n0, t0 = len(probe.messages("joint_states")), time.monotonic()
    time.sleep(2.0)
    rate = (len(probe.messages("joint_states")) - n0) / (time.monotonic() - t0)
    assert 40.0 <= rate <= 60.0, f"joint_states at {rate:.1f} Hz, expected ~50"
    msg = probe.messages("joint_states")[-1][1]
    names = list(msg.name)
    assert names[0] == "shoulder_pan" and len(names) == 7
    stamps = [m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec for _, m in probe.messages("joint_states")[-20:]]
    assert np.all(np.diff(stamps) > 0)

    # Float64MultiArray target (model order): elbow moves toward it
    start = np.asarray(msg.position)
    target = start.copy()
    target[names.index("elbow")] = start[names.index("elbow")] - 0.5
    probe.wait_for(lambda: cmd.get_subscription_count() > 0, 10, "command subscriber")
    cmd.publish(Float64MultiArray(data=target.tolist()))

    def elbow():
        return probe.messages("joint_states")[-1][1].position[names.index("elbow")]

    probe.wait_for(lambda: abs(elbow() - target[names.index("elbow")]) < 0.05, 5, "elbow to reach the command")

    # JointTrajectory by name (subset of joints, shuffled), followed by time_from_start
    goal = float(elbow()) + 0.3
    t = JointTrajectory(joint_names=["wrist_roll", "elbow"])
    t.points = [JointTrajectoryPoint(positions=[0.0, goal], time_from_start=Duration(sec=0, nanosec=500_000_000))]
    traj.publish(t)
    probe.wait_for(lambda: abs(elbow() - goal) < 0.05, 5, "elbow to follow the trajectory")


def test_sim_faster_than_real_time_with_clock(ros):
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import JointState

    procs, probe, _ = ros
    probe.subscribe(Clock, "/clock")
    probe.subscribe(JointState, "teacher/joint_states")
    procs.start("sim_node", "scene:=teacher_learner", "real_time_factor:=4.0", "use_sim_time:=true",
                "publish_rate:=25.0")
    probe.wait_for(lambda: len(probe.messages("/clock")) > 5, 30, "/clock")
    first = probe.messages("/clock")[-1][1].clock
    t0 = time.monotonic()
    time.sleep(1.5)
    last = probe.messages("/clock")[-1][1].clock
    sim_dt = (last.sec + 1e-9 * last.nanosec) - (first.sec + 1e-9 * first.nanosec)
    rtf = sim_dt / (time.monotonic() - t0)
    assert 3.0 <= rtf <= 4.6, f"real time factor {rtf:.2f}, expected ~4"
    js = probe.messages("teacher/joint_states")[-1][1]
    assert list(js.name)[0] == "shoulder_pan"  # prefix stripped
    stamp = js.header.stamp.sec + 1e-9 * js.header.stamp.nanosec
    assert stamp < 100.0  # sim time, not wall time
