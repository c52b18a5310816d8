"""Reach metrics and the nearest-demonstration choice (pure numpy), with their bad inputs."""
from __future__ import annotations

import numpy as np
import pytest

from pvrnn_ros.core.reach import nearest_demonstration, reach_outcome, summarize_outcomes


def test_outcome_final_error_and_time_to_reach():
    t = np.arange(6) * 0.1
    goal = np.array([0.5, 0.0, 0.7])
    path = goal + np.array([[0.2, 0, 0], [0.1, 0, 0], [0.02, 0, 0], [0.05, 0, 0], [0.0, 0.01, 0], [0.0, 0.0, 0.02]])
    o = reach_outcome(t, path, goal, tolerance=0.03)
    assert o.final_error == pytest.approx(0.02) and o.success
    assert o.time_to_reach == pytest.approx(0.2)  # first within 3 cm, even though it left again
    assert o.min_error == pytest.approx(0.01)
    far = reach_outcome(t, path + [0.1, 0, 0], goal, tolerance=0.03)
    assert not far.success and far.time_to_reach is None
    s = summarize_outcomes([o, far])
    assert s["success_rate"] == 0.5 and s["median_time_to_reach"] == pytest.approx(0.2)
    assert s["max_error"] == pytest.approx(far.final_error)


def test_nearest_demonstration():
    pts = np.array([[0.4, 0.0, 0.7], [0.5, 0.1, 0.6], [0.55, -0.2, 0.8]])
    i, d = nearest_demonstration(pts, [0.52, 0.08, 0.61])
    assert i == 1 and d == pytest.approx(np.linalg.norm([0.02, -0.02, 0.01]))


def test_bad_inputs_name_the_value():
    t = np.arange(3) * 0.1
    with pytest.raises(ValueError, match=r"goal \[0\.5, nan, 0\.7\] is invalid: expected 3 finite"):
        reach_outcome(t, np.zeros((3, 3)), [0.5, np.nan, 0.7])
    with pytest.raises(ValueError, match=r"end_effector has shape \(2, 3\), expected \[3, 3\]"):
        reach_outcome(t, np.zeros((2, 3)), [0.5, 0, 0.7])
    with pytest.raises(ValueError, match="tolerance = -0.1 is invalid"):
        reach_outcome(t, np.zeros((3, 3)), [0.5, 0, 0.7], tolerance=-0.1)
    with pytest.raises(ValueError, match=r"goal \[1\.0, 2\.0\] is invalid"):
        nearest_demonstration(np.zeros((2, 3)), [1.0, 2.0])
    with pytest.raises(ValueError, match="no outcomes"):
        summarize_outcomes([])
