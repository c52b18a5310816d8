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


# A user's robot the package does not know: two hinges (no arm7 names) and a gripper slide, an
# unnamed keyframe, an end-effector site under another name.
OWN_ROBOT = """
<mujoco model="own_robot">
  <compiler angle="radian"/>
  <option timestep="0.002" gravity="0 0 0"/>  <!-- no sag: a held joint stays where it was put -->
  <worldbody>
    <body name="link1" pos="0 0 0.5">
      <joint name="yaw" type="hinge" axis="0 0 1" range="-1.5 1.5" damping="1"/>
      <geom type="capsule" fromto="0 0 0 0 0 0.3" size="0.03" mass="1"/>
      <body name="link2" pos="0 0 0.3">
        <joint name="pitch" type="hinge" axis="0 1 0" range="-1 1" damping="1"/>
        <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="0.5"/>
        <site name="tool" pos="0.3 0 0"/>
        <body name="finger" pos="0.3 0 0">
          <joint name="grip" type="slide" axis="0 1 0" range="0 0.04" damping="1"/>
          <geom type="box" size="0.01 0.01 0.02" mass="0.05"/>
        </body>
      </body>
    </body>
  </worldbody>
  <actuator>
    <position joint="yaw" kp="80" dampratio="1"/>
    <position joint="pitch" kp="80" dampratio="1"/>
    <position joint="grip" kp="5000" dampratio="1"/>
  </actuator>
  <keyframe>
    <key qpos="0.3 -0.2 0.02" ctrl="0.3 -0.2 0.02"/>
  </keyframe>
</mujoco>
"""


def test_own_robot_partial_commands_end_effector_and_description(ros, tmp_path):
    """Per-robot command joints (a subset: the gripper holds), the unnamed keyframe as start pose,
    <robot>/end_effector stamped like joint_states at MuJoCo's site position, the robot description."""
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String

    from pvrnn_ros.core.data import parse_robot_description

    procs, probe, _ = ros
    scene = tmp_path / "own_robot.xml"
    scene.write_text(OWN_ROBOT)
    probe.subscribe(JointState, "joint_states")
    probe.subscribe(PointStamped, "end_effector")
    probe.subscribe(String, "robot_description")
    cmd = probe.publisher(Float64MultiArray, "forward_position_controller/commands")
    procs.start("sim_node", f"scene:={scene}", "robots:=['']", "robot.joints:=['pitch', 'yaw']",
                "end_effector_site:=tool", "use_sim_time:=true", "real_time_factor:=2.0")
    probe.wait_for(lambda: len(probe.messages("end_effector")) > 5 and probe.messages("robot_description"),
                   30, "end_effector and robot_description")
    js = probe.messages("joint_states")[0][1]
    assert list(js.name) == ["yaw", "pitch", "grip"]
    np.testing.assert_allclose(js.position, [0.3, -0.2, 0.02], atol=2e-3)  # the unnamed keyframe
    types = parse_robot_description(probe.messages("robot_description")[-1][1].data)
    assert types == {"yaw": "revolute", "pitch": "revolute", "grip": "prismatic"}

    # end effector: same stamps as joint_states, at the site's position for those joints
    import mujoco

    model = mujoco.MjModel.from_xml_string(OWN_ROBOT)
    data = mujoco.MjData(model)
    by_stamp = {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in probe.messages("joint_states")}
    matched = 0
    for _, ee in probe.messages("end_effector")[-10:]:
        state = by_stamp.get((ee.header.stamp.sec, ee.header.stamp.nanosec))
        if state is None:
            continue
        data.qpos[:] = state.position
        mujoco.mj_kinematics(model, data)
        np.testing.assert_allclose([ee.point.x, ee.point.y, ee.point.z], data.site_xpos[0], atol=1e-6)
        matched += 1
    assert matched >= 5 and ee.header.frame_id == "world"

    # a two-value command ordered by robot.joints (pitch, yaw): both move, the gripper holds
    probe.wait_for(lambda: cmd.get_subscription_count() > 0, 10, "command subscriber")
    cmd.publish(Float64MultiArray(data=[0.4, -0.5]))

    def pos():
        return np.asarray(probe.messages("joint_states")[-1][1].position)

    probe.wait_for(lambda: abs(pos()[0] + 0.5) < 0.05 and abs(pos()[1] - 0.4) < 0.05, 10, "yaw and pitch to move")
    assert abs(pos()[2] - 0.02) < 2e-3
    # a command of the wrong length says which joints it must be ordered by, and how to change them
    cmd.publish(Float64MultiArray(data=[0.0, 0.0, 0.0]))
    probe.wait_for(lambda: "robot.joints" in procs.log("sim_node"), 10, "the length warning")
    assert "['pitch', 'yaw']" in procs.log("sim_node")
