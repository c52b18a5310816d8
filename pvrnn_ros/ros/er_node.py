"""er_node: online error regression (ER) of a trained PV-RNN on a live JointState stream.

A managed (lifecycle) node:
  configure   loads and checks the model (model_path, joints, topics, limits) and warms the backend's
              kernels; any error is logged with its reason and the node stays unconfigured (alive)
  activate    subscribes, ticks and publishes (the safety stage seeds from the measured position)
  deactivate  stops commanding at once (a ros2_control forward controller holds the last command)
  cleanup     releases the model, so a new model_path can be configured in the same process
  shutdown    from any state; the process then exits
`autostart` (default true) configures and activates at start-up, so `pvrnn-ros node er_node` runs
like an unmanaged node. Run `python -m pvrnn_ros.ros.er_node --help` for the parameters.

Subscribes (sensor-data QoS: best effort, so best-effort and reliable publishers are both heard)
  <input_topic> (sensor_msgs/JointState, default `joint_states`): joints matched by name, any
      order; extra joints ignored; missing or non-finite joints are masked (NaN) for ER.
  <feedback_topic> (JointState) in imitate/generate/plan mode: the commanded robot's measured joints,
      used to start the safety stage from where the robot is.
  pvrnn/goal/joints (sensor_msgs/JointState: names + positions, some or all joints),
  pvrnn/goal/end_effector (geometry_msgs/PointStamped), pvrnn/goal/task (std_msgs/String, a class of
      the `task` modality): the plan mode goal, one topic per message type (reliable). A bad goal is
      rejected on pvrnn/goal_status naming the value; the previous goal stays.
Publishes (reliable, volatile, depth 10; lifecycle publishers: nothing while inactive)
  pvrnn/prediction    trajectory_msgs/JointTrajectory: P points, time_from_start = h / rate,
                      header.stamp = stamp of the observation it answers
  pvrnn/free_energy   std_msgs/Float64MultiArray [free energy, reconstruction error, KL per layer...]
  pvrnn/tick_latency  std_msgs/Float64, ms per ER tick
  pvrnn/deadline_misses std_msgs/UInt64, ticks skipped because the previous one was still running
  pvrnn/recognition   (models with a categorical modality, e.g. `task`) sensor_msgs/JointState, one
                      per categorical modality per tick: name = its class names, position = their
                      probabilities (inferred: the modality is never observed here; read
                      `er.recognition_lag` steps, default 1, before the newest, where ER has seen
                      what followed),
                      header.stamp = stamp of the observation it answers, header.frame_id =
                      "recognition/<modality>". Why JointState: the standard type for labelled
                      classes, vision_msgs/Classification, is not available as a wheel or in rosbags'
                      type store; JointState is the stock message that carries a stamp, names and a
                      float per name, and every plotting tool (Foxglove, PlotJuggler) plots it by name.
  pvrnn/prediction/<modality> (continuous modalities, e.g. `end_effector`) geometry_msgs/PoseArray
                      of the next P predicted points (x, y, z; identity orientation) for 3-component
                      ones, else std_msgs/Float64MultiArray [P, k]; stamped like pvrnn/prediction
  pvrnn/plan          (plan) trajectory_msgs/JointTrajectory of the H planned points, time_from_start
                      = h / rate, header.stamp = stamp of the observation it starts from
  pvrnn/goal_error    (plan) std_msgs/Float64, the current goal error each tick (observed joints for a
                      joint goal; the plan's first step for other modalities)
  pvrnn/goal_status   std_msgs/String "<status>: <details>" on every change (reliable, transient
                      local depth 10): pursuing, reached, given_up, rejected (see core.online_plan)
  <command_topic>     (imitate/generate/plan; reliable, depth 10) std_msgs/Float64MultiArray in `joints`
                      order, or a one-point JointTrajectory when command_type = trajectory
  /diagnostics        diagnostic_msgs/DiagnosticArray at 1 Hz: "er_node: error regression" (tick
                      latency, deadline misses, free energy, backend, model), "er_node: input"
                      (input rate, age of the newest observation) and "er_node: goal" (plan mode:
                      goal, status, current and planned goal error)
Services
  ~/reset (std_srvs/Trigger): restart ER from the next observation
Modes (live parameter `mode`; a switch restarts the safety stage from the measured position)
  observe   predict only
  imitate   command another arm (default learner/forward_position_controller/commands) along the
            predicted trajectory of the observed arm, sampled at (time since the observation +
            `lead`): the prediction compensates the ER and transport latency
  generate  closed loop: command the observed robot itself with its own prediction one step
            ahead; ER re-infers the latent state when the robot is perturbed
  plan      goal-directed: every tick replan on a sliding window of the observed stream (warm-started,
            core.online_plan.OnlinePlanner) towards the goal on pvrnn/goal/*, and command the observed
            robot (as generate mode) along the plan; idle or given up: the command holds

ER runs on a worker thread every 1/rate s; executor callbacks never block on it. A tick that is
due while the previous one still runs is counted as a deadline miss and skipped (also counted by the
worker from the tick's duration, for backends that hold the GIL and so stall the executor). Live parameter
changes are validated when set and applied from the next tick.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from .common import Throttle, request_exit, run_node
from .conversions import (Resampler, float64_multiarray, joint_state_to_array, make_trajectory,
                          sec_to_stamp, stamp_to_sec)
from .diagnostics import ERROR, OK, STALE, WARN, DiagnosticsUpdater, RateMeter, input_health, tick_health
from .lifecycle import autostart, state_label
from .params import Param, ParamTable
from .safety import SafetyFilter, limits_with_margin

NODE_NAME = "er_node"
MODES = ("observe", "imitate", "generate", "plan")
BACKENDS = ("", "auto", "reference", "cpu", "triton")

PARAMS = ParamTable(NODE_NAME, [
    Param("autostart", True, "configure and activate at start-up (false: wait for lifecycle transitions)",
          read_only=True),
    Param("model_path", "", "checkpoint (model.pt or its directory) from `pvrnn-ros train`"),
    Param("mode", "observe", "observe (predict only), imitate (command another arm), generate (closed loop) or "
          "plan (command the observed robot towards the goal on pvrnn/goal/*)", choices=MODES, live=True),
    Param("input_topic", "joint_states", "JointState stream to regress on"),
    Param("rate", 0.0, "ER tick rate in Hz; 0 = the model's rate", low=0.0, high=1000.0),
    Param("window", -1, "ER window W; -1 = checkpoint config", low=1, high=10000, special=(-1,)),
    Param("iterations", -1, "ER iterations K per tick; -1 = checkpoint config", low=0, high=100000,
          special=(-1,), live=True),
    Param("first_iterations", -1, "K of the first tick; -1 = checkpoint config", low=0, high=100000,
          special=(-1,)),
    Param("lr", -1.0, "ER learning rate; -1 = checkpoint config", low=1e-9, high=1e3, special=(-1.0,), live=True),
    Param("horizon", -1, "prediction horizon P; -1 = checkpoint config", low=1, high=10000, special=(-1,)),
    Param("backend", "", "ER backend; '' = checkpoint config", choices=BACKENDS),
    Param("threads", 1, "torch threads for ER; 0 = torch's default", low=0, high=1024),
    Param("command_topic", "", "command topic; '' = mode default (imitate: learner/forward_position_controller/"
          "commands, generate: forward_position_controller/commands; .../joint_trajectory for trajectory)"),
    Param("command_type", "multiarray", "Float64MultiArray commands or one-point JointTrajectory",
          choices=("multiarray", "trajectory")),
    Param("feedback_topic", "", "commanded robot's joint_states; '' = mode default (imitate: learner/joint_states, "
          "generate: input_topic)"),
    Param("joints", [""], "command joint order; [''] = model joints (mapped)"),
    Param("joint_map", [""], "model_joint:command_joint pairs"),
    Param("command_rate", 50.0, "command publish rate (Hz)", low=0.1, high=10000.0),
    Param("lead", -1.0, "s ahead of now to command; -1 = 0 (imitate) or 1/rate (generate)", low=0.0, high=60.0,
          special=(-1.0,), live=True),
    Param("max_step", 0.05, "max change per command per joint (rad); 0 = no rate limit", low=0.0, high=100.0,
          live=True),
    Param("limit_margin", 0.1, "margin on the model's joint range, fraction of span (when lower/upper are not given)",
          low=0.0, high=10.0, live=True),
    Param("lower", [0.0], "command joint lower limits; [0.0] = model range + margin"),
    Param("upper", [0.0], "command joint upper limits; [0.0] = model range + margin"),
    Param("stale_timeout", 0.5, "s without input before ER pauses and commands hold", low=0.001, high=3600.0,
          live=True),
    Param("time_jump_reset", 1.0, "stamp jump back (s) treated as a stream restart", low=0.0, high=1e6),
    # plan mode (goal-directed planning, core.online_plan)
    Param("plan_past", 10, "plan mode: observed steps in the planning window", low=1, high=10000),
    Param("plan_horizon", -1, "plan mode: steps planned ahead; -1 = checkpoint plan.horizon", low=1, high=10000,
          special=(-1,)),
    Param("plan_iterations", 30, "plan mode: Adam iterations per tick (warm-started from the previous plan)",
          low=0, high=100000, live=True),
    Param("plan_first_iterations", -1, "plan mode: Adam iterations of a plan without a warm start (the first); "
          "-1 = checkpoint plan.iterations", low=0, high=100000, special=(-1,)),
    Param("plan_candidates", 1, "plan mode: candidate plans per tick (only the first is warm-started)",
          low=1, high=1024),
    Param("plan_lr", -1.0, "plan mode: Adam learning rate; -1 = checkpoint plan.lr", low=1e-9, high=1e3,
          special=(-1.0,), live=True),
    Param("goal_from_step", 0, "plan mode: the goal is due this many steps after it arrives (counted down as "
          "time passes) and held to the horizon; 0 = at once; -1 = at the last planned step only (e.g. 14 at 10 Hz "
          "with lead:=0.4 for end-effector reaches)", low=0, high=10000, special=(-1,)),
    Param("goal_tolerance", 0.05, "plan mode: reached within this error (rad for joints, m for end_effector)",
          low=1e-9, high=1e6, live=True),
    Param("goal_task_tolerance", 0.2, "plan mode: a task goal is reached when its class probability is at least "
          "1 - this", low=1e-9, high=1.0, live=True),
    Param("goal_settle_time", 0.5, "plan mode: s within tolerance before the goal counts as reached",
          low=0.0, high=3600.0, live=True),
    Param("goal_give_up_time", 10.0, "plan mode: give up after this many s without progress; 0 = never",
          low=0.0, high=1e6, live=True),
    Param("goal_min_progress", 0.05, "plan mode: fraction the goal error must shrink by to count as progress",
          low=0.0, high=0.99, live=True),
    Param("goal_frame", "", "plan mode: frame_id an end-effector goal must carry ('' = not checked; no tf "
          "transform is done)"),
], lifecycle=True)

# the live parameters the worker thread applies to the ER engine / the online planner before its next step
ER_LIVE = ("lr", "iterations")
PLAN_LIVE = ("plan_iterations", "plan_lr", "goal_tolerance", "goal_task_tolerance", "goal_settle_time",
             "goal_give_up_time", "goal_min_progress")
# plan mode goal topics, one per message type (ROS 2 topics carry one type): modality -> topic
GOAL_TOPICS = {"joints": "pvrnn/goal/joints", "end_effector": "pvrnn/goal/end_effector", "task": "pvrnn/goal/task"}
FEEDBACK_WARN_S = 2.0  # s without the commanded robot's joint states before that is a warning


class _Prediction:
    def __init__(self, node_time: float, stamp: float, obs: np.ndarray, pred: np.ndarray):
        self.node_time = node_time  # node clock time of the tick (s)
        self.stamp = stamp  # observation time in the input stream's time base (s)
        self.obs = obs  # [D] observation the tick answered
        self.pred = pred  # [P, D] raw units


class ERNode(LifecycleNode):
    def __init__(self):
        super().__init__(NODE_NAME)
        PARAMS.declare(self)
        self.throttle = Throttle(self.get_logger())
        self.configure_error = ""
        self.er = None  # set while configured
        self._pending: dict[str, object] = {}  # accepted live changes, applied by the next tick
        self._pending_lock = threading.Lock()
        self._er_updates: dict[str, object] = {}  # live ER settings for the worker (executor -> worker)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._queue_parameters)
        from std_srvs.srv import Trigger

        self.create_service(Trigger, "~/reset", self._on_reset)
        self.diagnostics = DiagnosticsUpdater(self)
        self.diagnostics.add("error regression", self._diagnose_er)
        self.diagnostics.add("input", self._diagnose_input)
        self.diagnostics.add("goal", self._diagnose_goal)
        self._active_timers: list = []
        self._active_subs: list = []
        self._created_at = time.monotonic()
        self.startup_s: float | None = None  # node construction to its first published prediction

    def start_up(self) -> None:
        """Called by run_node once the node spins: the `autostart` transitions."""
        if self.get_parameter("autostart").value:
            autostart(self)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - any user error (path, joints, config): stay unconfigured
            self._release()
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            self.configure_error = reason
            self.get_logger().error(f"configure failed: {reason}. {NODE_NAME} stays unconfigured: fix the "
                                    f"parameter (set_parameters) and configure again (pvrnn-ros lifecycle "
                                    f"{self.get_name()} configure)")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        from sensor_msgs.msg import JointState

        # a fresh stream: the gap while inactive must not be bridged by the resampler
        self.resampler.clear()
        self.last_rx = self.last_stamp = None
        self.stream_reset = True
        self.feedback = None
        self.safety.last = None  # seed again from where the robot is now
        self._feedback_wait_since = time.monotonic()
        self.input_meter = RateMeter()  # the input rate of this activation only
        sensor = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._active_subs.append(self.create_subscription(JointState, self.input_topic, self._on_joint_state, sensor))
        self._subscribe_goals()
        self._open_command_endpoints()
        self._active_timers.append(self.create_timer(self.dt, self._tick))
        self._active_timers.append(self.create_timer(1.0 / self.command_rate, self._command))
        result = super().on_activate(state)  # enables the lifecycle publishers
        self.get_logger().info(f"active: mode {self.mode}, input {self.input_topic}"
                               + (f", commands -> {self.command_topic} ({self.command_type}), feedback "
                                  f"{self.feedback_topic}" if self.cmd_pub is not None else ""))
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_activity()
        result = super().on_deactivate(state)
        self.get_logger().info("inactive: commands stopped (the controller holds the last one)")
        return result

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_activity()
        self._release()
        request_exit(self, 0)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._stop_activity()
        self._release()
        return TransitionCallbackReturn.SUCCESS  # back to unconfigured

    # ------------------------------------------------------------------ configure
    def _configure(self) -> None:
        import torch

        from pvrnn_ros.core.checkpoint import load_checkpoint
        from pvrnn_ros.core.er import ErrorRegression
        from std_msgs.msg import Float64, Float64MultiArray, UInt64
        from trajectory_msgs.msg import JointTrajectory

        with self._pending_lock:  # configure reads every parameter itself
            self._pending.clear()
        self._er_updates = {}
        p = {name: self.get_parameter(name).value for name in PARAMS.names()}
        problems = PARAMS.check_all(p)
        if problems:
            raise ValueError("; ".join(problems))
        if not p["model_path"]:
            raise ValueError("parameter model_path is required (a checkpoint from `pvrnn-ros train`)")
        self.model_path = str(p["model_path"])
        self.mode = str(p["mode"])
        self.input_topic = str(p["input_topic"])
        self.command_type = str(p["command_type"])
        self.command_topic_param = str(p["command_topic"])
        self.feedback_topic_param = str(p["feedback_topic"])
        self.command_rate = float(p["command_rate"])
        self.stale_timeout = float(p["stale_timeout"])
        self.jump_back = float(p["time_jump_reset"])
        self.lead_param = float(p["lead"])
        self.limit_margin = float(p["limit_margin"])
        self.torch_threads = int(p["threads"])
        if self.torch_threads > 0:
            torch.set_num_threads(self.torch_threads)
        self.trained = load_checkpoint(self.model_path)
        self.names = list(self.trained.joint_names)
        self.er_cfg = self._er_config(int(p["window"]), int(p["iterations"]), int(p["first_iterations"]),
                                      float(p["lr"]), int(p["horizon"]), str(p["backend"]))
        self.er = ErrorRegression(self.trained, self.er_cfg)
        self.online = self._online_planner(p)
        self.goal_frame = str(p["goal_frame"])
        self.rate = float(p["rate"]) if p["rate"] > 0 else float(self.trained.rate_hz)
        self.dt = 1.0 / self.rate

        # joint mapping model -> command space
        mapping = {}
        for m in (m for m in p["joint_map"] if m):
            a, sep, b = m.partition(":")
            if not sep or not a or not b:
                raise ValueError(f"joint_map entry {m!r} is not 'model_joint:command_joint'")
            mapping[a.strip()] = b.strip()
        mapped = [mapping.get(n, n) for n in self.names]
        self.cmd_names = [j for j in p["joints"] if j] or mapped
        col = {c: i for i, c in enumerate(mapped)}
        self.cmd_cols = [col.get(c) for c in self.cmd_names]  # model column per command joint (None: hold)
        if self.mode != "observe":
            self._check_commandable(self.mode)
        n = len(self.cmd_names)
        lower, upper = list(p["lower"]), list(p["upper"])
        self.explicit_limits = len(lower) == n and len(upper) == n
        if self.explicit_limits:
            self.limits = (np.asarray(lower, float), np.asarray(upper, float))
        self.safety = SafetyFilter(*self._limits(self.limit_margin), float(p["max_step"]))
        self.lead = self._lead(self.lead_param, self.mode)
        self.model_to_cmd = {n: m for n, m in zip(self.names, mapped)}
        self._warm_up()

        # stream state (executor thread)
        self.resampler = Resampler(len(self.names), keep=64)
        self.last_rx = None  # node time of the latest accepted sample
        self.last_stamp = None
        self.stream_reset = False
        self.feedback: np.ndarray | None = None
        self.input_meter = RateMeter()
        # worker state
        self.lock = threading.Lock()
        self.prediction: _Prediction | None = None
        self.latencies: list[float] = []
        self.cpu_ms: list[float] = []
        self.recent = deque(maxlen=max(10, int(10 * self.rate)))  # latencies (ms) of the last ~10 s
        self.deadline_misses = 0
        self.ticks = 0
        self.last_tick = None  # ERTick of the latest tick
        self.last_plan_tick = None  # OnlineTick of the latest plan-mode tick
        self._reported = (0, 0)  # (ticks, misses) at the previous diagnostics report
        self._job = None
        self._job_ready = threading.Condition()
        self._busy = False
        self._stop = False
        self.worker_torch_threads = 0  # as the worker sees it (set when it starts)
        self._worker = threading.Thread(target=self._work, name="er_worker", daemon=True)

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pred_pub = self.create_lifecycle_publisher(JointTrajectory, "pvrnn/prediction", reliable)
        self.fe_pub = self.create_lifecycle_publisher(Float64MultiArray, "pvrnn/free_energy", reliable)
        self.lat_pub = self.create_lifecycle_publisher(Float64, "pvrnn/tick_latency", reliable)
        self.miss_pub = self.create_lifecycle_publisher(UInt64, "pvrnn/deadline_misses", reliable)
        self._Float64, self._UInt64 = Float64, UInt64
        self._modality_publishers(reliable)
        self._plan_publishers(reliable)
        self.cmd_pub = None
        self.command_topic = self.feedback_topic = ""
        self._worker.start()
        self.get_logger().info(
            f"configured: model {self.model_path}: joints {self.names}, rate {self.rate:g} Hz, "
            f"W={self.er_cfg.window} K={self.er_cfg.iterations} lr={self.er_cfg.lr:g} P={self.er_cfg.horizon}, "
            f"backend {self.er.backend.name}; mode {self.mode}; input {self.input_topic}; plan mode: past "
            f"{self.online.past} H={self.online.cfg.horizon} K={self.online.cfg.iterations} per tick "
            f"(first {self.online.first_iterations}), goal topics {', '.join(GOAL_TOPICS.values())}")

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

    def _online_planner(self, p: dict):
        import dataclasses

        from pvrnn_ros.core.online_plan import OnlinePlanner

        cfg = dataclasses.replace(self.trained.config.plan)
        if p["plan_horizon"] >= 1:
            cfg.horizon = int(p["plan_horizon"])
        cfg.iterations = int(p["plan_iterations"])
        cfg.candidates = int(p["plan_candidates"])
        if p["plan_lr"] > 0:
            cfg.lr = float(p["plan_lr"])
        if self.er_cfg.backend != "auto":  # the node's backend choice serves both engines
            cfg.backend = self.er_cfg.backend
        first = int(p["plan_first_iterations"])
        self.goal_from_step = int(p["goal_from_step"])
        if self.goal_from_step >= cfg.horizon:
            raise ValueError(f"goal_from_step={self.goal_from_step} is outside the plan: expected -1 or a step "
                             f"below the plan horizon ({cfg.horizon})")
        return OnlinePlanner(self.trained, cfg, past=int(p["plan_past"]),
                             first_iterations=self.trained.config.plan.iterations if first < 0 else first,
                             settle_s=float(p["goal_settle_time"]), give_up_s=float(p["goal_give_up_time"]),
                             min_progress=float(p["goal_min_progress"]))

    def _check_commandable(self, mode: str) -> None:
        if all(c is None for c in self.cmd_cols):
            raise ValueError(f"mode {mode!r} needs command joints: no command joint {self.cmd_names} matches a "
                             f"model joint (set joints or joint_map)")

    def _limits(self, margin: float) -> tuple[np.ndarray, np.ndarray]:
        if self.explicit_limits:
            return self.limits
        nlo, nhi = limits_with_margin(self.trained.normalizer.lo, self.trained.normalizer.hi, margin)
        lo = np.array([nlo[c] if c is not None else -np.inf for c in self.cmd_cols])
        hi = np.array([nhi[c] if c is not None else np.inf for c in self.cmd_cols])
        return lo, hi

    def _lead(self, lead: float, mode: str) -> float:
        return lead if lead >= 0 else (self.dt if mode in ("generate", "plan") else 0.0)

    def _warm_up(self) -> None:
        """Throw-away ticks over a whole (growing, then sliding) window, so live ticks do not pay for
        lazy initialisation or JIT compilation of the backend."""
        mid = 0.5 * (self.trained.normalizer.lo + self.trained.normalizer.hi)
        for _ in range(self.er_cfg.window + 2):
            self.er.step(mid)
        self.er.reset()
        # the planner's batched kernels too (a short plan, then the stream and goal are forgotten)
        from pvrnn_ros.core.plan import GoalTerm

        saved = self.online.first_iterations
        self.online.first_iterations = min(saved, 3)
        try:
            self.online.set_goal([GoalTerm("joints", [float(mid[0])], [self.names[0]])])
            for _ in range(2):
                self.online.step(mid)
        finally:
            self.online.first_iterations = saved
            self.online.clear_goal()
            self.online.reset()

    def _endpoints(self, mode: str) -> tuple[str, str]:
        """(command topic, feedback topic) of `mode` ('' , '' in observe mode)."""
        if mode == "observe":
            return "", ""
        command = self.command_topic_param
        if not command:  # generate and plan command the observed robot itself
            command = ("learner/forward_position_controller/commands" if mode == "imitate"
                       else "forward_position_controller/commands")
            if self.command_type == "trajectory":
                command = command.replace("/commands", "/joint_trajectory")
        feedback = self.feedback_topic_param or ("learner/joint_states" if mode == "imitate" else self.input_topic)
        return command, feedback

    def _open_command_endpoints(self) -> None:
        """Command publisher + feedback subscription for the current mode (none in observe mode)."""
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        self.command_topic, self.feedback_topic = self._endpoints(self.mode)
        if not self.command_topic:
            return
        cmd_type = JointTrajectory if self.command_type == "trajectory" else Float64MultiArray
        self.cmd_pub = self.create_lifecycle_publisher(cmd_type, self.command_topic, 10)
        if state_label(self) in ("active", "activating") and self._activity_running():
            self.cmd_pub.on_activate(None)  # created while active: enable it now (activate already ran)
        sensor = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._feedback_sub = self.create_subscription(JointState, self.feedback_topic, self._on_feedback, sensor)

    def _close_command_endpoints(self) -> None:
        if self.cmd_pub is not None:
            self.destroy_lifecycle_publisher(self.cmd_pub)
            self.destroy_subscription(self._feedback_sub)
            self.cmd_pub = self._feedback_sub = None

    def _activity_running(self) -> bool:
        return bool(self._active_timers)

    def _stop_activity(self) -> None:
        """Timers and subscriptions off (not managed by rclpy): no more ticks, no more commands."""
        for t in self._active_timers:
            self.destroy_timer(t)
        for s in self._active_subs:
            self.destroy_subscription(s)
        self._active_timers, self._active_subs = [], []
        if self.er is not None:
            self._close_command_endpoints()

    def _release(self) -> None:
        """Everything configure built: worker, publishers, the model."""
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            self._stop_worker()
            self._log_summary()
        for name in ("pred_pub", "fe_pub", "lat_pub", "miss_pub", "recognition_pub", "plan_pub", "goal_error_pub",
                     "goal_status_pub"):
            pub = getattr(self, name, None)
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
                setattr(self, name, None)
        for pub in getattr(self, "modality_pubs", {}).values():
            self.destroy_lifecycle_publisher(pub)
        self.modality_pubs = {}
        if getattr(self, "cmd_pub", None) is not None:
            self._close_command_endpoints()
        self.er = None
        self.online = None
        self.trained = None
        self._worker = None

    # ------------------------------------------------------------------ parameters
    def _validate_parameters(self, params):
        """on-set callback: accept or refuse, no side effects."""
        from rcl_interfaces.msg import SetParametersResult

        configured = state_label(self) != "unconfigured"
        for prm in params:
            reason = PARAMS.check_change(prm.name, prm.value, configured)
            if reason is None and prm.name == "mode" and configured and prm.value != "observe" \
                    and self.er is not None and all(c is None for c in self.cmd_cols):
                reason = f"mode={prm.value!r} needs command joints, but none of {self.cmd_names} is a model joint"
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _queue_parameters(self, params) -> None:
        """post-set callback: hand accepted live changes to the next tick."""
        with self._pending_lock:
            for prm in params:
                if prm.name in PARAMS and PARAMS[prm.name].live:
                    self._pending[prm.name] = prm.value

    def _apply_pending(self) -> None:
        """Executor thread, start of a tick: apply the live changes accepted since the last tick."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        for name, value in pending.items():
            if name in ER_LIVE or name in PLAN_LIVE:
                self._er_updates[name] = value
            elif name == "max_step":
                self.safety.max_step = float(value)
            elif name == "stale_timeout":
                self.stale_timeout = float(value)
            elif name == "limit_margin":
                self.limit_margin = float(value)
                self.safety.lower, self.safety.upper = self._limits(self.limit_margin)
            elif name == "lead":
                self.lead_param = float(value)
        if "mode" in pending and pending["mode"] != self.mode:
            old, self.mode = self.mode, str(pending["mode"])
            if "plan" in (old, self.mode):  # the other engine has not seen the stream meanwhile
                self.stream_reset = True
                with self.lock:
                    self.prediction = None
            if self._endpoints(self.mode) != (self.command_topic, self.feedback_topic):
                self._close_command_endpoints()
                self._open_command_endpoints()
            self.safety.last = None  # the safety stage restarts from the measured position
            self.feedback = None
            self._feedback_wait_since = time.monotonic()
            self.get_logger().info(f"mode {old} -> {self.mode}"
                                   + (f": commands -> {self.command_topic}, feedback {self.feedback_topic}"
                                      if self.cmd_pub is not None else ""))
        self.lead = self._lead(self.lead_param, self.mode)
        self.get_logger().info("parameters applied: " + ", ".join(f"{k}={v!r}" for k, v in pending.items()))

    def _on_reset(self, _req, resp):
        if state_label(self) != "active":
            resp.success, resp.message = False, f"{NODE_NAME} is {state_label(self)}, not active"
            return resp
        self.resampler.clear()
        self.stream_reset = True
        resp.success, resp.message = True, "ER restarts from the next observation"
        self.get_logger().info("reset requested: ER restarts from the next observation")
        return resp

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
        self.input_meter.tick()

    def _on_feedback(self, msg) -> None:
        try:
            s = joint_state_to_array(msg, self.cmd_names)
        except Exception:  # noqa: BLE001
            return
        if s.values is not None and np.isfinite(s.values).all():
            self.feedback = s.values

    # ------------------------------------------------------------------ ER ticks
    def _tick(self) -> None:
        self._apply_pending()
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
        with self._job_ready:
            if self._busy or self._job is not None:
                self.deadline_misses += 1
                self.miss_pub.publish(self._UInt64(data=self.deadline_misses))
                self.throttle.warn("miss", f"ER tick overran the {1e3 * self.dt:.0f} ms period: "
                                   f"{self.deadline_misses} deadline misses so far (tick skipped)")
                return
            updates, self._er_updates = self._er_updates, {}
            self._job = (now, t_query, obs, self.stream_reset, updates)
            self.stream_reset = False
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
                self.throttle.warn("tick", f"{'plan' if self.mode == 'plan' else 'ER'} tick failed: "
                                   f"{type(exc).__name__}: {exc}")
            finally:
                with self._job_ready:
                    self._busy = False

    def _stop_worker(self) -> None:
        with self._job_ready:
            self._stop = True
            self._job_ready.notify_all()
        self._worker.join(timeout=5.0)

    def _run_tick(self, now: float, stamp: float, obs: np.ndarray, reset: bool, updates: dict) -> None:
        er = self.er
        if er is None:
            return
        for name, value in updates.items():  # live lr / iterations: -1 = back to the checkpoint's value
            if name in PLAN_LIVE:
                self._apply_plan_setting(name, value)
                continue
            base = getattr(self.trained.config.er, name)
            setattr(er.cfg, name, type(base)(value) if value != -1 else base)
        if reset:
            er.reset()
            self.online.reset()
        if self.mode == "plan":
            self._run_plan_tick(now, stamp, obs)
            return
        with self._job_ready:
            misses_before = self.deadline_misses
        t0, c0 = time.perf_counter(), time.thread_time()
        tick = er.step(obs)
        ms = 1e3 * (time.perf_counter() - t0)
        self.ticks += 1
        self._count_overrun(ms, misses_before)
        self.latencies.append(ms)
        self.recent.append(ms)
        self.cpu_ms.append(1e3 * (time.thread_time() - c0))  # CPU time of this thread: wall >> cpu = contention
        if len(self.latencies) > 100000:
            del self.latencies[:50000], self.cpu_ms[:50000]
        self.last_tick = tick
        if self._stop:
            return
        self._publish_tick(now, stamp, obs, tick, ms)

    def _count_overrun(self, ms: float, misses_before: int) -> None:
        """A tick that ran over k whole periods skipped k due ticks. The executor counts them as they
        come due, but a backend that holds the GIL (Numba without nogil) can starve it for the whole
        tick: whatever it did not count is counted here, so misses are never under-reported."""
        due = int(ms // (1e3 * self.dt))
        with self._job_ready:
            missing = due - (self.deadline_misses - misses_before)
            if missing <= 0:
                return
            self.deadline_misses += missing
            total = self.deadline_misses
        if not self._stop:
            self.miss_pub.publish(self._UInt64(data=total))
        self.throttle.warn("miss", f"ER tick took {ms:.0f} ms, over the {1e3 * self.dt:.0f} ms period: "
                           f"{total} deadline misses so far")

    def _modality_publishers(self, qos) -> None:
        """Recognition and per-modality predictions, for models with modalities (see docstring)."""
        from geometry_msgs.msg import PoseArray
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray

        self.recognition_pub = None
        self.modality_pubs = {}
        for mod in self.trained.layout.modalities:
            if mod.kind == "categorical":
                if self.recognition_pub is None:
                    self.recognition_pub = self.create_lifecycle_publisher(JointState, "pvrnn/recognition", qos)
                continue
            kind = PoseArray if mod.width == 3 else Float64MultiArray
            self.modality_pubs[mod.name] = self.create_lifecycle_publisher(kind, f"pvrnn/prediction/{mod.name}", qos)
        self._JointState, self._PoseArray = JointState, PoseArray

    def _publish_modalities(self, stamp: float, tick) -> None:
        from geometry_msgs.msg import Pose

        for name, est in tick.modalities.items():
            if est.kind == "categorical":
                msg = self._JointState()
                msg.header.stamp = sec_to_stamp(stamp)
                msg.header.frame_id = f"recognition/{name}"
                msg.name = list(est.components)
                msg.position = [float(p) for p in est.current]
                self.recognition_pub.publish(msg)
                continue
            pub = self.modality_pubs.get(name)
            if pub is None:
                continue
            if est.prediction.shape[1] == 3:
                msg = self._PoseArray()
                msg.header.stamp = sec_to_stamp(stamp)
                for x, y, z in est.prediction:
                    pose = Pose()
                    pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
                    msg.poses.append(pose)
            else:
                msg = float64_multiarray(est.prediction.reshape(-1))
            pub.publish(msg)

    def _publish_tick(self, now: float, stamp: float, obs: np.ndarray, tick, ms: float) -> None:
        """Everything one ER tick publishes (worker thread)."""
        self.lat_pub.publish(self._Float64(data=ms))
        fe = [tick.free_energy, tick.reconstruction_error] + list(tick.kl_per_layer)
        self.fe_pub.publish(float64_multiarray(fe))
        if tick.prediction is None:
            return
        pred = np.asarray(tick.prediction)
        self.pred_pub.publish(make_trajectory(self.names, pred, self.dt, sec_to_stamp(stamp)))
        if self.startup_s is None:
            self.startup_s = time.monotonic() - self._created_at
            self.get_logger().info(f"first prediction {self.startup_s:.2f} s after the node started")
        self._publish_modalities(stamp, tick)
        with self.lock:
            self.prediction = _Prediction(now, stamp, np.where(np.isfinite(obs), obs, pred[0]), pred)
        if self.ticks % max(1, int(10 * self.rate)) == 0:
            lat = np.asarray(self.latencies[-int(10 * self.rate):])
            self.get_logger().info(
                f"ER: {self.ticks} ticks, latency median {np.median(lat):.1f} ms p99 {np.percentile(lat, 99):.1f} ms, "
                f"{self.deadline_misses} deadline misses, F={tick.free_energy:.4g} rec={tick.reconstruction_error:.4g}")

    # ------------------------------------------------------------------ plan mode
    def _plan_publishers(self, qos) -> None:
        from std_msgs.msg import Float64, String
        from rclpy.qos import DurabilityPolicy
        from trajectory_msgs.msg import JointTrajectory

        # depth 10, not 1: statuses come in bursts (three bad goals answered at once), and with one
        # slot a status not yet acknowledged was replaced by the next and never heard; a late
        # subscriber gets the last ten, the latest last
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.plan_pub = self.create_lifecycle_publisher(JointTrajectory, "pvrnn/plan", qos)
        self.goal_error_pub = self.create_lifecycle_publisher(Float64, "pvrnn/goal_error", qos)
        self.goal_status_pub = self.create_lifecycle_publisher(String, "pvrnn/goal_status", latched)
        self._String = String
        self._goal_lock = threading.Lock()
        self._goal_pending = None  # (terms, text) accepted by a goal callback, taken by the next plan tick
        self.goal_text = ""  # the goal being pursued, in words
        self.goal_status = "idle"
        self.goal_message = "idle: no goal"
        self.goal_error = math.nan
        self.planned_error = math.nan
        self.goal_events = 0

    def _subscribe_goals(self) -> None:
        from geometry_msgs.msg import PointStamped
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        for kind, topic, cb in ((JointState, GOAL_TOPICS["joints"], self._on_goal_joints),
                                (PointStamped, GOAL_TOPICS["end_effector"], self._on_goal_point),
                                (String, GOAL_TOPICS["task"], self._on_goal_task)):
            self._active_subs.append(self.create_subscription(kind, topic, cb, qos))

    def _on_goal_joints(self, msg) -> None:
        from pvrnn_ros.core.plan import GoalTerm

        to_model = {c: m for m, c in self.model_to_cmd.items()}  # goals may name joints as the robot does
        names = [to_model.get(n, n) for n in msg.name]
        if not names or len(msg.position) != len(names):
            self._reject_goal(f"joint goal on {GOAL_TOPICS['joints']} has {len(msg.name)} names and "
                              f"{len(msg.position)} positions: expected one position per named joint")
            return
        if len(set(names)) != len(names):
            self._reject_goal(f"joint goal names a joint twice: {list(msg.name)}")
            return
        values = [float(v) for v in msg.position]
        text = "joints " + ", ".join(f"{n}={v:.3g}" for n, v in zip(msg.name, values))
        self._accept_goal([GoalTerm("joints", values, names, self._from_step(), self._tolerance("joints"))], text)

    def _on_goal_point(self, msg) -> None:
        from pvrnn_ros.core.plan import GoalTerm

        p = msg.point
        frame = msg.header.frame_id
        if self.goal_frame and frame != self.goal_frame:
            self._reject_goal(f"end-effector goal in frame {frame!r}: expected frame {self.goal_frame!r} "
                              f"(goal_frame; no tf transform is done)")
            return
        values = [float(p.x), float(p.y), float(p.z)]
        text = "end_effector " + ", ".join(f"{v:.3g}" for v in values) + (f" in {frame}" if frame else "")
        self._accept_goal([GoalTerm("end_effector", values, None, self._from_step(),
                                    self._tolerance("end_effector"))], text)

    def _on_goal_task(self, msg) -> None:
        from pvrnn_ros.core.plan import GoalTerm

        name = msg.data.strip()
        self._accept_goal([GoalTerm("task", [name], None, self._from_step(), self._tolerance("task"))],
                          f"task {name}")

    def _from_step(self):
        return None if self.goal_from_step < 0 else self.goal_from_step

    def _tolerance(self, modality: str) -> float:
        mod = next((m for m in self.trained.layout.modalities if m.name == modality), None)
        if mod is not None and mod.kind == "categorical":
            return float(self.get_parameter("goal_task_tolerance").value)
        return float(self.get_parameter("goal_tolerance").value)

    def _accept_goal(self, terms, text: str) -> None:
        """Executor thread: validate (GoalError names the bad value), then hand to the next plan tick."""
        from pvrnn_ros.core.plan import GoalError

        online = self.online
        if online is None:
            return
        try:
            online.validate_goal(terms)
        except GoalError as exc:
            self._reject_goal(str(exc))
            return
        with self._goal_lock:
            self._goal_pending = (terms, text)
        note = "" if self.mode == "plan" else f" (mode is {self.mode}: pursued once mode is plan)"
        self.get_logger().info(f"new goal: {text}{note}")
        self._set_goal_status("pursuing", f"pursuing: {text}{note}")

    def _reject_goal(self, reason: str) -> None:
        keep = f"keeping the goal {self.goal_text}" if self.goal_text and self.goal_status in ("pursuing", "reached") \
            else "idle"
        self.get_logger().error(f"goal rejected: {reason}; {keep}")
        self._set_goal_status("rejected", f"rejected: {reason}; {keep}", status_after=self.goal_status)

    def _set_goal_status(self, status: str, message: str, status_after: str | None = None) -> None:
        """Publish `message` on pvrnn/goal_status ('<status>: <details>'); the state becomes `status_after`
        (default `status`). Lifecycle publishers drop it while inactive."""
        self.goal_status = status if status_after is None else status_after
        self.goal_message = message
        self.goal_events += 1
        if self.goal_status_pub is not None:
            self.goal_status_pub.publish(self._String(data=message))

    def _apply_plan_setting(self, name: str, value) -> None:
        """Worker thread, before a plan tick: a live plan parameter."""
        online = self.online
        if name == "plan_iterations":
            online.cfg.iterations = int(value)
        elif name == "plan_lr":
            online.cfg.lr = float(value) if value > 0 else float(self.trained.config.plan.lr)
        elif name == "goal_settle_time":
            online.settle_s = float(value)
        elif name == "goal_give_up_time":
            online.give_up_s = float(value)
        elif name == "goal_min_progress":
            online.min_progress = float(value)
        elif name in ("goal_tolerance", "goal_task_tolerance") and online.goal:
            for term in online.goal:
                if (self._tolerance(term.modality) != term.tolerance):
                    term.tolerance = self._tolerance(term.modality)

    def _run_plan_tick(self, now: float, stamp: float, obs: np.ndarray) -> None:
        """Worker thread: one online planning tick (core.online_plan), its messages and its commands."""
        online = self.online
        with self._goal_lock:
            pending, self._goal_pending = self._goal_pending, None
        if pending is not None:
            online.set_goal(pending[0], now)  # validated when received; the warm start is kept
            self.goal_text = pending[1]
        with self._job_ready:
            misses_before = self.deadline_misses
        t0, c0 = time.perf_counter(), time.thread_time()
        tick = online.step(obs, now)
        ms = 1e3 * (time.perf_counter() - t0)
        self.ticks += 1
        self._count_overrun(ms, misses_before)
        self.last_plan_tick = tick
        if tick.plan is None and tick.iterations == 0:  # idle or given up: nothing planned, the command holds
            with self.lock:
                self.prediction = None
            return
        self.latencies.append(ms)
        self.recent.append(ms)
        self.cpu_ms.append(1e3 * (time.thread_time() - c0))
        if len(self.latencies) > 100000:
            del self.latencies[:50000], self.cpu_ms[:50000]
        if self._stop:
            return
        self.lat_pub.publish(self._Float64(data=ms))
        if tick.event:
            if tick.status == "given_up":  # rclpy fixes a call site's severity: one call per level
                self.get_logger().warning(f"goal {self.goal_text}: {tick.event}")
            else:
                self.get_logger().info(f"goal {self.goal_text}: {tick.event}")
            self._set_goal_status(tick.status, f"{tick.status}: {self.goal_text}: {tick.event}")
        if tick.plan is None:  # idle or given up: the command holds
            with self.lock:
                self.prediction = None
            return
        self.goal_error, self.planned_error = tick.error, float(max(tick.planned_errors))
        self.goal_error_pub.publish(self._Float64(data=float(tick.error)))
        positions = tick.plan.positions  # [H, J] raw units
        self.plan_pub.publish(make_trajectory(self.names, positions, self.dt, sec_to_stamp(stamp)))
        with self.lock:
            self.prediction = _Prediction(now, stamp, np.where(np.isfinite(obs), obs, positions[0]), positions)
        if self.ticks % max(1, int(10 * self.rate)) == 0:
            lat = np.asarray(self.latencies[-int(10 * self.rate):])
            self.get_logger().info(
                f"plan: {self.ticks} ticks, latency median {np.median(lat):.1f} ms p99 {np.percentile(lat, 99):.1f} ms, "
                f"goal {self.goal_text} {tick.status}, error {tick.error:.3g} now, {self.planned_error:.3g} planned")

    def _diagnose_goal(self, r) -> None:
        state = state_label(self)
        if self.er is None:
            r.set(STALE, f"{state}: no model loaded")
            return
        if self.mode != "plan":
            r.set(STALE, f"mode {self.mode}: not planning")
        elif self.goal_status == "given_up":
            r.set(WARN, self.goal_message)
        elif self.goal_message.startswith("rejected"):
            r.set(WARN, self.goal_message)
        else:
            r.set(OK, self.goal_message)
        r.add("status", self.goal_status)
        r.add("goal", self.goal_text or "none")
        r.add("goal error", float(self.goal_error))
        r.add("planned goal error", float(self.planned_error))
        r.add("plan horizon", self.online.cfg.horizon)
        r.add("plan iterations per tick", self.online.cfg.iterations)
        r.add("goal topics", ", ".join(GOAL_TOPICS.values()))

    # ------------------------------------------------------------------ commands
    def _command(self) -> None:
        if self.cmd_pub is None:
            return
        if not self.safety.ready:
            if self.feedback is None:
                waited = time.monotonic() - self._feedback_wait_since
                if waited > FEEDBACK_WARN_S:  # a wrong feedback_topic must not fail silently: name the candidates
                    carrying = sorted(name for name, types in self.get_topic_names_and_types()
                                      if "sensor_msgs/msg/JointState" in types)
                    self.throttle.warn("fb", f"no JointState on feedback_topic {self.feedback_topic!r} for "
                                       f"{waited:.0f} s: not commanding (check feedback_topic). Topics carrying "
                                       f"JointState now: {carrying or 'none'}")
                else:
                    self.throttle.info("fb", "waiting for the commanded robot's joint states before commanding")
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

    def _publish_command(self, cmd: np.ndarray) -> None:
        if self.command_type == "trajectory":
            self.cmd_pub.publish(make_trajectory(self.cmd_names, cmd[None], 1.0 / self.command_rate))
        else:
            self.cmd_pub.publish(float64_multiarray(cmd))

    # ------------------------------------------------------------------ diagnostics
    def _diagnose_er(self, r) -> None:
        state = state_label(self)
        r.add("state", state)
        r.add("model", self.get_parameter("model_path").value)
        if self.er is None:
            if self.configure_error:
                r.set(ERROR, f"unconfigured: configure failed: {self.configure_error}")
            else:
                r.set(STALE, f"{state}: no model loaded")
            return
        ticks, misses = self.ticks, self.deadline_misses
        new_ticks, new_misses = ticks - self._reported[0], misses - self._reported[1]
        self._reported = (ticks, misses)
        lat = list(self.recent)
        if state != "active":
            r.set(STALE, f"{state}: not ticking")
        else:
            r.set(*tick_health(lat, 1e3 * self.dt, new_ticks, new_misses))
        if lat:
            r.add("latency median (ms)", float(np.median(lat)))
            r.add("latency p99 (ms)", float(np.percentile(lat, 99)))
        r.add("period (ms)", 1e3 * self.dt)
        r.add("ticks", ticks)
        r.add("deadline misses", misses)
        r.add("deadline misses since last report", new_misses)
        tick = self.last_tick
        if tick is not None:
            r.add("free energy", float(tick.free_energy))
            r.add("reconstruction error", float(tick.reconstruction_error))
        r.add("backend", self.er.backend.name)
        if self.startup_s is not None:
            r.add("start-up to first prediction (s)", self.startup_s)
        r.add("mode", self.mode)
        r.add("window", self.er.cfg.window)
        r.add("iterations", self.er.cfg.iterations)
        r.add("lr", float(self.er.cfg.lr))

    def _diagnose_input(self, r) -> None:
        state = state_label(self)
        if self.er is None or state != "active":
            r.set(STALE, f"{state}: not subscribed")
            return
        rate, _ = self.input_meter.rate()
        age = None if self.last_rx is None else self._now() - self.last_rx
        r.set(*input_health(age, self.stale_timeout, commanding=self.cmd_pub is not None))
        if self.cmd_pub is not None and not self.safety.ready and self.feedback is None \
                and time.monotonic() - self._feedback_wait_since > FEEDBACK_WARN_S and r.level < WARN:
            r.set(WARN, f"no joint states from the commanded robot on {self.feedback_topic}: not commanding")
        r.add("topic", self.input_topic)
        if self.cmd_pub is not None:
            r.add("feedback topic", self.feedback_topic)
            r.add("feedback", "received" if self.feedback is not None else "none")
        r.add("input rate (Hz)", float(rate))
        r.add("newest observation age (s)", "none" if age is None else float(age))
        r.add("stale timeout (s)", float(self.stale_timeout))

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

    def _log_summary(self) -> None:
        s = self.latency_summary()
        if s["ticks"]:
            self.get_logger().info(
                f"ER summary: {s['ticks']} ticks, latency median {s['median_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                f"max {s['max_ms']:.1f} ms, {s['deadline_misses']} deadline misses at {s['period_ms']:.0f} ms period; "
                f"worker CPU time median {s['cpu_median_ms']:.1f} ms, p99 {s['cpu_p99_ms']:.1f} ms "
                f"(worker torch threads {s['worker_torch_threads']})")

    def close(self) -> None:
        """Called by run_node after spinning ends: stop ticking and release the model."""
        self._stop_activity()
        self._release()


def main(args=None) -> int:
    return run_node(ERNode, args, params=PARAMS, prog="python -m pvrnn_ros.ros.er_node")


if __name__ == "__main__":
    import sys

    sys.exit(main())
