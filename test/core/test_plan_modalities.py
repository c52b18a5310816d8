"""Planning to goals in the modalities beside the joints, on a model trained on the bundled
demonstrations with `end_effector` and `task`: a task goal ("do a wave") moves the arm into that
primitive's postures, and mixed goals agree between the fast backend and the reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pvrnn_ros.core.config import Config, LayerConfig, PlanConfig
from pvrnn_ros.core.data import example_data_dir, load_demonstrations
from pvrnn_ros.core.plan import GoalTerm, Planner
from pvrnn_ros.core.train import Trainer, build_model


@pytest.fixture(scope="module")
def trained_ee_task():
    torch.set_num_threads(1)
    cfg = Config.from_dict({"data": {"modalities": [{"name": "end_effector"},
                                                    {"name": "task", "source": "segments", "weight": 0.05}]}})
    cfg.model.layers = [LayerConfig(d=32, z=3, tau=2.0, w=0.005), LayerConfig(d=16, z=2, tau=8.0, w=0.005)]
    cfg.train.cpu_threads = 1
    cfg.validate()
    trained = build_model(cfg, load_demonstrations(example_data_dir(), modalities=cfg.data.modalities))
    trainer = Trainer(trained)
    for _ in range(800):
        trainer.epoch()
    return trained


def _history(trained, i=0, n=15):
    J = trained.layout.n_joints
    return trained.normalizer.denormalize(trained.data[i, :n, :J].numpy())


def _labelled_frames(trained):
    """Every training frame (normalised joints) with the primitive active there."""
    lay = trained.layout
    J, col, classes = lay.n_joints, lay.slice("task").start, lay.get("task").components
    frames, labels = [], []
    for i in range(trained.data.shape[0]):
        n = trained.sequence_lengths[i]
        frames.append(trained.data[i, :n, :J].numpy())
        labels += [classes[int(c)] for c in trained.data[i, :n, col].numpy()]
    return np.concatenate(frames), labels


def test_task_goal_moves_into_that_primitive(trained_ee_task):
    tr = trained_ee_task
    classes = tr.layout.get("task").components
    assert set(classes) == {"circle", "reach_left", "reach_right", "rest", "wave"}
    frames, labels = _labelled_frames(tr)
    planner = Planner(tr, PlanConfig(horizon=25, iterations=150, candidates=4, backend="cpu"))
    hits = {}
    for cls in classes:
        plan = planner.plan(_history(tr), [GoalTerm.parse(f"task={cls}~0.5")])
        probs = plan.modalities["task"]
        assert probs.shape == (25, len(classes)) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
        assert plan.reached == [True], (cls, probs[-1])
        assert int(np.argmax(probs[-1])) == classes.index(cls)
        # the joints, not only the task unit: which primitive do the final postures belong to?
        final = tr.normalizer.normalize(plan.positions[-3:])
        nearest = [labels[int(np.argmin(((frames - f) ** 2).sum(1)))] for f in final]
        hits[cls] = nearest.count(cls) >= 2
    print("task goal -> final postures in that primitive:", hits)
    # every primitive starts and ends at the same via posture, so rest (and the ends of others)
    # are ambiguous by posture alone; the distinctive ones must be unmistakable
    assert sum(hits.values()) >= 3, hits


@pytest.mark.parametrize("H", [1, 7])
def test_mixed_goal_cpu_equals_reference(trained_ee_task, H):
    tr = trained_ee_task
    j = tr.joint_names[3]
    goal = [GoalTerm.parse("task=wave"), GoalTerm.parse("end_effector=0.53,-0.1,0.93~0.05"),
            GoalTerm.parse(f"joints.{j}=1.4")]
    cfg = dict(horizon=H, iterations=10, candidates=3, init_spread=0.3)
    hist = _history(tr, 2, 12)
    got = Planner(tr, PlanConfig(backend="cpu", **cfg)).plan(hist, goal)
    ref = Planner(tr, PlanConfig(backend="reference", **cfg)).plan(hist, goal)
    np.testing.assert_allclose(got.losses, ref.losses, rtol=2e-4)
    np.testing.assert_allclose(got.candidates["positions"], ref.candidates["positions"], atol=2e-4)
    np.testing.assert_allclose(got.candidates["goal"], ref.candidates["goal"], rtol=2e-3, atol=1e-6)
    for name in ("end_effector", "task"):
        np.testing.assert_allclose(got.modalities[name], ref.modalities[name], atol=2e-4)
    assert got.chosen == ref.chosen and len(got.goal_errors) == 3
