"""Unit tests of the node helpers (no DDS): name matching, resampling, safety stage, trajectories."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pvrnn_ros.ros.conversions import (Resampler, TrajectoryFollower, joint_state_to_array, make_trajectory,
                                       trajectory_points)
from pvrnn_ros.ros.safety import SafetyFilter

pytest.importorskip("sensor_msgs")


def _js(names, pos):
    from sensor_msgs.msg import JointState

    return JointState(name=names, position=pos)


def test_joint_state_by_name_any_order_extra_and_missing():
    s = joint_state_to_array(_js(["c", "x", "a"], [3.0, 9.0, 1.0]), ["a", "b", "c"])
    assert np.allclose(s.values[[0, 2]], [1.0, 3.0]) and math.isnan(s.values[1])
    assert s.missing == ["b"] and s.unknown == ["x"]
    assert any("missing" in p for p in s.problems)


def test_joint_state_length_mismatch_and_nan():
    assert joint_state_to_array(_js(["a", "b"], [1.0]), ["a", "b"]).values is None
    assert joint_state_to_array(_js(["a", "a"], [1.0, 2.0]), ["a"]).values is None
    s = joint_state_to_array(_js(["a", "b"], [math.nan, math.inf]), ["a", "b"])
    assert np.all(np.isnan(s.values)) and "non-finite" in s.problems[0]


def test_resampler_interpolates_and_rejects_out_of_order():
    r = Resampler(2)
    assert r.add(0.0, np.array([0.0, 0.0])) is None
    assert r.add(1.0, np.array([1.0, np.nan])) is None
    assert r.add(2.0, np.array([2.0, 2.0])) is None
    assert "out of order" in r.add(1.5, np.array([0.0, 0.0]))
    assert np.allclose(r.at(0.5), [0.5, 0.5])
    assert np.allclose(r.at(1.0), [1.0, 1.0])  # NaN joint interpolated from its neighbours
    assert np.allclose(r.at(2.3), [2.0, 2.0])  # hold beyond the newest sample
    assert r.at(10.0, hold=1.0) is None


def test_safety_filter_limits_step_and_hold():
    f = SafetyFilter(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), max_step=0.1)
    with pytest.raises(RuntimeError):
        f.filter([0.0, 0.0])
    f.seed([0.0, 0.95])
    assert np.allclose(f.filter([0.5, 5.0]), [0.1, 1.0])  # rate-limited; clipped to the limit
    assert np.allclose(f.filter([np.nan, 0.0]), [0.1, 0.9])  # NaN holds that joint
    assert np.allclose(f.hold(), [0.1, 0.9])
    with pytest.raises(ValueError):
        f.filter([0.0])


def test_trajectory_roundtrip_and_follower():
    msg = make_trajectory(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]), 0.5)
    t, pos, problems = trajectory_points(msg, ["b", "a", "c"])
    assert not problems and np.allclose(t, [0.5, 1.0])
    assert np.allclose(pos[:, :2], [[2.0, 1.0], [4.0, 3.0]]) and np.all(np.isnan(pos[:, 2]))
    f = TrajectoryFollower(10.0, np.array([0.0, 0.0, 7.0]), t, pos)
    assert np.allclose(f.sample(10.25), [1.0, 0.5, 7.0])  # from the start posture; joint c holds
    assert np.allclose(f.sample(11.0), [4.0, 3.0, 7.0]) and f.end_time == 11.0
