"""Demonstrator (pure numpy): limits, continuity, FSM statistics, determinism, validation."""
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pvrnn_ros.sim.primitives import (
    DEFAULT_JOINT_LIMITS,
    DEFAULT_JOINT_NAMES,
    PRIMITIVES,
    Demonstrator,
    DemonstratorConfig,
    default_limits,
    home_position,
    kinematic_episode,
)

REPO = Path(__file__).resolve().parents[2]
# chi-square 99.9 % quantiles by degrees of freedom
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}


def test_limits_and_home_match_mjcf():
    mujoco = pytest.importorskip("mujoco")
    m = mujoco.MjModel.from_xml_path(str(REPO / "sim" / "arm7.xml"))
    assert [m.joint(i).name for i in range(m.njnt)] == list(DEFAULT_JOINT_NAMES)
    for i, name in enumerate(DEFAULT_JOINT_NAMES):
        assert bool(m.jnt_limited[i]), name
        assert tuple(m.jnt_range[i]) == DEFAULT_JOINT_LIMITS[name], name
        a = m.actuator(name)
        assert a.trnid[0] == i and tuple(a.ctrlrange) == DEFAULT_JOINT_LIMITS[name]
    np.testing.assert_allclose(m.key("home").qpos, home_position(), atol=1e-12)


def test_primitives_module_does_not_import_mujoco():
    code = ("import sys, pvrnn_ros.sim.primitives as p; p.kinematic_episode(1.0, 50, 0); "
            "assert 'mujoco' not in sys.modules and 'torch' not in sys.modules and 'rclpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_kinematic_episode_shapes_and_limits():
    times, q, segs = kinematic_episode(30.0, 50, seed=3)
    assert times.shape == (1500,) and q.shape == (1500, 7)
    np.testing.assert_allclose(np.diff(times), 0.02)
    assert times[0] == 0.0 and segs[0] == (0.0, "rest")
    lo, hi = default_limits()
    assert np.all(q >= lo) and np.all(q <= hi)
    assert all(s < 30.0 for s, _ in segs) and len(segs) >= 10
    # every joint actually moves
    assert np.all(q.max(0) - q.min(0) > 0.1)


def test_all_targets_inside_limits_long_run_custom_limits():
    lo = np.array([-0.5, 0.0, -1.0, 0.2, -3.0, -0.1, -2.0])
    hi = np.array([0.5, 0.3, 1.0, 2.0, 3.0, 0.1, 2.0])
    demo = Demonstrator(list(DEFAULT_JOINT_NAMES), lo, hi, seed=11)
    q = np.stack([demo.sample(t) for t in np.arange(0, 300, 0.05)])
    assert np.all(q >= lo) and np.all(q <= hi)
    # comfortably inside: primitives use at most ~85 % of the half range
    half = 0.5 * (hi - lo)
    assert np.all(np.abs(q - 0.5 * (lo + hi)) <= 0.9 * half + 1e-12)


def test_joins_are_continuous_in_position_and_velocity():
    demo = Demonstrator(seed=5)
    dt = 1e-3
    demo.sample(200.0)
    segs = demo.segments
    assert len(segs) > 50
    max_vel = 0.0
    for start, _ in segs[1:]:
        before, at, after = demo.sample(start - dt), demo.sample(start), demo.sample(start + dt)
        # position continuous: the step across the join is tiny
        assert np.max(np.abs(at - before)) < 1e-5 and np.max(np.abs(after - at)) < 1e-5
        # velocity continuous (both one-sided derivatives ~ 0 at the via posture)
        v_minus, v_plus = (at - before) / dt, (after - at) / dt
        assert np.max(np.abs(v_plus - v_minus)) < 1e-2
        max_vel = max(max_vel, np.max(np.abs(v_plus)))
    assert max_vel < 1e-2
    # globally smooth at 50 Hz: no step larger than a fast joint speed allows (~3 rad/s)
    q = np.stack([demo.sample(t) for t in np.arange(0, 200, 0.02)])
    assert np.max(np.abs(np.diff(q, axis=0))) < 3.0 * 0.02


def test_primitives_start_and_end_at_home():
    demo = Demonstrator(seed=0)
    for name, fn in PRIMITIVES.items():
        for a in (0.9, 1.1):
            assert np.allclose(fn(0.0, a), 0.0) and np.allclose(fn(1.0, a), 0.0), name
            assert np.max(np.abs(fn(0.5, a))) > 0.01, name  # it does move
    np.testing.assert_allclose(demo.sample(0.0), demo.home)


def _transition_counts(segs):
    counts: dict[str, Counter] = {}
    for (_, a), (_, b) in zip(segs[:-1], segs[1:]):
        counts.setdefault(a, Counter())[b] += 1
    return counts


def _chi2(counter: Counter, probs: dict) -> tuple[float, int]:
    n = sum(counter.values())
    stat = sum((counter.get(k, 0) - n * p) ** 2 / (n * p) for k, p in probs.items())
    return stat, len(probs) - 1


def test_default_fsm_transition_frequencies_match_config():
    cfg = DemonstratorConfig()
    demo = Demonstrator(config=cfg, seed=123)
    segs = demo.generate_segments(3000)
    counts = _transition_counts(segs)
    assert sum(sum(c.values()) for c in counts.values()) >= 2999
    for src, row in cfg.transitions.items():
        c = counts[src]
        assert set(c) <= set(row), f"{src} -> {set(c) - set(row)} never configured"
        if len(row) == 1:
            assert set(c) == set(row)  # deterministic transition
            continue
        stat, df = _chi2(c, row)
        assert stat < CHI2_999[df], (src, dict(c), row, stat)
    # genuinely probabilistic: the default has both branching and deterministic rows
    assert any(len(r) > 1 for r in cfg.transitions.values())
    assert any(len(r) == 1 for r in cfg.transitions.values())


def test_custom_matrix_fsm_frequencies_and_durations():
    names = ["rest", "circle", "wave"]
    cfg = DemonstratorConfig.from_matrix(names, [[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8]],
                                         jitter=0.1)
    demo = Demonstrator(config=cfg, seed=7)
    segs = demo.generate_segments(2500)
    counts = _transition_counts(segs)
    for src, row in cfg.transitions.items():
        if len(row) > 1:
            stat, df = _chi2(counts[src], row)
            assert stat < CHI2_999[df], (src, counts[src], row)
    assert set(counts["circle"]) == {"rest"}
    # durations jitter within +-10 % of nominal
    starts = np.array([s for s, _ in segs])
    durs = np.diff(starts)
    nominal = np.array([cfg.durations[n] for _, n in segs[:-1]])
    ratio = durs / nominal
    assert ratio.min() >= 0.9 - 1e-9 and ratio.max() <= 1.1 + 1e-9
    assert ratio.max() - ratio.min() > 0.15  # jitter actually happens


def test_same_seed_identical_different_seed_differs():
    a = kinematic_episode(20.0, 50, seed=42)
    b = kinematic_episode(20.0, 50, seed=42)
    c = kinematic_episode(20.0, 50, seed=43)
    assert np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


def test_sampling_is_rate_independent_and_reset_replays():
    demo = Demonstrator(seed=9)
    coarse = [demo.sample(t) for t in np.arange(0, 20, 0.1)]
    demo.reset()
    fine = [demo.sample(t) for t in np.arange(0, 20, 0.01)]
    np.testing.assert_allclose(np.stack(coarse), np.stack(fine)[::10], rtol=0, atol=1e-12)
    demo.reset(seed=10)
    assert not np.array_equal(np.stack(coarse), np.stack([demo.sample(t) for t in np.arange(0, 20, 0.1)]))


def test_current_primitive_and_segments_track_time():
    demo = Demonstrator(seed=1)
    demo.sample(0.5)
    assert demo.current_primitive == "rest" and demo.segments == [(0.0, "rest")]
    demo.sample(30.0)
    segs = demo.segments
    assert segs[-1][0] <= 30.0 and demo.current_primitive == segs[-1][1]
    # consecutive primitives follow allowed transitions
    for (_, a), (_, b) in zip(segs[:-1], segs[1:]):
        assert b in demo.config.transitions[a]


def test_prefixed_joint_names_get_the_right_roles():
    t, q, _ = kinematic_episode(10.0, 20, seed=0)
    names = ["teacher_" + n for n in reversed(DEFAULT_JOINT_NAMES)]
    t2, q2, _ = kinematic_episode(10.0, 20, seed=0, joint_names=names)
    np.testing.assert_array_equal(q2, q[:, ::-1])
    with pytest.raises(ValueError, match="unknown joint 'gripper'"):
        kinematic_episode(1.0, 20, 0, joint_names=["gripper"])


@pytest.mark.parametrize("kwargs, match", [
    ({"transitions": {"rest": {"rest": 0.5, "wave": 0.4}, "wave": {"rest": 1.0}}}, "sums to 0.9"),
    ({"transitions": {"rest": {"jump": 1.0}}}, "unknown primitive 'jump'"),
    ({"transitions": {"fly": {"rest": 1.0}, "rest": {"rest": 1.0}}}, "unknown primitive 'fly'"),
    ({"transitions": {"rest": {"wave": 1.0}}}, "'wave' is reachable .* no row"),
    ({"transitions": {"rest": {"rest": 1.5, "wave": -0.5}, "wave": {"rest": 1.0}}}, "probability"),
    ({"start": "circle", "transitions": {"rest": {"rest": 1.0}}}, "start primitive 'circle'"),
    ({"jitter": 1.5}, "jitter"),
    ({"durations": {"rest": 0.0}}, "durations"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Demonstrator(config=DemonstratorConfig(**kwargs))


def test_bad_limits_rejected():
    with pytest.raises(ValueError, match="7 entries"):
        Demonstrator(list(DEFAULT_JOINT_NAMES), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="upper > lower"):
        Demonstrator(list(DEFAULT_JOINT_NAMES), np.ones(7), np.zeros(7))
    with pytest.raises(ValueError, match="t must be"):
        Demonstrator().sample(-1.0)
