"""Gymnasium env pvrnn_ros/ArmImitation-v0."""
import numpy as np
import pytest

import pvrnn_ros.sim  # noqa: F401  (first: picks a headless MUJOCO_GL before mujoco loads)

pytest.importorskip("mujoco")
gym = pytest.importorskip("gymnasium")

import pvrnn_ros.sim  # noqa: E402,F401  (registers the env)
from pvrnn_ros.sim.env import ArmImitationEnv  # noqa: E402
from pvrnn_ros.sim.primitives import DemonstratorConfig, default_limits  # noqa: E402


def test_registered_and_check_env_passes():
    from gymnasium.utils.env_checker import check_env

    assert "pvrnn_ros/ArmImitation-v0" in gym.registry
    env = gym.make("pvrnn_ros/ArmImitation-v0", max_episode_steps=30)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


def test_spaces_and_observation_layout():
    env = ArmImitationEnv(max_episode_steps=10)
    assert env.observation_space.shape == (21,) and env.observation_space.dtype == np.float64
    assert env.action_space.shape == (7,) and env.action_space.dtype == np.float64
    lo, hi = default_limits()
    np.testing.assert_array_equal(env.action_space.low, lo)
    np.testing.assert_array_equal(env.action_space.high, hi)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float64 and env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[:7], env.sim.positions(env.learner_joints))
    np.testing.assert_allclose(obs[7:14], 0.0)
    np.testing.assert_allclose(obs[14:], env.sim.positions(env.teacher_joints))
    assert info["primitive"] == "rest"


def test_reward_is_negative_tracking_error_and_truncation():
    env = ArmImitationEnv(max_episode_steps=40, reward_scale=2.0)
    obs, _ = env.reset(seed=1)
    hold = obs[:7].copy()
    for k in range(40):
        obs, r, term, trunc, info = env.step(hold)  # learner holds still, teacher moves
        d = obs[:7] - obs[14:]
        assert r == pytest.approx(-2.0 * float(d @ d))
        assert r <= 0 and term is False
        assert trunc == (k == 39)
    assert info["tracking_error"] > 0
    assert info["time"] == pytest.approx(40 * 0.02)


def test_following_the_teacher_beats_holding_still():
    def episode(policy):
        env = ArmImitationEnv(max_episode_steps=300)
        obs, _ = env.reset(seed=4)
        total, trunc = 0.0, False
        while not trunc:
            obs, r, _, trunc, _ = env.step(policy(obs))
            total += r
        return total

    start = {}

    def hold(obs):
        start.setdefault("q", obs[:7].copy())
        return start["q"]

    follow = episode(lambda obs: obs[14:])
    still = episode(hold)
    assert follow > 0.1 * still and follow > -5.0


def test_seeded_reset_is_deterministic():
    env = ArmImitationEnv(max_episode_steps=50)
    act = np.zeros(7) + env.action_space.low + 0.5 * (env.action_space.high - env.action_space.low)

    def roll(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(50):
            out.append(env.step(act)[0])
        return np.stack(out)

    a, b, c = roll(5), roll(5), roll(6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[:, 14:], c[:, 14:])  # a different demonstration


def test_constructor_tunables_and_bad_input():
    cfg = DemonstratorConfig(transitions={"rest": {"wave": 1.0}, "wave": {"rest": 1.0}}, start="wave")
    env = ArmImitationEnv(frame_skip=5, demonstrator_config=cfg, max_episode_steps=3)
    assert env.control_dt == pytest.approx(0.01) and env.metadata["render_fps"] == 100
    _, info = env.reset(seed=0)
    assert info["primitive"] == "wave"
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(7, np.nan))
    with pytest.raises(ValueError, match="render_mode"):
        ArmImitationEnv(render_mode="human")
    with pytest.raises(ValueError, match="max_episode_steps"):
        ArmImitationEnv(max_episode_steps=0)
    with pytest.raises(ValueError, match="control_dt"):
        ArmImitationEnv(control_dt=0.003)
    with pytest.raises(ValueError, match="unknown primitive"):
        ArmImitationEnv(demonstrator_config=DemonstratorConfig(start="jump"))


def test_render_rgb_array_or_clear_error():
    env = ArmImitationEnv(render_mode="rgb_array", width=96, height=64, max_episode_steps=5)
    env.reset(seed=0)
    try:
        frame = env.render()
    except RuntimeError as exc:
        assert "no working OpenGL backend" in str(exc)
    else:
        assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8 and frame.std() > 1
    env.close()
