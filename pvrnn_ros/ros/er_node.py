"""er_node: online error regression (ER) of a trained PV-RNN on a live JointState stream.

Subscribes
  <input_topic> (sensor_msgs/JointState, default `joint_states`): joints matched by name, any
      order; extra joints ignored; missing or non-finite joints are masked (NaN) for ER.
  <feedback_topic> (JointState) in imitate/generate mode: the commanded robot's measured joints,
      used to start the safety stage from where the robot is.
Publishes
  pvrnn/prediction    trajectory_msgs/JointTrajectory: P points, time_from_start = h / rate,
                      header.stamp = stamp of the observation it answers
  pvrnn/free_energy   std_msgs/Float64MultiArray [free energy, reconstruction error, KL per layer...]
  pvrnn/tick_latency  std_msgs/Float64, ms per ER tick
  pvrnn/deadline_misses std_msgs/UInt64, ticks skipped because the previous one was still running
  <command_topic>     (imitate/generate) std_msgs/Float64MultiArray in `joints` order, or a
                      one-point JointTrajectory when command_type = trajectory
Modes
  observe   predict only
  imitate   command another arm (default learner/forward_position_controller/commands) along the
            predicted trajectory of the observed arm, sampled at (time since the observation +
            `lead`): the prediction compensates the ER and transport latency
  generate  closed loop: command the observed robot itself with its own prediction one step
            ahead; ER re-infers the latent state when the robot is perturbed

ER runs on a worker thread every 1/rate s; executor callbacks never block on it. A tick that is
due while the previous one still runs is counted as a deadline miss and skipped.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from .common import Throttle, param, run_node
from .conversions import (Resampler, float64_multiarray, joint_state_to_array, make_trajectory,
                          sec_to_stamp, stamp_to_sec)
from .safety import SafetyFilter, limits_with_margin

NODE_NAME = "er_node"
MODES = ("observe", "imitate", "generate")
FEEDBACK_WARN_S = 3.0  # s without feedback while commanding before a WARN names the JointState topics


class _Prediction:
    def __init__(self, node_time: float, stamp: float, obs: np.ndarray, pred: np.ndarray):
        self.node_time = node_time  # node clock time of the tick (s)
        self.stamp = stamp  # observation time in the input stream's time base (s)
        self.obs = obs  # [D] observation the tick answered
        self.pred = pred  # [P, D] raw units


class ERNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        from std_msgs.msg import Float64, Float64MultiArray, UInt64
        from sensor_msgs.msg import JointState
        from trajectory_msgs.msg import JointTrajectory

        model_path = param(self, "model_path", "", "checkpoint (model.pt or its directory) from `pvrnn-ros train`")
        self.mode = str(param(self, "mode", "observe", "observe | imitate | generate"))
        input_topic = param(self, "input_topic", "joint_states", "JointState stream to regress on")
        rate = float(param(self, "rate", 0.0, "ER tick rate in Hz; 0 = the model's rate"))
        er_window = int(param(self, "window", -1, "ER window W; -1 = checkpoint config"))
        er_iter = int(param(self, "iterations", -1, "ER iterations K per tick; -1 = checkpoint config"))
        er_first = int(param(self, "first_iterations", -1, "K of the first tick; -1 = checkpoint config"))
        er_lr = float(param(self, "lr", -1.0, "ER learning rate; -1 = checkpoint config"))
        er_horizon = int(param(self, "horizon", -1, "prediction horizon P; -1 = checkpoint config"))
        er_backend = str(param(self, "backend", "", "ER backend (auto, reference, cpu, triton); '' = checkpoint config"))
        threads = int(param(self, "threads", 1, "torch threads for ER"))
        command_topic = str(param(self, "command_topic", "", "command topic; '' = mode default"))
        self.command_type = str(param(self, "command_type", "multiarray", "multiarray | trajectory"))
        feedback_topic = str(param(self, "feedback_topic", "", "commanded robot's joint_states; '' = mode default"))
        joints = [j for j in param(self, "joints", [""], "command joint order; [''] = model joints (mapped)") if j]
        joint_map = [m for m in param(self, "joint_map", [""], "model_joint:command_joint pairs") if m]
        self.command_rate = float(param(self, "command_rate", 50.0, "command publish rate (Hz)"))
        lead = float(param(self, "lead", -1.0, "s ahead of now to command; -1 = 0 (imitate) or 1/rate (generate)"))
        self.max_step = float(param(self, "max_step", 0.05, "max change per command per joint (rad)"))
        limit_margin = float(param(self, "limit_margin", 0.1, "margin on the model's joint range, fraction of span"))
        lower = list(param(self, "lower", [0.0], "command joint lower limits; [0.0] = model range + margin"))
        upper = list(param(self, "upper", [0.0], "command joint upper limits; [0.0] = model range + margin"))
        self.stale_timeout = float(param(self, "stale_timeout", 0.5, "s without input before holding"))
        self.jump_back = float(param(self, "time_jump_reset", 1.0, "stamp jump back (s) treated as a stream restart"))
        self.throttle = Throttle(self.get_logger())
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.command_type not in ("multiarray", "trajectory"):
            raise ValueError(f"command_type must be multiarray or trajectory, got {self.command_type!r}")
        if not model_path:
            raise ValueError("parameter model_path is required (a checkpoint from `pvrnn-ros train`)")

        import torch

        from pvrnn_ros.core.checkpoint import load_checkpoint
        from pvrnn_ros.core.er import ErrorRegression

        self.torch_threads = threads
        if threads > 0:
            torch.set_num_threads(threads)
        self.trained = load_checkpoint(model_path)
        self.names = list(self.trained.joint_names)
        er_cfg = self._er_config(er_window, er_iter, er_first, er_lr, er_horizon, er_backend)
        self.er = ErrorRegression(self.trained, er_cfg)
        self.er_cfg = er_cfg
        self.rate = rate if rate > 0 else float(self.trained.rate_hz)
        self.dt = 1.0 / self.rate
        self._warm_up()

        # joint mapping model -> command space
        mapping = {}
        for m in joint_map:
            a, sep, b = m.partition(":")
            if not sep or not a or not b:
                raise ValueError(f"joint_map entry {m!r} is not 'model_joint:command_joint'")
            mapping[a.strip()] = b.strip()
        mapped = [mapping.get(n, n) for n in self.names]
        self.cmd_names = joints or mapped
        col = {c: i for i, c in enumerate(mapped)}
        self.cmd_cols = [col.get(c) for c in self.cmd_names]  # model column per command joint (None: hold)
        if all(c is None for c in self.cmd_cols) and self.mode != "observe":
            raise ValueError(f"no command joint {self.cmd_names} matches a model joint {mapped}")
        n = len(self.cmd_names)
        if len(lower) == n and len(upper) == n:
            lo, hi = np.asarray(lower, float), np.asarray(upper, float)
        else:
            nlo, nhi = limits_with_margin(self.trained.normalizer.lo, self.trained.normalizer.hi, limit_margin)
            lo = np.array([nlo[c] if c is not None else -np.inf for c in self.cmd_cols])
            hi = np.array([nhi[c] if c is not None else np.inf for c in self.cmd_cols])
        self.safety = SafetyFilter(lo, hi, self.max_step)
        self.lead = lead if lead >= 0 else (0.0 if self.mode != "generate" else self.dt)

        # stream state (executor thread)
        self.resampler = Resampler(len(self.names), keep=64)
        self.last_rx = None  # node time of the latest accepted sample
        self.last_stamp = None
        self.stream_reset = False
        self.feedback: np.ndarray | None = None
        # worker state
        self.lock = threading.Lock()
        self.prediction: _Prediction | None = None
        self.latencies: list[float] = []
        self.cpu_ms: list[float] = []
        self.deadline_misses = 0
        self.ticks = 0
        self._job = None
        self._job_ready = threading.Condition()
        self._busy = False
        self._stop = False
        self.worker_torch_threads = 0  # as the worker sees it (set when it starts)
        self._worker = threading.Thread(target=self._work, name="er_worker", daemon=True)

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pred_pub = self.create_publisher(JointTrajectory, "pvrnn/prediction", reliable)
        self.fe_pub = self.create_publisher(Float64MultiArray, "pvrnn/free_energy", reliable)
        self.lat_pub = self.create_publisher(Float64, "pvrnn/tick_latency", reliable)
        self.miss_pub = self.create_publisher(UInt64, "pvrnn/deadline_misses", reliable)
        self._Float64, self._UInt64 = Float64, UInt64
        self.create_subscription(JointState, input_topic, self._on_joint_state, 50)
        self.cmd_pub = None
        if self.mode != "observe":
            if not command_topic:
                command_topic = ("learner/forward_position_controller/commands" if self.mode == "imitate"
                                 else "forward_position_controller/commands")
                if self.command_type == "trajectory":
                    command_topic = command_topic.replace("/commands", "/joint_trajectory")
            if not feedback_topic:
                feedback_topic = "learner/joint_states" if self.mode == "imitate" else input_topic
            cmd_type = JointTrajectory if self.command_type == "trajectory" else Float64MultiArray
            self.cmd_pub = self.create_publisher(cmd_type, command_topic, 10)
            self.create_subscription(JointState, feedback_topic, self._on_feedback, 10)
            self.feedback_topic = feedback_topic
            self._feedback_wait_since: float | None = None
            self.create_timer(1.0 / self.command_rate, self._command)
        self.create_timer(self.dt, self._tick)
        self._worker.start()
        self.get_logger().info(
            f"model {model_path}: joints {self.names}, rate {self.rate:g} Hz, W={er_cfg.window} K={er_cfg.iterations} "
            f"lr={er_cfg.lr:g} P={er_cfg.horizon}; mode {self.mode}; input {input_topic}"
            + (f"; commands -> {command_topic} ({self.command_type}), feedback {feedback_topic}" if self.cmd_pub else ""))

    def _er_config(self, window, iterations, first, lr, horizon, backend):
        import dataclasses

        cfg = dataclasses.replace(self.trained.config.er)
        if window >= 1:
            cfg.window = window
        if iterations >= 0:
            cfg.iterations = iterations
        if first >= 0:
            cfg.first_iterations = first
        if lr > 0:
            cfg.lr = lr
        if horizon >= 1:
            cfg.horizon = horizon
        if backend:
            cfg.backend = backend
        cfg.validate("er", n_layers=len(self.trained.config.model.layers))
        return cfg

    def _warm_up(self) -> None:
        """Throw-away ticks over a whole (growing, then sliding) window, so live ticks do not pay for
        lazy initialisation or JIT compilation of the backend."""
        mid = 0.5 * (self.trained.normalizer.lo + self.trained.normalizer.hi)
        for _ in range(self.er_cfg.window + 2):
            self.er.step(mid)
        self.er.reset()

    # ------------------------------------------------------------------ input
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg) -> None:
        try:
            sample = joint_state_to_array(msg, self.names)
        except Exception as exc:  # noqa: BLE001 - malformed message of any kind
            self.throttle.warn("bad", f"input JointState unusable: {exc}; skipped")
            return
        if sample.values is None:
            self.throttle.warn("shape", f"input JointState: {'; '.join(sample.problems)}; skipped")
            return
        for p in sample.problems:
            self.throttle.warn(p.split(" ")[0], f"input JointState: {p}; masked")
        if not np.isfinite(sample.values).any():
            self.throttle.warn("empty", "input JointState has no usable model joint; skipped")
            return
        now = self._now()
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp == 0.0:
            stamp = now
        gap = self.last_rx is not None and now - self.last_rx > self.stale_timeout
        jumped = self.last_stamp is not None and stamp < self.last_stamp - self.jump_back
        if gap or jumped:
            why = "time stamps jumped back" if jumped else f"input resumed after {now - self.last_rx:.2f} s"
            self.get_logger().warning(f"{why}: restarting the ER window")
            self.resampler.clear()
            self.stream_reset = True
        problem = self.resampler.add(stamp, sample.values)
        if problem:
            self.throttle.warn("order", f"input JointState: {problem}; skipped")
            return
        self.last_rx = now
        self.last_stamp = stamp

    def _on_feedback(self, msg) -> None:
        try:
            s = joint_state_to_array(msg, self.cmd_names)
        except Exception:  # noqa: BLE001
            return
        if s.values is not None and np.isfinite(s.values).all():
            self.feedback = s.values

    # ------------------------------------------------------------------ ER ticks
    def _tick(self) -> None:
        if self.last_rx is None:
            self.throttle.info("wait", "waiting for input joint states")
            return
        now = self._now()
        since = now - self.last_rx
        if since > self.stale_timeout:
            self.throttle.warn("stale", f"no input for {since:.2f} s (stale_timeout {self.stale_timeout:g} s): "
                               "ER paused, commands hold")
            return
        t_query = self.last_stamp + since  # the input stream's time base
        obs = self.resampler.at(t_query)
        if obs is None:
            return
        job = (now, t_query, obs, self.stream_reset)
        with self._job_ready:
            if self._busy or self._job is not None:
                self.deadline_misses += 1
                self.miss_pub.publish(self._UInt64(data=self.deadline_misses))
                self.throttle.warn("miss", f"ER tick overran the {1e3 * self.dt:.0f} ms period: "
                                   f"{self.deadline_misses} deadline misses so far (tick skipped)")
                return
            self.stream_reset = False
            self._job = job
            self._job_ready.notify()

    def _work(self) -> None:
        import torch

        if self.torch_threads > 0:
            # torch's OpenMP thread count is per calling thread: a new thread starts at the core
            # count, and 2-thread tiny ops under load made ticks ~5x slower in CPU time
            torch.set_num_threads(self.torch_threads)
        self.worker_torch_threads = torch.get_num_threads()
        while True:
            with self._job_ready:
                while self._job is None and not self._stop:
                    self._job_ready.wait(0.5)
                if self._stop:
                    return
                job, self._job = self._job, None
                self._busy = True
            try:
                self._run_tick(*job)
            except Exception as exc:  # noqa: BLE001 - keep the node alive, report
                self.throttle.warn("tick", f"ER tick failed: {type(exc).__name__}: {exc}")
            finally:
                with self._job_ready:
                    self._busy = False

    def _run_tick(self, now: float, stamp: float, obs: np.ndarray, reset: bool) -> None:
        if reset:
            self.er.reset()
        t0, c0 = time.perf_counter(), time.thread_time()
        tick = self.er.step(obs)
        ms = 1e3 * (time.perf_counter() - t0)
        self.ticks += 1
        self.latencies.append(ms)
        self.cpu_ms.append(1e3 * (time.thread_time() - c0))  # CPU time of this thread: wall >> cpu = contention
        if len(self.latencies) > 100000:
            del self.latencies[:50000], self.cpu_ms[:50000]
        if self._stop:
            return
        self.lat_pub.publish(self._Float64(data=ms))
        fe = [tick.free_energy, tick.reconstruction_error] + list(tick.kl_per_layer)
        self.fe_pub.publish(float64_multiarray(fe))
        if tick.prediction is None:
            return
        pred = np.asarray(tick.prediction)
        self.pred_pub.publish(make_trajectory(self.names, pred, self.dt, sec_to_stamp(stamp)))
        with self.lock:
            self.prediction = _Prediction(now, stamp, np.where(np.isfinite(obs), obs, pred[0]), pred)
        if self.ticks % max(1, int(10 * self.rate)) == 0:
            lat = np.asarray(self.latencies[-int(10 * self.rate):])
            self.get_logger().info(
                f"ER: {self.ticks} ticks, latency median {np.median(lat):.1f} ms p99 {np.percentile(lat, 99):.1f} ms, "
                f"{self.deadline_misses} deadline misses, F={tick.free_energy:.4g} rec={tick.reconstruction_error:.4g}")

    # ------------------------------------------------------------------ commands
    def _command(self) -> None:
        if not self.safety.ready:
            if self.feedback is None:
                self.throttle.info("fb", "waiting for the commanded robot's joint states before commanding")
                self._warn_missing_feedback()
                return
            self.safety.seed(self.feedback)
        now = self._now()
        with self.lock:
            pred = self.prediction
        stale = self.last_rx is None or now - self.last_rx > self.stale_timeout
        if pred is None or stale or now - pred.node_time > self.stale_timeout:
            cmd = self.safety.hold()
        else:
            s = now - pred.node_time + self.lead
            rows = np.concatenate([pred.obs[None], pred.pred])  # [1+P, D] at 0, dt, 2dt, ...
            k = min(max(s / self.dt, 0.0), rows.shape[0] - 1.0)
            i = int(math.floor(k))
            j = min(i + 1, rows.shape[0] - 1)
            target_model = rows[i] + (k - i) * (rows[j] - rows[i])
            target = np.array([target_model[c] if c is not None else np.nan for c in self.cmd_cols])
            cmd = self.safety.filter(target)
        self._publish_command(cmd)

    def _warn_missing_feedback(self) -> None:
        """A wrong feedback_topic never commands: say so after FEEDBACK_WARN_S, naming the topics that
        do carry JointState (the usual fix is one of them)."""
        now = time.monotonic()
        if self._feedback_wait_since is None:
            self._feedback_wait_since = now
        waited = now - self._feedback_wait_since
        if waited < FEEDBACK_WARN_S:
            return
        carrying = sorted(name for name, types in self.get_topic_names_and_types()
                          if "sensor_msgs/msg/JointState" in types)
        self.throttle.warn("fb_missing", f"no JointState on feedback_topic {self.feedback_topic!r} for {waited:.0f} s: "
                           f"not commanding. Topics carrying JointState now: {carrying or 'none'}; "
                           "set feedback_topic to the commanded robot's joint_states")

    def _publish_command(self, cmd: np.ndarray) -> None:
        if self.command_type == "trajectory":
            self.cmd_pub.publish(make_trajectory(self.cmd_names, cmd[None], 1.0 / self.command_rate))
        else:
            self.cmd_pub.publish(float64_multiarray(cmd))

    # ------------------------------------------------------------------ shutdown
    def latency_summary(self) -> dict:
        lat = np.asarray(self.latencies)
        if lat.size == 0:
            return {"ticks": 0, "deadline_misses": self.deadline_misses}
        cpu = np.asarray(self.cpu_ms[: lat.size])
        return {"ticks": int(lat.size), "median_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
                "max_ms": float(lat.max()), "deadline_misses": self.deadline_misses, "period_ms": 1e3 * self.dt,
                "cpu_median_ms": float(np.median(cpu)), "cpu_p99_ms": float(np.percentile(cpu, 99)),
                "worker_torch_threads": self.worker_torch_threads}

    def close(self) -> None:
        with self._job_ready:
            self._stop = True
            self._job_ready.notify_all()
        self._worker.join(timeout=5.0)
        s = self.latency_summary()
        if s["ticks"]:
            self.get_logger().info(
                f"ER summary: {s['ticks']} ticks, latency median {s['median_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                f"max {s['max_ms']:.1f} ms, {s['deadline_misses']} deadline misses at {s['period_ms']:.0f} ms period; "
                f"worker CPU time median {s['cpu_median_ms']:.1f} ms, p99 {s['cpu_p99_ms']:.1f} ms "
                f"(worker torch threads {s['worker_torch_threads']})")


def main(args=None) -> int:
    return run_node(ERNode, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
