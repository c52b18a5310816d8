"""Goal-directed planning: reaching joint goals on a small trained model, the batched candidates
in the fast backend against the reference, goal parsing, bad goals, the CLI's files."""
from __future__ import annotations

import numpy as np
import pytest

from pvrnn_ros.core.config import ConfigError, PlanConfig
from pvrnn_ros.core.plan import GoalError, GoalTerm, Planner


def _seq(trained, i):
    J = trained.layout.n_joints
    n = trained.sequence_lengths[i]
    return trained.normalizer.denormalize(trained.data[i, :n, :J].numpy())


def test_reaches_postures_of_the_trained_repertoire(trained):
    """From 10 observed steps, plan 15 steps to the posture the demonstration had then."""
    planner = Planner(trained, PlanConfig(horizon=15, iterations=200, candidates=6, backend="cpu"))
    errors = []
    for i, k in ((0, 30), (3, 60), (5, 45)):
        seq = _seq(trained, i)
        goal_q = seq[k + 14]
        plan = planner.plan(seq[:k], [GoalTerm("joints", list(goal_q), tolerance=0.15)])
        assert plan.positions.shape == (15, trained.layout.n_joints) and plan.times.shape == (15,)
        assert plan.candidates["positions"].shape == (6, 15, trained.layout.n_joints)
        assert plan.chosen == int(np.argmin(plan.candidates["goal"]))
        assert plan.free_energy["total"] == pytest.approx(plan.free_energy["evidence"] + plan.free_energy["goal"])
        assert plan.losses.shape == (200, 6) and plan.losses[-1].min() < plan.losses[0].min()
        errors.append(plan.goal_errors[0])
    # a final-posture error well below the spread of the postures themselves
    spread = float(np.abs(_seq(trained, 0) - _seq(trained, 0).mean(0)).max())
    print("plan final-posture errors (rad):", [round(e, 3) for e in errors], "posture spread", round(spread, 3))
    assert np.median(errors) < 0.15 < spread


def test_partial_goal_held_from_a_step(trained):
    names = trained.joint_names
    seq = _seq(trained, 1)
    planner = Planner(trained, PlanConfig(horizon=12, iterations=150, candidates=4, backend="cpu"))
    target = float(np.clip(seq[20, 1] + 0.1, seq[:, 1].min(), seq[:, 1].max()))
    plan = planner.plan(seq[:20], [GoalTerm.parse(f"joints.{names[1]}={target}@8~0.1")])
    held = plan.positions[8:, 1]
    assert np.abs(held - target).max() < 0.2 and plan.reached == [plan.goal_errors[0] <= 0.1]


@pytest.mark.parametrize("H", [1, 6])
def test_cpu_candidates_equal_reference(trained, H):
    cfg = dict(horizon=H, iterations=12, candidates=3, init_spread=0.3)
    seq = _seq(trained, 2)
    goal = [GoalTerm("joints", list(seq[25 + H]))]
    got = Planner(trained, PlanConfig(backend="cpu", **cfg)).plan(seq[:25], goal)
    ref = Planner(trained, PlanConfig(backend="reference", **cfg)).plan(seq[:25], goal)
    np.testing.assert_allclose(got.losses, ref.losses, rtol=1e-4)
    np.testing.assert_allclose(got.candidates["positions"], ref.candidates["positions"], atol=1e-4)
    np.testing.assert_allclose(got.candidates["goal"], ref.candidates["goal"], rtol=1e-3, atol=1e-7)
    assert got.chosen == ref.chosen


def test_goal_parsing():
    t = GoalTerm.parse("joints.elbow=1.2@20~0.02")
    assert (t.modality, t.components, t.values, t.from_step, t.tolerance) == ("joints", ["elbow"], ["1.2"], 20, 0.02)
    t = GoalTerm.parse("end_effector=0.3,0.1,0.5")
    assert t.modality == "end_effector" and t.components is None and len(t.values) == 3 and t.from_step is None
    for bad, msg in (("elbow", "expected NAME=VALUES"), ("joints.elbow=1@x", "expected @STEP"),
                     ("joints.elbow=", "no values")):
        with pytest.raises(GoalError, match=msg):
            GoalTerm.parse(bad)


def test_bad_goals_are_clear_errors(trained):
    planner = Planner(trained, PlanConfig(horizon=5, iterations=2, candidates=2, backend="cpu"))
    q = _seq(trained, 0)[:3]
    j0 = trained.joint_names[0]
    cases = [
        ([GoalTerm.parse("joints.knee=0.1")], "goal on joint 'knee'"),
        ([GoalTerm("joints", ["nan"], [j0])], "is not finite"),
        ([GoalTerm.parse("end_effector=1,2,3")], "no such modality"),
        ([GoalTerm("joints", ["1e3"], [j0])], "far outside the trained region"),
        ([GoalTerm("joints", ["0.1", "0.2"], [j0])], "2 values for 1 components"),
        ([GoalTerm("joints", ["0.0"], [j0], from_step=9)], "outside the plan"),
        ([], "the goal is empty"),
    ]
    for goal, msg in cases:
        with pytest.raises(GoalError, match=msg):
            planner.plan(q, goal)
    with pytest.raises(GoalError, match=r"history has shape \(3, 2\)"):
        planner.plan(q[:, :2], [GoalTerm.parse(f"joints.{j0}=0.0")])
    with pytest.raises(ConfigError, match="plan.candidates = 0"):
        Planner(trained, PlanConfig(candidates=0))


def test_cli_writes_plan_files(trained, tmp_path):
    from pvrnn_ros.cli import main
    from pvrnn_ros.core.checkpoint import save_checkpoint

    save_checkpoint(trained, tmp_path / "model.pt")
    q = _seq(trained, 0)[40]
    goal = "joints=" + ",".join(f"{v:.4f}" for v in q) + "~0.5"
    rc = main(["plan", "--model", str(tmp_path / "model.pt"), "--goal", goal, "--horizon", "8", "--iterations", "30",
               "--candidates", "2", "--out", str(tmp_path / "p")])
    assert rc in (0, 1)
    z = np.load(tmp_path / "p" / "plan.npz")
    assert z["positions"].shape == (8, len(trained.joint_names)) and list(z["joint_names"]) == trained.joint_names
    assert z["candidates_positions"].shape[0] == 2 and z["losses"].shape == (30, 2)
    assert list(z["free_energy_parts"]) == ["evidence", "goal", "total"]
    assert rc == (0 if bool(z["reached"].all()) else 1)
    assert (tmp_path / "p" / "plan_joints.png").stat().st_size > 0
    assert (tmp_path / "p" / "plan.csv").read_text().startswith("time," + ",".join(trained.joint_names))
    assert main(["plan", "--model", str(tmp_path / "model.pt"), "--goal", "task=wave", "--out", str(tmp_path / "q")]) == 2
