"""Bring-your-own-robot pieces without ROS: keyframe choice, pair scenes built at run time, joint
roles, working ranges fitted to a start pose, servo lag measured in the physics."""
import numpy as np
import pytest

import pvrnn_ros.sim  # noqa: F401  (first: picks a headless MUJOCO_GL before mujoco loads)

pytest.importorskip("mujoco")

from pvrnn_ros.sim.arm_sim import ArmSim  # noqa: E402
from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, HOME_U, Demonstrator, assign_roles, fit_working_range  # noqa: E402
from pvrnn_ros.sim.robot import robot_description_urdf, robot_joints  # noqa: E402
from pvrnn_ros.sim.scenes import robot_pair_spec, scene_path  # noqa: E402
from test.ros.test_sim_node import OWN_ROBOT  # noqa: E402

MOTORS_ONLY = """
<mujoco><compiler angle="radian"/>
  <worldbody><body><joint name="a" type="hinge" range="-1 1"/><geom size="0.1" mass="1"/>
    <body pos="0 0 0.2"><joint name="b" type="hinge" axis="0 1 0"/><geom size="0.05" mass="0.5"/></body>
  </body></worldbody>
  <actuator><motor joint="a"/></actuator>
  <keyframe><key name="first" qpos="0.1 0.2"/><key name="second" qpos="-0.3 0.4"/></keyframe>
</mujoco>"""


def test_keyframe_home_else_first_else_error():
    sim = ArmSim(OWN_ROBOT)
    assert sim.keyframe == "<unnamed #0>"
    np.testing.assert_allclose(sim.positions(), [0.3, -0.2, 0.02])
    assert ArmSim(scene_path("arm7")).keyframe == "home"
    with pytest.raises(ValueError, match=r"no keyframe named 'lift'; the model's keyframes: \['<unnamed #0>'\]"):
        ArmSim(OWN_ROBOT, keyframe="lift")
    assert ArmSim(OWN_ROBOT, keyframe=None).keyframe is None


def test_pair_of_a_user_model_with_servos_and_merged_keyframes(tmp_path):
    path = tmp_path / "motors.xml"
    path.write_text(MOTORS_ONLY)
    sim = ArmSim(robot_pair_spec(path, position_kp=50.0))
    assert sim.joint_names == ["teacher_a", "teacher_b", "learner_a", "learner_b"]
    # "a" keeps its motor (not a position servo); "b" got one
    assert np.isnan(sim.targets(["teacher_a"]))[0] and np.isfinite(sim.targets(["teacher_b"]))[0]
    assert sim.keyframe == "first"  # no "home": the first keyframe, merged over both copies
    np.testing.assert_allclose(sim.start_positions(), [0.1, 0.2, 0.1, 0.2])
    assert sim.joint_types() == ["revolute", "continuous"] * 2
    info = robot_joints(sim, "learner_")
    assert info.names == ["a", "b"] and info.keyframe == "first"
    # the bundled arm attached twice is the bundled two-arm scene
    pair, bundled = ArmSim(robot_pair_spec(scene_path("arm7"))), ArmSim(scene_path("teacher_learner"))
    assert pair.joint_names == bundled.joint_names
    np.testing.assert_allclose(pair.start_positions(), bundled.start_positions())
    np.testing.assert_allclose(pair.site_position("teacher_end_effector"), bundled.site_position("teacher_end_effector"))
    with pytest.raises(ValueError, match="distinct non-empty"):
        robot_pair_spec(path, ("x_", "x_"))


def test_roles_are_said_and_never_by_index_modulo_seven():
    names = [f"j{k}" for k in range(9)] + ["teacher_elbow", "grip"]
    roles, why = assign_roles(names, types=["revolute"] * 10 + ["prismatic"])
    assert roles[9] == "elbow" and why[9] == "by name"
    assert roles[:6] == [r for r in DEFAULT_JOINT_NAMES if r != "elbow"] and why[0] == "next unused role"
    assert roles[6:9] == ["hold"] * 3 and why[6] == "all 7 roles taken"  # not j7 -> shoulder_pan again
    assert roles[10] == "hold" and why[10] == "prismatic"
    given, why = assign_roles(["x", "y"], ["wrist_roll", ""])
    assert given == ["wrist_roll", "shoulder_pan"] and why[0] == "given"
    with pytest.raises(ValueError, match="role 'wave_hand' for joint 'x'"):
        assign_roles(["x"], ["wave_hand"])
    with pytest.raises(ValueError, match="roles has 1 entries for 2 joints"):
        assign_roles(["x", "y"], ["elbow"])
    demo = Demonstrator(names, -np.ones(11), np.ones(11), types=["revolute"] * 10 + ["prismatic"])
    assert "j7 -> hold (all 7 roles taken)" in demo.role_report()
    q = np.stack([demo.sample(t) for t in np.arange(0, 20, 0.1)])
    assert np.ptp(q[:, 6:9], axis=0).max() == 0.0 and np.ptp(q[:, 10]) == 0.0  # hold joints stay


def test_working_range_fitted_to_the_start_pose():
    lo, hi = np.array([-1.0, 0.0]), np.array([1.0, 3.0])
    roles = ["shoulder_lift", "elbow"]
    start = np.array([0.5, 0.2])
    flo, fhi = fit_working_range(lo, hi, roles, start)
    assert np.all(flo >= lo - 1e-12) and np.all(fhi <= hi + 1e-12)
    demo = Demonstrator(["a", "b"], flo, fhi, roles=roles)
    np.testing.assert_allclose(demo.home, start)  # the via posture is the start pose
    q = np.stack([demo.sample(t) for t in np.arange(0, 60, 0.05)])
    assert np.all(q >= lo) and np.all(q <= hi)
    same = fit_working_range(lo, hi, roles, None)
    np.testing.assert_allclose(same[0], lo)
    np.testing.assert_allclose(same[1], hi)
    # the bundled arm's home keyframe is the standard via posture: ranges unchanged
    full_lo, full_hi = ArmSim(scene_path("arm7")).joint_limits()
    start = 0.5 * (full_lo + full_hi) + HOME_U * 0.5 * (full_hi - full_lo)
    got = fit_working_range(full_lo, full_hi, list(DEFAULT_JOINT_NAMES), start)
    np.testing.assert_allclose(got[0], full_lo, atol=1e-9)
    np.testing.assert_allclose(got[1], full_hi, atol=1e-9)


def test_servo_lag_recovered_and_measured_in_the_physics():
    from pvrnn_ros.sim.tuning import imitation_settings_in_sim, servo_lag

    t = np.arange(0, 10, 0.02)
    cmd = np.stack([np.sin(t), np.cos(0.7 * t)], 1)
    meas = np.stack([np.sin(t - 0.14), np.cos(0.7 * (t - 0.14))], 1)
    lag, err = servo_lag(t, cmd, t, meas)
    assert abs(lag - 0.14) < 0.011 and err < 0.01
    tuned = imitation_settings_in_sim("teacher_learner", model_rate=10.0)
    assert 0.02 <= tuned.lead - 0.1 <= 0.15 and 0.02 < tuned.max_step < 0.3


def test_robot_description_roundtrip():
    from pvrnn_ros.core.data import parse_robot_description

    urdf = robot_description_urdf("r", ["a", "b", "c"], ["revolute", "continuous", "prismatic"],
                                  [-1, -np.inf, 0], [1, np.inf, 0.04])
    assert parse_robot_description(urdf) == {"a": "revolute", "b": "continuous", "c": "prismatic"}
