"""record_demos over real DDS: the bag holds end_effector (PointStamped, stamped like joint_states, at
MuJoCo's site position), the primitive, the robot description and the commands; training reads the
joint types from it."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")


def test_record_demos_bag_has_end_effector_primitive_and_description(ros, tmp_path):
    from rosbags.highlevel import AnyReader

    from pvrnn_ros.bringup import Bringup
    from pvrnn_ros.core.data import read_joint_types, read_rosbag, select_joints
    from pvrnn_ros.sim.arm_sim import ArmSim
    from pvrnn_ros.sim.scenes import scene_path

    _, _, env = ros
    bags = tmp_path / "bags"
    up = Bringup("record_demos", tmp_path / "logs", [
        f"recorder_node.output_dir:={bags}", "recorder_node.episode_count:=1",
        "recorder_node.episode_duration:=3.0", "sim_node.real_time_factor:=2.0"], env=env)
    up.start()
    try:
        assert up.wait_node("recorder_node", 90) == 0, (tmp_path / "logs" / "recorder_node.log").read_text()
    finally:
        up.stop()
    bag = bags / "episode_000"
    with AnyReader([bag]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types["/teacher/end_effector"] == "geometry_msgs/msg/PointStamped"
        assert types["/teacher/primitive"] == "std_msgs/msg/String"
        assert types["/teacher/robot_description"] == "std_msgs/msg/String"
        assert types["/teacher/forward_position_controller/commands"] == "std_msgs/msg/Float64MultiArray"
        states, ee, prims = {}, [], []
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/teacher/joint_states":
                states[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
            elif conn.topic == "/teacher/end_effector":
                ee.append(msg)
            elif conn.topic == "/teacher/primitive":
                prims.append(msg.data)
    assert prims and set(prims) <= {"rest", "reach_left", "reach_right", "circle", "wave"}
    sim = ArmSim(scene_path("teacher_learner"))
    joints = sim.robot_joints("teacher_")
    matched = 0
    for msg in ee[::10]:
        state = states.get((msg.header.stamp.sec, msg.header.stamp.nanosec))
        if state is None:
            continue
        pos = dict(zip(state.name, state.position))
        sim.reset(positions={n: pos[sim.strip_prefix(n, "teacher_")] for n in joints})
        np.testing.assert_allclose([msg.point.x, msg.point.y, msg.point.z],
                                   sim.site_position("teacher_end_effector"), atol=1e-6)
        matched += 1
    assert matched >= 5, f"only {matched} end_effector messages matched a joint_states stamp"
    # training takes the joint types (and units) from the recorded robot description
    jt = read_joint_types(bag, "/teacher/joint_states")
    demo = read_rosbag(bag, "/teacher/joint_states")
    chosen = select_joints(demo.joint_names, None, jt)
    assert chosen.names == demo.joint_names and chosen.units == ["rad"] * 7 and not chosen.notes
    # the trainer's reader takes the modalities from the same DDS-recorded bag, matched by time
    from pvrnn_ros.core.config import Config
    from pvrnn_ros.core.data import resample

    cfg = Config.from_dict({"data": {"modalities": [{"name": "end_effector"}, {"name": "task", "source": "segments"}]}})
    demo = resample(read_rosbag(bag, "/teacher/joint_states", cfg.data.modalities), cfg.data.rate_hz)
    ee, task = demo.extra["end_effector"], demo.extra["task"]
    assert ee.components == ["x", "y", "z"] and ee.values.shape == (len(demo), 3)
    # the recorder subscribes to each topic as discovery finds it, so the end effector may start a
    # few steps after the joints; from its first sample on, every step has a point
    finite = np.isfinite(ee.values).all(axis=1)
    first = int(np.argmax(finite))
    assert finite.any() and first <= 5, f"no end effector in the first {first} steps"
    assert finite[first:-1].all()
    assert len(task.labels) == len(demo) and all(lab is not None for lab in task.labels[len(demo) // 2:])
