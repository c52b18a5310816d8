"""Reaching: IK in MuJoCo over the region, synth --task reach, execution measured in the sim, a small
trained PV-RNN planning to a held-out end-effector goal, the baselines, bad inputs."""
from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest
import torch

from pvrnn_ros.sim.arm_sim import ArmSim
from pvrnn_ros.sim.reach import (END_EFFECTOR_SITE, REACH_REGION, TARGET_SITE, ReachDemonstrator, ReachIK,
                                 ReachTiming, execute_trajectory, heldout_goals, synthesize_reach)
from pvrnn_ros.sim.scenes import scene_path


@pytest.fixture(scope="module")
def sim():
    s = ArmSim(scene_path("arm7"))
    yield s
    s.close()


def _fk_fresh(q):
    """Site position for posture q from a freshly loaded model: nothing shared with the code under test."""
    m = mujoco.MjModel.from_xml_path(str(scene_path("arm7")))
    d = mujoco.MjData(m)
    for name, v in zip(ArmSim(scene_path("arm7")).joint_names, q):
        d.qpos[m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)]] = v
    mujoco.mj_kinematics(m, d)
    return d.site_xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, END_EFFECTOR_SITE)].copy()


def test_ik_reaches_points_over_the_region_within_a_millimetre(sim):
    ik = ReachIK(sim.model, sim.joint_names, sim.positions())
    lo, hi = sim.joint_limits()
    points = np.concatenate([REACH_REGION.corners(), REACH_REGION.sample(np.random.default_rng(3), 40)])
    postures = []
    for p in points:
        sol = ik.solve(p)
        assert sol.converged, (p, sol.error)
        assert np.linalg.norm(_fk_fresh(sol.positions) - p) < 1e-3
        assert np.all(sol.positions > lo) and np.all(sol.positions < hi)
        postures.append(sol.positions)
    # neighbouring targets get neighbouring postures (the map a network learns is smooth)
    a, b = ik.solve([0.45, 0.0, 0.7]).positions, ik.solve([0.46, 0.0, 0.7]).positions
    assert np.abs(a - b).max() < 0.1


def test_bad_targets_are_clear_errors(sim):
    with pytest.raises(ValueError, match=r"target z = 1\.2 m is outside the reach region x in \[0\.35"):
        REACH_REGION.check([0.5, 0.0, 1.2])
    with pytest.raises(ValueError, match=r"target \[0\.5, nan, 0\.7\] is invalid: expected finite"):
        REACH_REGION.check([0.5, float("nan"), 0.7])
    with pytest.raises(ValueError, match="expected 3 coordinates"):
        REACH_REGION.check([0.5, 0.0])
    with pytest.raises(ValueError, match=r"target 1 x = 0\.9 m is outside the reach region"):
        synthesize_reach("/nonexistent-never-written", 2, targets=[[0.5, 0, 0.7], [0.9, 0, 0.7]], progress=False)
    ik = ReachIK(sim.model, sim.joint_names, sim.positions())
    with pytest.raises(ValueError, match="IK target .* expected 3 finite"):
        ik.solve([np.nan, 0, 0])
    with pytest.raises(ValueError, match="no site named 'hand'"):
        ReachIK(sim.model, sim.joint_names, sim.positions(), site="hand")
    with pytest.raises(ValueError, match="reach_s = 0 is invalid"):
        ReachTiming(reach_s=0).validate()


def test_synth_task_reach_writes_columns_and_target_sidecars(tmp_path):
    from pvrnn_ros.cli import main
    from pvrnn_ros.core.config import Config
    from pvrnn_ros.core.data import load_demonstrations
    from pvrnn_ros.core.train import build_model

    assert main(["synth", "--task", "reach", "-n", "3", "--out", str(tmp_path), "--rate", "10", "--no-progress"]) == 0
    header = (tmp_path / "episode_000.csv").read_text().splitlines()[0].split(",")
    assert header[-3:] == ["end_effector.x", "end_effector.y", "end_effector.z"] and header[0] == "time"
    cfg = Config.from_dict({"data": {"rate_hz": 10.0, "modalities": [{"name": "end_effector"}]}})
    demos = load_demonstrations(tmp_path, modalities=cfg.data.modalities)
    assert len(demos) == 3 and len(demos[0].joint_names) == 7
    for i, d in enumerate(demos):
        side = json.loads((tmp_path / f"episode_{i:03d}.target.json").read_text())
        target = np.array(side["target"])
        REACH_REGION.check(target)
        assert side["end_effector_site"] == END_EFFECTOR_SITE and side["target_site"] == TARGET_SITE
        ee = d.extra["end_effector"].values
        t_hold_end = side["timing"]["reach_s"] + side["timing"]["hold_s"]
        k = int(round(t_hold_end * 10)) - 1
        assert np.linalg.norm(ee[k] - target) < 5e-3  # held at the target
        assert np.linalg.norm(ee[0] - ee[-1]) < 5e-3  # and back home
        np.testing.assert_allclose(_fk_fresh(d.positions[k]), ee[k], atol=1e-4)  # the column is the site
    trained = build_model(cfg, demos)  # the trainer takes them
    assert trained.layout.names == ["end_effector"] and trained.data.shape[2] == 10
    assert main(["synth", "--task", "reach", "--scene", "teacher_learner", "--out", str(tmp_path / "x")]) == 2


def test_execution_is_measured_in_the_sim_and_the_metric_matches_mujoco(sim):
    from pvrnn_ros.core.reach import reach_outcome

    home = sim.positions()
    goal = np.array([0.45, 0.1, 0.65])
    posture = ReachIK(sim.model, sim.joint_names, home).solve(goal).positions
    demo = ReachDemonstrator(home, posture, ReachTiming())
    traj = np.stack([demo.sample(k / 10) for k in range(1, 26)])  # reach + hold at 10 Hz
    ex = execute_trajectory(sim, sim.joint_names, traj, 10.0, start=home, target=goal)
    assert ex.settled and ex.end_effector.shape == (len(ex.times), 3)
    np.testing.assert_allclose(ex.end_effector[-1], _fk_fresh(ex.positions[-1]), atol=1e-6)
    out = reach_outcome(ex.times, ex.end_effector, goal, tolerance=0.03)
    dist = np.linalg.norm(ex.end_effector - goal, axis=1)
    assert out.final_error == pytest.approx(dist[-1]) and out.final_error < 3e-3 and out.success
    assert out.time_to_reach == pytest.approx(ex.times[np.argmax(dist <= 0.03)])
    assert 0.8 < out.time_to_reach < 1.6  # within the 1.5 s reach, plus servo lag
    # the marker moved onto the goal
    sid = mujoco.mj_name2id(sim.model, mujoco.mjtObj.mjOBJ_SITE, TARGET_SITE)
    np.testing.assert_allclose(sim.model.site_pos[sid], goal)
    # a trajectory that stays home never reaches
    still = execute_trajectory(sim, sim.joint_names, np.repeat(home[None], 5, 0), 10.0, start=home)
    assert reach_outcome(still.times, still.end_effector, goal).time_to_reach is None
    with pytest.raises(ValueError, match="expected finite"):
        execute_trajectory(sim, sim.joint_names, np.full((3, 7), np.nan), 10.0)


@pytest.fixture(scope="module")
def reach_model(tmp_path_factory):
    """A small PV-RNN trained on 60 reach demonstrations (about 15-30 s on 2 cores)."""
    from pvrnn_ros.commands.demo_reach import reach_config
    from pvrnn_ros.core.train import Trainer, build_model
    from pvrnn_ros.sim.reach_eval import load_reach_data

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("reach")
    synthesize_reach(out, 60, seed=7, rate_hz=10.0, progress=False)
    cfg = reach_config()
    data = load_reach_data(out, cfg.data.rate_hz, cfg.data.modalities)
    trained = build_model(cfg, data.demos)
    Trainer(trained).run(2000, None, progress=False)
    return trained, data


def test_planned_reach_to_a_heldout_goal_ends_within_tolerance_in_the_sim(reach_model, sim):
    from pvrnn_ros.core.config import PlanConfig
    from pvrnn_ros.sim.reach_eval import run_pvrnn

    trained, data = reach_model
    goals, labels = heldout_goals(n_inside=3, n_edge=0, seed=99)
    assert np.min(np.linalg.norm(data.targets[:, None] - goals[None], axis=2)) > 0.01  # not a training target
    home = sim.positions(trained.joint_names)
    results = run_pvrnn(trained, PlanConfig(iterations=300, candidates=8, backend="cpu"), sim, home, goals, labels,
                        data.timing)
    errors = [r.outcome.final_error for r in results]
    print("planned reach final errors (cm):", [round(100 * e, 2) for e in errors])
    for r in results:  # the measured end point is the site for the measured final joints
        assert r.extra["settled"]
        assert r.extra["losses"][-1] < r.extra["losses"][0]
    # the home posture is 19-35 cm from these goals; a plan must bring the hand within 3 cm
    assert np.linalg.norm(results[0].end_effector[0] - goals, axis=1).min() > 0.1
    assert sum(r.outcome.success for r in results) >= 2 and np.median(errors) < 0.03


def test_online_replanning_reaches_heldout_goals_in_closed_loop(reach_model, sim):
    from pvrnn_ros.core.config import PlanConfig
    from pvrnn_ros.sim.reach_eval import run_online

    trained, data = reach_model
    goals, labels = heldout_goals(n_inside=3, n_edge=0, seed=99)
    home = sim.positions(trained.joint_names)
    results = run_online(trained, PlanConfig(iterations=300, backend="cpu"), sim, home, goals, labels, data.timing)
    errors = [r.outcome.final_error for r in results]
    print("online reach final errors (cm):", [round(100 * e, 2) for e in errors],
          "tick ms (median):", [round(r.extra["tick_ms_median"], 1) for r in results])
    assert all(r.extra["settled"] and r.extra["status"] in ("pursuing", "reached") for r in results)
    assert sum(r.outcome.success for r in results) >= 2 and np.median(errors) < 0.03
    with pytest.raises(ValueError, match="lead_steps=99 is invalid"):
        run_online(trained, PlanConfig(backend="cpu"), sim, home, goals[:1], labels[:1], data.timing, lead_steps=99)


def test_baselines_train_and_produce_trajectories(reach_model, sim):
    from pvrnn_ros.core.baselines import BaselineSettings
    from pvrnn_ros.core.reach import fit_reach_policy, nearest_demonstration
    from pvrnn_ros.sim.reach_eval import bc_training_episodes, plan_horizon, run_bc, run_nearest, summaries

    trained, data = reach_model
    goals, labels = heldout_goals(n_inside=2, n_edge=1, seed=5)
    home = sim.positions(trained.joint_names)
    nearest = run_nearest(data, sim, home, goals, labels)
    for r, g in zip(nearest, goals):
        i, dist = nearest_demonstration(data.reached, g)
        assert r.extra["demo"] == data.paths[i].name and dist == pytest.approx(r.extra["demo_distance"])
        assert r.outcome.final_error < dist + 0.01  # replaying a demo ends where that demo ended
    eps, reached = bc_training_episodes(data)
    H, _ = plan_horizon(data.timing, data.rate_hz)
    assert len(eps[0]) == H + 1
    policy = fit_reach_policy(eps, reached, BaselineSettings(hidden_sizes=(32,), max_epochs=150, patience=30))
    assert policy.info["epochs"] <= 150 and policy.info["seconds"] > 0
    bc = run_bc(policy, trained.joint_names, sim, home, goals, labels, H, data.rate_hz)
    for r in bc:
        steps = H * 5 + 75  # 5 control steps per model step, then 1.5 s settling, plus the start
        assert r.end_effector.shape == (steps + 1, 3) and np.all(np.isfinite(r.end_effector))
        assert np.linalg.norm(r.end_effector[-1] - r.end_effector[0]) > 0.05  # it moved
    s = summaries(nearest + bc)
    assert set(s) == {"nearest", "bc"} and s["bc"]["all"]["goals"] == 3
    with pytest.raises(ValueError, match="expected one goal per episode"):
        fit_reach_policy(eps, reached[:2])
    with pytest.raises(ValueError, match=r"joints \[nan"):
        policy.next_target([np.nan] * 7, goals[0])


def test_demo_task_reach_quick_writes_the_report(tmp_path):
    from pvrnn_ros.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--task", "reach", "--quick", "--no-progress", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for method in ("PV-RNN plan", "PV-RNN online replanning", "nearest demo replay", "goal-conditioned BC"):
        assert method in report
    res = json.loads((out / "results.json").read_text())
    assert {g["method"] for g in res["goals"]} == {"pvrnn", "pvrnn_online", "nearest", "bc"} and len(res["goals"]) == 16
    assert res["training_seconds"]["pvrnn"] > 0 and res["training_seconds"]["bc"] > 0
    for g in res["goals"]:  # every figure is a distance measured in the sim
        assert 0 <= g["final_error"] < 1.0 and g["success"] == (g["final_error"] <= 0.03)
    for png in ("reach_paths.png", "plan_free_energy.png", "model/loss.png"):
        assert (out / png).stat().st_size > 1000
    assert len(list((out / "data").glob("*.target.json"))) == 40
