"""sim_node: a MuJoCo scene behind the interfaces a ros2_control robot offers.

Per robot prefix p (robot name r = p without the trailing "_", e.g. "teacher"):
  publishes  r/joint_states                       sensor_msgs/JointState (names without the prefix)
             r/end_effector                       geometry_msgs/PointStamped (world frame, same stamp)
                                                  of the site `end_effector_site` names (auto: a site
                                                  "<p>end_effector" if the model has one)
             r/robot_description                  std_msgs/String, a minimal URDF of the robot's joints
                                                  (types, limits), transient-local and repeated at 1 Hz
  subscribes r/<controller>/commands              std_msgs/Float64MultiArray ordered by `r.joints`
                                                  (else `joints`, else all the robot's actuated joints);
                                                  that list may be a subset: the other joints hold
             r/<controller>/joint_trajectory      trajectory_msgs/JointTrajectory (by joint name; any
                                                  subset of the robot's joints, the others hold)
  Any one-robot MJCF becomes a teacher/learner pair with `pair: ["teacher_", "learner_"]` (attached
  at run time, nothing copied); `position_kp` adds position servos to joints no actuator drives.
  /clock (rosgraph_msgs/Clock) from sim time when `publish_clock` (default: = use_sim_time).
  ~/reset: std_srvs/Trigger service (when std_srvs is installed) and std_msgs/Empty topic.
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz): "sim_node: simulation", the measured
  real-time factor (WARN below 0.9 x the requested one).
Not a managed node: it stands in for the robot's driver, which is up whenever the robot is.

Pacing: a wall timer; every tick the sim advances by the wall time elapsed x real_time_factor
(accumulated, so there is no drift), at most `max_steps_per_tick` control steps.
real_time_factor 0 = as fast as possible (max_steps_per_tick per tick).
"""
from __future__ import annotations

import time

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from .common import HAVE_STD_SRVS, Throttle, param, run_node  # param: the per-robot <robot>.joints
from .diagnostics import DiagnosticsUpdater, rtf_health
from .params import Param, ParamTable
from .conversions import TrajectoryFollower, make_joint_state, robot_name, sec_to_stamp, trajectory_points

NODE_NAME = "sim_node"

PARAMS = ParamTable(NODE_NAME, [
    Param("scene", "teacher_learner", "bundled scene name or MJCF path", read_only=True),
    Param("pair", [""], "attach the scene's (one-robot) model once per prefix, e.g. ['teacher_', 'learner_']; "
          "[''] = use the scene as it is", read_only=True),
    Param("pair_spacing", 1.0, "m between the attached copies (along y)", low=0.0, high=1000.0, read_only=True),
    Param("position_kp", 0.0, "with `pair`: position servo gain added to joints no actuator drives (N m/rad); "
          "0 = none", low=0.0, high=1e9, read_only=True),
    Param("keyframe", "home", "reset keyframe ('home', else the model's first one)", read_only=True),
    Param("end_effector_site", "auto", "site (name without the robot prefix) published as <robot>/end_effector; "
          "auto = 'end_effector' if present; '' = none", read_only=True),
    Param("robots", ["teacher_", "learner_"], "joint-name prefixes, one per robot ('' = whole model)", read_only=True),
    Param("publish_rate", 50.0, "joint_states rate in Hz of sim time", low=0.001, high=10000.0, read_only=True),
    Param("real_time_factor", 1.0, "sim speed vs wall clock; 0 = as fast as possible", low=0.0, high=1000.0,
          read_only=True),
    Param("control_dt", 0.02, "control step (s), a multiple of the physics step", low=1e-6, high=10.0,
          read_only=True),
    Param("controller", "forward_position_controller", "controller name in command topics", read_only=True),
    Param("joints", [""], "command joint order (short names) of every robot without its own <robot>.joints "
          "(declared per robot, e.g. teacher.joints); [''] = all the robot's actuated joints, model order",
          read_only=True),
    Param("publish_clock", "auto", "publish /clock: true, false or auto (= use_sim_time)",
          choices=("auto", "true", "false"), read_only=True),
    Param("max_steps_per_tick", 50, "cap on control steps per timer tick", low=1, high=100000, read_only=True),
    Param("seed", 0, "reset noise seed", read_only=True),
    Param("init_noise", 0.0, "uniform noise (rad) on reset positions", low=0.0, high=10.0, read_only=True),
])


class _Robot:
    def __init__(self, prefix: str, full: list[str], short: list[str], cmd_order: list[str], site: str | None):
        self.prefix = prefix
        self.site = site  # end-effector site (full name) or None
        self.name = robot_name(prefix)
        self.full = full  # joint names in the sim (with prefix), model order
        self.short = short  # published names (prefix stripped)
        self.cmd_full = cmd_order  # full names in the order of Float64MultiArray commands
        self.follower: TrajectoryFollower | None = None
        self.pub = None
        self.ee_pub = None
        self.description = ""


class SimNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        from pvrnn_ros.sim.arm_sim import ArmSim
        from pvrnn_ros.sim.robot import resolve_scene, robot_description_urdf
        from pvrnn_ros.sim.scenes import robot_pair_spec

        p = PARAMS.declare(self)
        problems = PARAMS.check_all(p)
        if problems:
            raise ValueError("; ".join(problems))
        scene = p["scene"]
        pair = [x for x in p["pair"] if x]
        pair_spacing = float(p["pair_spacing"])
        position_kp = float(p["position_kp"])
        keyframe = p["keyframe"]
        ee_site = p["end_effector_site"]
        robots = p["robots"]
        self.publish_rate = float(p["publish_rate"])
        self.rtf = float(p["real_time_factor"])
        control_dt = float(p["control_dt"])
        controller = p["controller"]
        joints = p["joints"]
        publish_clock = p["publish_clock"]
        self.max_steps = int(p["max_steps_per_tick"])
        seed = int(p["seed"])
        init_noise = float(p["init_noise"])
        self.throttle = Throttle(self.get_logger())

        path = resolve_scene(scene)
        model = robot_pair_spec(path, tuple(pair), pair_spacing, position_kp) if pair else path
        self.sim = ArmSim(model, control_dt=control_dt, seed=seed, init_noise=init_noise, keyframe=keyframe or None)
        use_sim_time = bool(self.get_parameter("use_sim_time").value)
        self.publish_clock = use_sim_time if str(publish_clock).lower() == "auto" else str(publish_clock).lower() == "true"
        self.use_sim_stamps = use_sim_time or self.publish_clock

        joints = [j for j in (joints or []) if j]
        self.robots: list[_Robot] = []
        for prefix in robots:
            full = self.sim.robot_joints(prefix) if prefix else list(self.sim.joint_names)
            short = [self.sim.strip_prefix(n, prefix) for n in full]
            name = robot_name(prefix)
            own = [j for j in param(self, f"{name or 'robot'}.joints", [""],
                                    f"command joint order of robot {name or '<root>'!r} (overrides `joints`)") if j]
            chosen, key = (own, f"{name or 'robot'}.joints") if own else (joints, "joints")
            if chosen:
                unknown = [j for j in chosen if j not in short]
                if unknown:
                    raise ValueError(f"parameter {key} names {unknown}, not actuated joints of robot "
                                     f"{name or '<root>'!r}; its joints: {short}")
                order = [prefix + j for j in chosen]
            else:
                order = full
            self.robots.append(_Robot(prefix, full, short, order, self._site_for(prefix, ee_site)))

        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        from geometry_msgs.msg import PointStamped
        from std_msgs.msg import String

        self._PointStamped, self._String = PointStamped, String
        for r in self.robots:
            ns = f"{r.name}/" if r.name else ""
            r.pub = self.create_publisher(_JointState(), f"{ns}joint_states", reliable)
            if r.site is not None:
                r.ee_pub = self.create_publisher(PointStamped, f"{ns}end_effector", reliable)
            lo, hi = self.sim.joint_limits(r.full)
            r.description = robot_description_urdf(r.name, r.short, self.sim.joint_types(r.full), lo, hi)
            r.description_pub = self.create_publisher(String, f"{ns}robot_description", latched)
            self.create_subscription(_Float64MultiArray(), f"{ns}{controller}/commands",
                                     lambda m, r=r: self._on_commands(r, m), 10)
            self.create_subscription(_JointTrajectory(), f"{ns}{controller}/joint_trajectory",
                                     lambda m, r=r: self._on_trajectory(r, m), 10)
        if self.publish_clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        from std_msgs.msg import Empty

        self.create_subscription(Empty, "~/reset", lambda _m: self.reset(), 10)
        if HAVE_STD_SRVS:
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/reset", self._on_reset_srv)

        self.pub_period = 1.0 / self.publish_rate
        self.next_pub = 0.0
        self._owed = 0.0
        self._wall_last = time.monotonic()
        # wall period of the timer: one control step of sim time (or 1 ms when as fast as possible)
        period = self.sim.control_dt / self.rtf if self.rtf > 0 else 0.001
        period = max(period, 0.001)
        # a steady (wall) timer: with use_sim_time the node clock would wait for our own /clock
        from rclpy.clock import Clock as RclClock, ClockType

        self.timer = self.create_timer(period, self._tick, clock=RclClock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(1.0, self._publish_descriptions, clock=RclClock(clock_type=ClockType.STEADY_TIME))
        self._publish_descriptions()
        for r in self.robots:
            self.get_logger().info(
                f"robot {r.name or '<root>'}: joints {r.short}; commands ordered by {[self.sim.strip_prefix(n, r.prefix) for n in r.cmd_full]}; "
                f"end effector {r.site or 'none'}")
        self.get_logger().info(
            f"scene {path}{f' x {pair}' if pair else ''} (keyframe {self.sim.keyframe}): robots {[r.name or '<root>' for r in self.robots]}, control_dt {self.sim.control_dt:g} s, "
            f"publish {self.publish_rate:g} Hz, real_time_factor {self.rtf:g}, /clock {self.publish_clock}")
        self._publish()
        self._rtf_mark = (time.monotonic(), self.sim.time)
        self.diagnostics = DiagnosticsUpdater(self)  # stamps: node clock (sim time under use_sim_time)
        self.diagnostics.add("simulation", self._diagnose)

    def _diagnose(self, r) -> None:
        """/diagnostics "sim_node: simulation": the real-time factor since the previous report."""
        wall, sim_t = time.monotonic(), self.sim.time
        (w0, s0), self._rtf_mark = self._rtf_mark, (wall, sim_t)
        level, message, measured = rtf_health(sim_t - s0, wall - w0, self.rtf)
        r.set(level, message)
        r.add("real-time factor", measured)
        r.add("requested real-time factor", self.rtf)
        r.add("sim time (s)", sim_t)

    def _site_for(self, prefix: str, ee_site: str) -> str | None:
        if not ee_site:
            return None
        sites = self.sim.site_names(prefix)
        if ee_site == "auto":
            return f"{prefix}end_effector" if f"{prefix}end_effector" in sites else None
        if prefix + ee_site not in sites:
            raise ValueError(f"end_effector_site {ee_site!r}: robot {robot_name(prefix) or '<root>'!r} has no site "
                             f"{prefix + ee_site!r}; its sites: {sites}")
        return prefix + ee_site

    def _publish_descriptions(self) -> None:
        for r in self.robots:
            r.description_pub.publish(self._String(data=r.description))

    # ------------------------------------------------------------------ callbacks
    def _on_commands(self, robot: _Robot, msg) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape[0] != len(robot.cmd_full):
            key = f"{robot.name or 'robot'}.joints"
            self.throttle.warn(f"len/{robot.name}", f"{robot.name or '<root>'} commands: got {data.shape[0]} values "
                               f"for the {len(robot.cmd_full)} command joints "
                               f"{[self.sim.strip_prefix(n, robot.prefix) for n in robot.cmd_full]}; ignored. "
                               f"Set sim_node's {key} (or joints) to the joints the sender orders its commands by")
            return
        ok = np.isfinite(data)
        if not ok.all():
            self.throttle.warn(f"nan/{robot.name}", f"{robot.name} commands: non-finite values for "
                               f"{[robot.cmd_full[i] for i in np.flatnonzero(~ok)]}; those joints hold")
        if not ok.any():
            return
        robot.follower = None
        names = [n for n, k in zip(robot.cmd_full, ok) if k]
        self.sim.set_targets(data[ok], names)

    def _on_trajectory(self, robot: _Robot, msg) -> None:
        times, pos, problems = trajectory_points(msg, robot.short)
        for p in problems:
            self.throttle.warn(f"traj/{robot.name}/{p[:20]}", f"{robot.name} joint_trajectory: {p}")
        if times.size == 0:
            return
        robot.follower = TrajectoryFollower(self.sim.time, self.sim.targets(robot.full), times, pos)

    def _on_reset_srv(self, _req, resp):
        self.reset()
        resp.success = True
        resp.message = "sim reset"
        return resp

    def reset(self) -> None:
        self.sim.reset()
        for r in self.robots:
            r.follower = None
        self.next_pub = 0.0
        self.get_logger().info("sim reset")

    # ------------------------------------------------------------------ stepping
    def _tick(self) -> None:
        now = time.monotonic()
        if self.rtf > 0:
            self._owed += (now - self._wall_last) * self.rtf / self.sim.control_dt
            n = int(self._owed)
            if n > self.max_steps:
                self.throttle.warn("behind", f"sim falls behind real_time_factor {self.rtf:g}; dropping "
                                   f"{n - self.max_steps} steps")
                self._owed = 0.0
                n = self.max_steps
            else:
                self._owed -= n
        else:
            n = self.max_steps
        self._wall_last = now
        for _ in range(n):
            t = self.sim.time
            for r in self.robots:
                if r.follower is not None:
                    self.sim.set_targets(r.follower.sample(t), r.full)
                    if t >= r.follower.end_time:
                        r.follower = None
            self.sim.step()
            if self.sim.time + 1e-9 >= self.next_pub:
                self._publish()
                self.next_pub += self.pub_period
                if self.next_pub <= self.sim.time:  # never publish in bursts after a reset
                    self.next_pub = self.sim.time + self.pub_period

    def _publish(self) -> None:
        t_sim = self.sim.time
        if self.publish_clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub.publish(Clock(clock=sec_to_stamp(t_sim)))
        stamp = t_sim if self.use_sim_stamps else time.time()
        for r in self.robots:
            r.pub.publish(make_joint_state(r.short, self.sim.positions(r.full), self.sim.velocities(r.full), stamp))
            if r.ee_pub is not None:
                msg = self._PointStamped()
                msg.header.stamp = sec_to_stamp(stamp)
                msg.header.frame_id = "world"
                msg.point.x, msg.point.y, msg.point.z = (float(v) for v in self.sim.site_position(r.site))
                r.ee_pub.publish(msg)


def _JointState():
    from sensor_msgs.msg import JointState

    return JointState


def _Float64MultiArray():
    from std_msgs.msg import Float64MultiArray

    return Float64MultiArray


def _JointTrajectory():
    from trajectory_msgs.msg import JointTrajectory

    return JointTrajectory


def main(args=None) -> int:
    return run_node(SimNode, args, params=PARAMS, prog="python -m pvrnn_ros.ros.sim_node")


if __name__ == "__main__":
    import sys

    sys.exit(main())
