"""Online goal-directed planning: a joint goal approached over ticks in a kinematic closed loop (the
robot goes where the plan's first step says), the warm start shifted with the window, a goal changed
mid-motion, giving up on a goal the robot cannot reach, bad goals."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pvrnn_ros.core.config import PlanConfig
from pvrnn_ros.core.online_plan import GoalError, GoalTerm, OnlinePlanner, shift_warm_start

TOL = 0.06


def _seq(trained, i):
    J = trained.layout.n_joints
    n = trained.sequence_lengths[i]
    return trained.normalizer.denormalize(trained.data[i, :n, :J].numpy())


def _planner(trained, **kw):
    cfg = PlanConfig(horizon=kw.pop("horizon", 15), iterations=kw.pop("iterations", 30), candidates=1, backend="cpu")
    return OnlinePlanner(trained, cfg, past=kw.pop("past", 8), first_iterations=kw.pop("first_iterations", 150), **kw)


def _goal(trained, q, joints, tol=TOL):
    return [GoalTerm("joints", [float(q[j]) for j in joints], [trained.joint_names[j] for j in joints],
                     from_step=0, tolerance=tol)]


def _run(online, x, ticks, until=None):
    """Kinematic closed loop: the next observation is the plan's first step. Returns (positions, ticks)."""
    xs, out = [x], []
    for _ in range(ticks):
        tick = online.step(xs[-1])
        out.append(tick)
        if tick.plan is None or (until is not None and until(tick)):
            break
        xs.append(tick.plan.positions[0])
    return np.asarray(xs), out


def test_joint_goal_is_approached_and_reached(trained):
    # a posture the demonstration reached 1 s later (not every far posture is reachable by a model this
    # small in a few ticks; this one is, and 0.8 rad away)
    seq = _seq(trained, 1)
    joints = [0, 3]
    k, m = 40, 50
    online = _planner(trained, settle_s=0.3)
    for q in seq[k - 7:k]:  # the robot's recent past
        online.step(q)  # no goal yet: observed, no plan
    assert online.status == "idle"
    online.set_goal(_goal(trained, seq[m], joints))
    xs, ticks = _run(online, seq[k], 60, until=lambda t: t.status == "reached")
    errors = [t.errors[0] for t in ticks]
    print(f"joint goal: error {errors[0]:.3f} -> {errors[-1]:.3f} rad in {len(ticks)} ticks, status {ticks[-1].status}")
    assert errors[0] > 3 * TOL
    assert ticks[-1].status == "reached", f"not reached in 60 ticks: errors {np.round(errors, 3)}"
    assert "goal reached after" in ticks[-1].event and ticks[-1].errors[0] <= TOL
    assert [t.warm for t in ticks[:3]] == [False, True, True]  # cold first plan, then warm-started
    assert [t.iterations for t in ticks[:2]] == [150, 30] and ticks[0].past == 8  # the idle steps were observed
    assert ticks[-1].plan.positions.shape == (15, trained.layout.n_joints)
    # the other joints are free: the goal moved the constrained ones
    assert np.abs(xs[-1, joints] - seq[m, joints]).max() <= TOL


def test_shift_warm_start_moves_rows_and_copies_the_last():
    a = torch.arange(6.0)[:, None].repeat(1, 2)  # rows 0..5
    grow = shift_warm_start((a, -a), 0, 7)[0][:, 0].tolist()
    assert grow == [0, 1, 2, 3, 4, 5, 5]
    slide = shift_warm_start((a, -a), 1, 6)
    assert slide[0][:, 0].tolist() == [1, 2, 3, 4, 5, 5] and slide[1][:, 0].tolist() == [-1, -2, -3, -4, -5, -5]
    assert shift_warm_start((a, a), 9, 3)[0][:, 0].tolist() == [5, 5, 5]


def test_each_tick_starts_from_the_previous_plan_shifted(trained):
    seq = _seq(trained, 1)
    online = _planner(trained, past=4, horizon=6, iterations=5, first_iterations=5)
    online.set_goal(_goal(trained, seq[30], [1], tol=0.5))
    seen = []
    plan = online.planner.plan

    def spy(history, goal, history_modalities=None, warm_start=None):
        seen.append((len(history), None if warm_start is None else [t.clone() for t in warm_start]))
        result = plan(history, goal, warm_start=warm_start)
        seen[-1] += ([t[result.chosen].clone() for t in online.planner.last_a],)
        return result

    online.planner.plan = spy
    for q in seq[10:17]:
        online.step(q)
    assert seen[0][1] is None  # the first plan starts cold
    for (n0, _, a0), (n1, warm, _) in zip(seen, seen[1:]):
        W1 = n1 + 6
        assert warm[0].shape == (W1, a0[0].shape[1])
        offset = 0 if n1 > n0 else 1  # growing, then sliding by one observed step
        assert n1 == min(n0 + 1, 4)
        for prev, new in zip(a0, warm):
            np.testing.assert_array_equal(new[:-1].numpy(), prev[offset:offset + W1 - 1].numpy())
            np.testing.assert_array_equal(new[-1].numpy(), prev[-1].numpy())  # new step: a copy of the last


def test_goal_changed_mid_motion_is_followed_without_a_stop(trained):
    seq = _seq(trained, 0)
    joints = [0, 3]
    online = _planner(trained, settle_s=0.3)
    for q in seq[53:60]:
        online.step(q)
    online.set_goal(_goal(trained, seq[75], joints))
    xs, ticks = _run(online, seq[60], 3)
    assert ticks[-1].status == "pursuing"
    goal2 = seq[45]  # 0.18 rad from the first goal
    assert np.abs(goal2[joints] - xs[-1][joints]).max() > 2 * TOL
    online.set_goal(_goal(trained, goal2, joints))
    xs2, ticks2 = _run(online, xs[-1], 60, until=lambda t: t.status == "reached")
    assert ticks2[0].warm, "the warm start must survive a goal change"
    steps = np.abs(np.diff(np.concatenate([xs[-3:], xs2[1:4]]), axis=0)).max(1)
    print("goal change: step sizes around the switch", np.round(steps, 3),
          f"error to the new goal {ticks2[0].errors[0]:.3f} -> {ticks2[-1].errors[0]:.3f} in {len(ticks2)} ticks")
    assert steps.min() > 1e-3, "the arm stopped at the goal change"
    assert ticks2[-1].status == "reached" and ticks2[-1].errors[0] <= TOL


def test_gives_up_when_the_robot_does_not_move(trained):
    """A blocked arm: the observations never change, so the error never shrinks."""
    seq = _seq(trained, 0)
    online = _planner(trained, give_up_s=1.0, iterations=5, first_iterations=10)
    online.set_goal(_goal(trained, seq[30], [0, 3]), now=0.0)
    ticks = [online.step(seq[20], now=0.1 * (i + 1)) for i in range(15)]
    given = [i for i, t in enumerate(ticks) if t.status == "given_up"]
    assert given, "never gave up"
    first = ticks[given[0]]
    assert "gave up after" in first.event and "no progress for" in first.event and first.plan is None
    assert 0.1 * (given[0] + 1) >= 1.0  # not before the give-up time
    assert all(t.plan is None and t.event == "" for t in ticks[given[0] + 1:])  # stays given up, quietly
    online.set_goal(_goal(trained, seq[20], [0, 3]))  # a new goal: pursued again
    assert online.step(seq[20]).status in ("pursuing", "reached")


def test_bad_goal_keeps_the_previous_goal(trained):
    online = _planner(trained, iterations=2, first_iterations=2)
    good = _goal(trained, _seq(trained, 0)[5], [0])
    online.set_goal(good)
    j0 = trained.joint_names[0]
    for bad, msg in (([GoalTerm("joints", [0.1], ["knee"])], "goal on joint 'knee'"),
                     ([GoalTerm("joints", [math.nan], [j0])], f"goal joints.{j0} = nan is not a finite number"),
                     ([GoalTerm("end_effector", [0.1, 0.2, 0.3])], "no such modality"),
                     ([GoalTerm("joints", [50.0], [j0])], "far outside the trained region"),
                     ([GoalTerm("joints", [0.0], [j0], tolerance=0.0)], "tolerance 0.0 is invalid")):
        with pytest.raises(GoalError, match=msg):
            online.set_goal(bad)
        assert online.goal == good and online.status == "pursuing"
    with pytest.raises(ValueError, match="observation has 3 values, expected 7 joints"):
        online.step([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="past=0 is invalid"):
        OnlinePlanner(trained, past=0)


@pytest.fixture(scope="module")
def trained_with_modalities(tmp_path_factory):
    from pvrnn_ros.core.data import load_demonstrations
    from pvrnn_ros.core.train import Trainer, build_model

    from .test_modalities import _config, _write_csvs

    cfg = _config()
    trained = build_model(cfg, load_demonstrations(_write_csvs(tmp_path_factory.mktemp("mods")),
                                                   modalities=cfg.data.modalities))
    trainer = Trainer(trained)
    for _ in range(1500):
        trainer.epoch()
    return trained


def test_end_effector_and_task_goals_are_measured_on_the_plan(trained_with_modalities):
    """Modalities the joint stream does not carry: the current error is the plan's first step."""
    from .test_modalities import CLASSES, _episode

    tr = trained_with_modalities
    _, joints, ee, _ = _episode(0)
    online = _planner(tr, past=5, horizon=10, iterations=20, first_iterations=100)
    online.set_goal([GoalTerm("end_effector", list(ee[30]), from_step=0, tolerance=0.05)])
    xs, ticks = _run(online, joints[5], 25)
    errors = [t.errors[0] for t in ticks]
    first = ticks[0].plan.modalities["end_effector"][0]
    assert errors[0] == pytest.approx(float(np.linalg.norm(first - ee[30])))
    planned = [t.planned_errors[0] for t in ticks]
    print(f"end-effector goal: error (plan's first step) {errors[0]:.3f} -> {errors[-1]:.3f} m, at the plan's "
          f"end {planned[0]:.3f} -> {planned[-1]:.3f} m over {len(ticks)} ticks")
    # this toy model does not reach the point; the warm-started replanning still gets closer tick by tick
    assert planned[-1] < 0.8 * planned[0] and errors[-1] < errors[0]
    online.set_goal([GoalTerm("task", [CLASSES[2]], tolerance=0.3)])
    tick = online.step(xs[-1])
    probs = tick.plan.modalities["task"][0]  # in the model's class order
    classes = tr.layout.get("task").components
    assert sorted(classes) == sorted(CLASSES)
    assert tick.errors[0] == pytest.approx(1.0 - probs[classes.index(CLASSES[2])])
    with pytest.raises(GoalError, match="expected one of the classes " + ", ".join(classes)):
        online.set_goal([GoalTerm("task", ["jump"])])
    assert online.goal[0].modality == "task"


def test_goal_steps_count_from_the_goals_arrival(trained):
    """`from_step=5` means five steps after the goal was given, the same moment at every tick, not a
    deadline that slides with the window; a new goal restarts the count."""
    online = _planner(trained, iterations=2, first_iterations=2)
    seen = []
    plan = online.planner.plan

    def spy(history, goal, **kw):
        seen.append(goal[0].from_step)
        return plan(history, goal, **kw)

    online.planner.plan = spy
    q = _seq(trained, 0)
    name = trained.joint_names[0]
    online.step(q[0])  # observed before any goal: no plan
    online.set_goal([GoalTerm("joints", [float(q[20, 0])], [name], from_step=5)])
    for t in range(1, 9):
        online.step(q[t])
    online.set_goal([GoalTerm("joints", [float(q[20, 0])], [name], from_step=3)])
    for t in range(9, 12):
        online.step(q[t])
    assert seen == [5, 4, 3, 2, 1, 0, 0, 0, 3, 2, 1]
    assert online.goal[0].from_step == 3  # the goal as given is kept
