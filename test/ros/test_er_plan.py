"""er_node in mode plan over DDS: the simulated arm is driven towards a JointState goal, the plan is
published, a goal changed mid-motion is followed, bad goals (unknown joint, NaN, far outside the trained
region, a modality the model lacks) get a rejected status naming the value and the node stays up, and a
goal that cannot be met within tolerance is given up (planning stops, the command holds)."""
from __future__ import annotations

import math
import time

import numpy as np

from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES

NAMES = list(DEFAULT_JOINT_NAMES)
TOL = 0.08  # rad


def _goal_msg(names, positions):
    from sensor_msgs.msg import JointState

    return JointState(name=list(names), position=[float(v) for v in positions])


def _joints(probe, names):
    """The newest sim joint positions of `names`."""
    msg = probe.messages("joint_states")[-1][1]
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in names])


def _statuses(probe, since=0.0):
    return [m.data for t, m in probe.messages("pvrnn/goal_status") if t >= since]


def _wait_reached(probe, procs, since, timeout, what):
    try:
        probe.wait_for(lambda: any(s.startswith("reached") for s in _statuses(probe, since)), timeout, what)
    except AssertionError as exc:
        errs = [round(m.data, 3) for t, m in probe.messages("pvrnn/goal_error") if t >= since]
        raise AssertionError(f"{exc}; goal errors {errs[::5]}; statuses {_statuses(probe, since)}; er_node log:\n"
                             + procs.log("er_node")[-3000:]) from None
    return time.monotonic() - since


def test_plan_mode_drives_the_arm_to_joint_goals(ros, plan_model):
    from sensor_msgs.msg import JointState
    from geometry_msgs.msg import Point, PointStamped
    from std_msgs.msg import Float64, String

    from diagnostic_msgs.msg import DiagnosticArray

    from .clients import latest_status, set_parameter
    from trajectory_msgs.msg import JointTrajectory

    procs, probe, _ = ros
    probe.subscribe(JointState, "joint_states", depth=20)
    probe.subscribe(JointTrajectory, "pvrnn/plan")
    probe.subscribe(Float64, "pvrnn/goal_error")
    probe.subscribe(Float64, "pvrnn/tick_latency")
    probe.subscribe(String, "pvrnn/goal_status")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    procs.start("sim_node", "scene:=arm7", "robots:=['']", "real_time_factor:=1.0")
    er = procs.start("er_node", f"model_path:={plan_model}", "mode:=plan", f"goal_tolerance:={TOL}",
                     "goal_give_up_time:=30.0", "goal_settle_time:=0.3", "plan_iterations:=30")
    goals = probe.publisher(JointState, "pvrnn/goal/joints")
    probe.wait_for(lambda: goals.get_subscription_count() > 0 and len(probe.messages("joint_states")) > 5, 60,
                   "er_node to subscribe the goal topic and the sim to publish")
    probe.wait_for(lambda: "active: mode plan" in procs.log("er_node"), 60, "er_node active")
    time.sleep(1.0)  # a few observed steps before the goal
    assert not probe.messages("pvrnn/plan"), "no goal yet: nothing to plan"

    # a bad goal first: an unknown joint, then NaN; the node answers with a status naming the value
    t0 = time.monotonic()
    goals.publish(_goal_msg(["knee"], [0.3]))
    goals.publish(_goal_msg(["elbow"], [math.nan]))
    goals.publish(_goal_msg(["elbow"], [40.0]))
    # DDS orders samples within a topic, not across topics: hear these three before the end-effector goal
    probe.wait_for(lambda: len(_statuses(probe, t0)) >= 3, 20, "three joint-goal rejections")
    ee = probe.publisher(PointStamped, "pvrnn/goal/end_effector")
    probe.wait_for(lambda: ee.get_subscription_count() > 0, 20, "er_node to subscribe the end-effector goal")
    ee.publish(PointStamped(point=Point(x=0.3, y=0.1, z=0.5)))
    probe.wait_for(lambda: len(_statuses(probe, t0)) >= 4, 20, "four rejections")
    bad = _statuses(probe, t0)
    assert bad[0].startswith("rejected: goal on joint 'knee'") and "shoulder_pan" in bad[0] and bad[0].endswith("idle")
    assert bad[1].startswith("rejected: goal joints.elbow = nan is not a finite number")
    assert bad[2].startswith("rejected: goal joints.elbow = 40.0 is far outside the trained region")
    assert bad[3].startswith("rejected: goal on 'end_effector': the model has no such modality")
    assert er.poll() is None

    # goal 1: two joints of a posture in the trained repertoire
    joints = ["shoulder_pan", "elbow"]
    start = _joints(probe, joints)
    goal1 = start + np.array([0.2, 0.1])
    t1 = time.monotonic()
    goals.publish(_goal_msg(joints, goal1))
    probe.wait_for(lambda: len(probe.messages("pvrnn/plan")) >= 5, 30, "plans")
    plan = probe.messages("pvrnn/plan")[-1][1]
    assert list(plan.joint_names) == NAMES and len(plan.points) == 15  # the checkpoint's plan horizon
    times = [p.time_from_start.sec + 1e-9 * p.time_from_start.nanosec for p in plan.points]
    assert np.allclose(times, np.arange(1, 16) / 10.0)
    t_reached1 = _wait_reached(probe, procs, t1, 25, "goal 1 reached")
    err1 = np.abs(_joints(probe, joints) - goal1).max()
    assert err1 < 2 * TOL, f"arm {err1:.3f} rad from goal 1"

    # goal 3, then goal 2 while the arm is on its way to goal 3 (mid-motion)
    goal3 = start - np.array([0.2, 0.1])
    t3 = time.monotonic()
    goals.publish(_goal_msg(joints, goal3))
    probe.wait_for(lambda: np.abs(_joints(probe, joints) - goal1).max() > 0.1, 20, "the arm leaving goal 1")
    goal2 = start
    t2 = time.monotonic()
    goals.publish(_goal_msg(joints, goal2))
    moving = []  # joint speed right after the switch: the arm keeps moving (no stop)
    for _ in range(5):
        a = _joints(probe, joints)
        time.sleep(0.2)
        moving.append(np.abs(_joints(probe, joints) - a).max() / 0.2)
    t_reached2 = _wait_reached(probe, procs, t2, 45, "goal 2 reached")
    err2 = np.abs(_joints(probe, joints) - goal2).max()
    lat = [m.data for _, m in probe.messages("pvrnn/tick_latency")]
    errs = [m.data for _, m in probe.messages("pvrnn/goal_error")]
    print(f"plan mode: goal 1 reached in {t_reached1:.1f} s (error {err1:.3f} rad), goal 2 after a switch "
          f"mid-motion in {t_reached2:.1f} s (error {err2:.3f} rad); speeds after the switch "
          f"{np.round(moving, 3)} rad/s; plan tick latency median {np.median(lat):.1f} ms p99 "
          f"{np.percentile(lat, 99):.1f} ms over {len(lat)} ticks")
    assert err2 < 2 * TOL
    assert max(moving[:2]) > 0.05, f"the arm stopped at the goal change: {moving} rad/s"
    assert errs and all(math.isfinite(e) for e in errs)
    assert [s for s in _statuses(probe, t3) if s.startswith("pursuing")][:2] == [
        "pursuing: joints " + ", ".join(f"{n}={v:.3g}" for n, v in zip(joints, g)) for g in (goal3, goal2)]

    # giving up: a tolerance no arm meets; once the error stops shrinking for 1.5 s the node gives up,
    # stops planning and holds the command, and stays up
    assert set_parameter(probe, "er_node", "goal_tolerance", 1e-5) == (True, "")
    assert set_parameter(probe, "er_node", "goal_give_up_time", 1.5) == (True, "")
    t4 = time.monotonic()
    goals.publish(_goal_msg(joints, goal1))
    try:
        probe.wait_for(lambda: any(s.startswith("given_up") for s in _statuses(probe, t4)), 30, "giving up")
    except AssertionError as exc:
        errs = [round(m.data, 4) for t, m in probe.messages("pvrnn/goal_error") if t >= t4]
        raise AssertionError(f"{exc}; goal errors {errs[::5]}; statuses {_statuses(probe, t4)}; er_node log:\n"
                             + procs.log("er_node")[-3000:]) from None
    gave_up = next(s for s in _statuses(probe, t4) if s.startswith("given_up"))
    assert "gave up after" in gave_up and "no progress for" in gave_up and "tolerance 1e-05" in gave_up
    time.sleep(0.5)
    n_plans, held = len(probe.messages("pvrnn/plan")), _joints(probe, joints)
    time.sleep(1.0)
    assert len(probe.messages("pvrnn/plan")) == n_plans, "planning goes on after giving up"
    assert np.abs(_joints(probe, joints) - held).max() < 0.02, "the arm moves after giving up"
    probe.wait_for(lambda: (latest_status(probe, "er_node: goal") or (0, "", "", {}))[3].get("status") == "given_up",
                   5, "the goal diagnostic to report giving up")
    _, level, message, values = latest_status(probe, "er_node: goal")
    assert level == "WARN" and message.startswith("given_up") and values["goal"].startswith("joints shoulder_pan")
    assert er.poll() is None
    log = procs.log("er_node")
    assert "goal rejected: goal on joint 'knee'" in log and "goal reached after" in log and "gave up after" in log
    assert "tick failed" not in log, log
    assert procs.stop(er) == 0, log


def test_goal_given_in_observe_mode_is_pursued_once_mode_is_plan(ros, plan_model):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from .clients import set_parameter

    procs, probe, _ = ros
    probe.subscribe(JointState, "joint_states", depth=20)
    probe.subscribe(JointTrajectory, "pvrnn/plan")
    probe.subscribe(JointTrajectory, "pvrnn/prediction")
    probe.subscribe(String, "pvrnn/goal_status")
    procs.start("sim_node", "scene:=arm7", "robots:=['']", "real_time_factor:=1.0")
    er = procs.start("er_node", f"model_path:={plan_model}", "mode:=observe", f"goal_tolerance:={TOL}",
                     "goal_settle_time:=0.3")
    goals = probe.publisher(JointState, "pvrnn/goal/joints")
    probe.wait_for(lambda: goals.get_subscription_count() > 0 and len(probe.messages("pvrnn/prediction")) >= 3, 60,
                   "er_node predicting in observe mode")
    joints = ["wrist_flex", "elbow"]
    start = _joints(probe, joints)
    goal = start + np.array([-0.15, 0.15])
    goals.publish(_goal_msg(joints, goal))
    probe.wait_for(lambda: _statuses(probe), 20, "a goal status")
    assert _statuses(probe)[0].endswith("(mode is observe: pursued once mode is plan)")
    time.sleep(1.0)
    assert not probe.messages("pvrnn/plan") and np.abs(_joints(probe, joints) - start).max() < 0.01  # not moving
    assert set_parameter(probe, "er_node", "mode", "plan") == (True, "")
    t1 = time.monotonic()
    t_reached = _wait_reached(probe, procs, t1, 30, "the goal reached in plan mode")
    err = np.abs(_joints(probe, joints) - goal).max()
    print(f"observe -> plan: goal reached {t_reached:.1f} s after the switch, arm error {err:.3f} rad")
    assert err < 2 * TOL and probe.messages("pvrnn/plan")
    assert er.poll() is None
    assert "mode observe -> plan: commands -> forward_position_controller/commands" in procs.log("er_node")
    assert procs.stop(er) == 0


def test_up_plan_graph_reaches_a_goal(ros, plan_model, tmp_path):
    """`pvrnn-ros up plan` (the graph of launch/plan.launch.py, config/plan_params.yaml) with a goal
    published from the test, as docs/ros.md shows."""
    import os
    import signal
    import subprocess
    import sys

    from sensor_msgs.msg import JointState
    from std_msgs.msg import String

    from .conftest import REPO

    procs, probe, env = ros
    probe.subscribe(JointState, "joint_states", depth=20)
    probe.subscribe(String, "pvrnn/goal_status")
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "pvrnn_ros.cli", "up", "plan", "--domain-id", env["ROS_DOMAIN_ID"],
                           "--run-dir", str(tmp_path / "run"), "-p", f"er_node.model_path:={plan_model}",
                           "--duration", "80"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    log.close()
    try:
        goals = probe.publisher(JointState, "pvrnn/goal/joints")
        probe.wait_for(lambda: goals.get_subscription_count() > 0 and len(probe.messages("joint_states")) > 5, 60,
                       "the plan graph up")
        probe.wait_for(lambda: "activate ok" in (tmp_path / "up.log").read_text(), 60, "er_node active")
        joints = ["shoulder_pan", "elbow"]
        goal = _joints(probe, joints) + np.array([0.15, 0.1])
        t0 = time.monotonic()
        goals.publish(_goal_msg(joints, goal))
        try:
            probe.wait_for(lambda: any(s.startswith("reached") for s in _statuses(probe, t0)), 30, "goal reached")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {_statuses(probe, t0)}\n" + (tmp_path / "run" / "er_node.log").read_text()
                                 [-3000:]) from None
        err = np.abs(_joints(probe, joints) - goal).max()
        assert err < 0.1, f"arm {err:.3f} rad from the goal"  # plan_params.yaml: goal_tolerance 0.05
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGINT)
        try:
            rc = up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            raise
    assert rc == 0, (tmp_path / "up.log").read_text()
    assert os.path.getsize(tmp_path / "run" / "er_node.log") > 0
