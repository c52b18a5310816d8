"""Gymnasium env ``pvrnn_ros/ArmImitation-v0``: a learner arm imitates a demonstrating teacher arm.

Scene: ``teacher_learner`` (two 7-DoF arms, 1 m apart). The teacher is driven by the scripted
demonstrator; the agent commands the learner's joint position targets.

* observation (float64, 21): learner joint positions (7), learner joint velocities (7),
  teacher joint positions (7), all measured. Position bounds are the joint limits widened by
  `obs_margin` (soft limits can be exceeded slightly); velocity bounds are +-max_joint_velocity.
* action (float64, 7): learner joint position targets, bounded by the joint limits.
* reward: ``-reward_scale * ||q_learner - q_teacher||^2`` after the step.
* terminated is always False; truncated after `max_episode_steps` steps.
"""
from __future__ import annotations

import numpy as np
import gymnasium as gym
from gymnasium import spaces

from .arm_sim import ArmSim
from .primitives import Demonstrator, DemonstratorConfig
from .scenes import scene_path

__all__ = ["ArmImitationEnv"]


class ArmImitationEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, render_mode: str | None = None, control_dt: float = 0.02,
                 frame_skip: int | None = None, max_episode_steps: int = 500,
                 demonstrator_config: DemonstratorConfig | None = None, width: int = 480,
                 height: int = 360, camera: str | None = "front", reward_scale: float = 1.0,
                 init_noise: float = 0.0, mjcf=None, teacher_prefix: str = "teacher_",
                 learner_prefix: str = "learner_", obs_margin: float = 0.2,
                 max_joint_velocity: float = 50.0):
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps}")
        if not (width >= 1 and height >= 1):
            raise ValueError(f"render size must be positive, got {width}x{height}")
        if not (np.isfinite(reward_scale) and reward_scale > 0):
            raise ValueError(f"reward_scale must be > 0, got {reward_scale}")
        if not (np.isfinite(init_noise) and init_noise >= 0):
            raise ValueError(f"init_noise must be >= 0, got {init_noise}")
        mjcf = scene_path("teacher_learner") if mjcf is None else mjcf
        if frame_skip is not None:
            if int(frame_skip) != frame_skip or frame_skip < 1:
                raise ValueError(f"frame_skip must be a positive integer, got {frame_skip}")
            from .arm_sim import load_model

            control_dt = int(frame_skip) * float(load_model(mjcf)[0].opt.timestep)
        self.sim = ArmSim(mjcf, control_dt=control_dt)
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        self.width, self.height, self.camera = int(width), int(height), camera
        self.reward_scale = float(reward_scale)
        self.init_noise = float(init_noise)
        self.teacher_joints = self.sim.robot_joints(teacher_prefix)
        self.learner_joints = self.sim.robot_joints(learner_prefix)
        t_base = [ArmSim.strip_prefix(n, teacher_prefix) for n in self.teacher_joints]
        l_base = [ArmSim.strip_prefix(n, learner_prefix) for n in self.learner_joints]
        if t_base != l_base:
            raise ValueError(f"teacher and learner joints differ: {t_base} vs {l_base}")
        self.joint_names = t_base
        t_lo, t_hi = self.sim.joint_limits(self.teacher_joints)
        l_lo, l_hi = self.sim.joint_limits(self.learner_joints)
        if not (np.all(np.isfinite([t_lo, t_hi, l_lo, l_hi]))):
            raise ValueError("ArmImitationEnv needs limited joints on both arms")
        self.demo = Demonstrator(self.teacher_joints, t_lo, t_hi, demonstrator_config, seed=0)
        self._home_t = self.demo.home.copy()
        self._home_l = Demonstrator(self.learner_joints, l_lo, l_hi, demonstrator_config, seed=0).home
        self.metadata = dict(self.metadata, render_fps=int(round(1.0 / self.sim.control_dt)))

        n = len(self.joint_names)
        m = float(obs_margin)
        vmax = np.full(n, float(max_joint_velocity))  # far above what the torque limits allow
        self.observation_space = spaces.Box(
            low=np.concatenate([l_lo - m, -vmax, t_lo - m]),
            high=np.concatenate([l_hi + m, vmax, t_hi + m]), dtype=np.float64)
        self.action_space = spaces.Box(low=l_lo.copy(), high=l_hi.copy(), dtype=np.float64)
        self._steps = 0

    @property
    def control_dt(self) -> float:
        return self.sim.control_dt

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.sim.positions(self.learner_joints),
                               self.sim.velocities(self.learner_joints),
                               self.sim.positions(self.teacher_joints)])

    def _error(self) -> float:
        d = self.sim.positions(self.learner_joints) - self.sim.positions(self.teacher_joints)
        return float(d @ d)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.demo.reset(int(self.np_random.integers(2**31 - 1)))
        q_t = self.demo.sample(0.0)
        q_l = self._home_l.copy()
        if self.init_noise > 0:
            q_l = q_l + self.np_random.uniform(-self.init_noise, self.init_noise, q_l.shape)
        pos = dict(zip(self.teacher_joints, q_t))
        pos.update(zip(self.learner_joints, q_l))
        self.sim.reset(positions=pos)
        self._steps = 0
        return self._obs(), {"primitive": self.demo.current_primitive, "time": self.sim.time}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("action contains NaN or inf")
        self.sim.set_targets(self.demo.sample(self.sim.time), self.teacher_joints)
        self.sim.set_targets(a, self.learner_joints)
        self.sim.step()
        self._steps += 1
        err = self._error()
        reward = -self.reward_scale * err
        truncated = self._steps >= self.max_episode_steps
        info = {"primitive": self.demo.current_primitive, "tracking_error": err, "time": self.sim.time}
        return self._obs(), reward, False, truncated, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; create the env with render_mode='rgb_array'")
            return None
        return self.sim.render(self.width, self.height, self.camera)

    def close(self):
        self.sim.close()
