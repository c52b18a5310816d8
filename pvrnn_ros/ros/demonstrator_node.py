"""demonstrator_node: drives a robot with probabilistic chains of motion primitives.

Publishes position targets where a teleoperator would: std_msgs/Float64MultiArray on
`<robot>/<controller>/commands` (joint order = `joints` param, short names), stamped by the node's
own clock (honours use_sim_time: with the sim's /clock it follows sim time), and the active
primitive's name (std_msgs/String) on `demonstrator/primitive` and, transient-local, on
`<robot>/primitive` (what a recorder records next to the joint states).

Where joints, limits and the start pose come from (logged at start-up, with each joint's role):
  - `scene` set (bundled name or MJCF path): the model's actuated joints of `scene_prefix`
    (default: rotary joints only), their limits (`unlimited_range` around the start for
    continuous joints) and the start pose of `keyframe` ("home", else the first keyframe);
  - `scene` empty: `joints`, `lower`, `upper` from parameters (arm7's when the names are arm7's);
    with `start_from_joint_states` the via posture is the first `<robot>/joint_states` message.
Falling behind (fewer commands than the clock asks for, e.g. at a high real_time_factor) is
warned about, with the figures.
"""
from __future__ import annotations

from rclpy.node import Node

from .common import Throttle, run_node
from .conversions import float64_multiarray, joint_state_to_array
from .params import Param, ParamTable
from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES  # numpy only: --help stays light

NODE_NAME = "demonstrator_node"
BEHIND_WINDOW_S = 2.0  # clock seconds over which sent commands are counted against the rate
BEHIND_FRACTION = 0.8  # warn when fewer than this fraction of the due commands went out

PARAMS = ParamTable(NODE_NAME, [
    Param("robot", "teacher", "robot namespace to drive ('' = none)", read_only=True),
    Param("controller", "forward_position_controller", "controller name", read_only=True),
    Param("scene", "", "bundled scene or MJCF path to read joints, limits and start pose from; '' = from the "
          "joints/lower/upper parameters", read_only=True),
    Param("scene_prefix", "auto", "joint-name prefix of this robot in `scene`; auto = '<robot>_' when the model "
          "has such joints", read_only=True),
    Param("keyframe", "home", "start-pose keyframe of `scene` ('home', else the first one)", read_only=True),
    Param("joints", [""], "command joint order (short names); [''] = the model's rotary joints (with `scene`) "
          "or arm7's joints", read_only=True),
    Param("lower", [0.0], "joint lower limits (rad/m), one per joint; [0.0] = from the model / arm7", read_only=True),
    Param("upper", [0.0], "joint upper limits, one per joint; [0.0] = from the model / arm7", read_only=True),
    Param("roles", [""], "primitive role per joint (shoulder_pan ... wrist_roll, hold; '' = automatic); "
          "[''] = all automatic", read_only=True),
    Param("unlimited_range", 1.5, "half-width (rad) of the motion of continuous joints around their start "
          "position", low=0.0, high=100.0, read_only=True),
    Param("start_from_joint_states", False, "use the first <robot>/joint_states as the via posture (no `scene`)",
          read_only=True),
    Param("rate", 50.0, "command rate in Hz (node clock)", low=0.001, high=10000.0, read_only=True),
    Param("seed", 0, "random seed of the primitive chain", read_only=True),
])


class DemonstratorNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import Float64MultiArray, String

        from pvrnn_ros.sim.primitives import Demonstrator, default_limits

        p = PARAMS.declare(self)
        problems = PARAMS.check_all(p)
        if problems:
            raise ValueError("; ".join(problems))
        robot, controller = p["robot"], p["controller"]
        scene, scene_prefix, keyframe = p["scene"], p["scene_prefix"], p["keyframe"]
        joints = [j for j in p["joints"] if j]
        lower, upper = list(p["lower"]), list(p["upper"])
        roles = list(p["roles"])
        unlimited_range = float(p["unlimited_range"])
        from_states = bool(p["start_from_joint_states"])
        self.rate = float(p["rate"])
        seed = int(p["seed"])
        self.throttle = Throttle(self.get_logger(), 5.0)
        ns = f"{robot}/" if robot else ""

        types, start, source = None, None, "arm7 defaults"
        if scene:
            model_lower, model_upper, joints, types, start, source = self._from_model(
                scene, scene_prefix, robot, keyframe, joints, unlimited_range)
        elif not joints:
            joints = list(DEFAULT_JOINT_NAMES)
        given = _limits_given(lower, upper)
        if given:
            if len(lower) != len(joints) or len(upper) != len(joints):
                raise ValueError(f"lower has {len(lower)} and upper {len(upper)} values for {len(joints)} joints "
                                 f"{joints}: give one limit per joint in that order, or [0.0] for the "
                                 f"{'model' if scene else 'arm7'} limits")
            source = "parameters lower/upper" + (f" (joints from {source})" if scene else "")
        elif scene:
            lower, upper = model_lower, model_upper
        else:
            try:
                lower, upper = default_limits(joints)
            except ValueError as exc:
                raise ValueError(f"{exc}; for another robot set `scene` to its MJCF, or `lower` and `upper` "
                                 "(one value per joint)") from None
        self._joints, self._lower, self._upper = joints, lower, upper
        self._roles, self._types, self._seed = (roles if any(roles) else None), types, seed
        self._source = source
        self.demo = None
        if from_states and not scene:
            from sensor_msgs.msg import JointState

            self._state_sub = self.create_subscription(JointState, f"{ns}joint_states", self._on_first_state, 10)
            self.get_logger().info(f"waiting for {ns}joint_states for the start pose of {joints}")
        else:
            self._make_demonstrator(start)

        self.cmd_pub = self.create_publisher(Float64MultiArray, f"{ns}{controller}/commands", 10)
        self.prim_pub = self.create_publisher(String, "demonstrator/primitive", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.robot_prim_pub = self.create_publisher(String, f"{ns}primitive", latched)
        self._String = String
        self.t0 = None
        self.last_primitive = None
        self._window_start = None
        self._window_sent = 0
        self.create_timer(1.0 / self.rate, self._tick)  # node clock: sim time when use_sim_time
        self.get_logger().info(f"driving {ns}{controller}/commands at {self.rate:g} Hz, joints {joints}, seed {seed}")

    # ------------------------------------------------------------------ set-up
    def _from_model(self, scene, scene_prefix, robot, keyframe, joints, unlimited_range):
        from pvrnn_ros.sim.robot import demonstrator_range, load_robot, robot_joints

        sim, prefix = load_robot(scene, scene_prefix, robot, keyframe)
        info = robot_joints(sim, prefix)
        sim.close()
        info = info.select(joints or info.default_command_joints())
        lower, upper = demonstrator_range(info, unlimited_range)
        start = info.start if info.keyframe is not None else None
        where = f"{info.source}" + (f" (prefix {prefix!r})" if prefix else "")
        self.get_logger().info(
            f"from {where}: joints {info.names} ({', '.join(info.types)}); start pose "
            + (f"keyframe {info.keyframe!r}" if info.keyframe is not None else "none in the model (limits' "
               "centre is the via posture)"))
        return lower, upper, info.names, info.types, start, where

    def _make_demonstrator(self, start) -> None:
        import numpy as np

        from pvrnn_ros.sim.primitives import Demonstrator, assign_roles, fit_working_range

        roles, _ = assign_roles(self._joints, self._roles, self._types)
        lower, upper = fit_working_range(self._lower, self._upper, roles, start)
        self.demo = Demonstrator(self._joints, lower, upper, seed=self._seed, roles=self._roles, types=self._types)
        self.get_logger().info(f"joint roles: {self.demo.role_report()}")
        rng = ", ".join(f"{n} [{lo:.3g}, {hi:.3g}]" for n, lo, hi in zip(self._joints, np.asarray(lower), np.asarray(upper)))
        self.get_logger().info(f"working ranges (limits from {self._source}): {rng}; via posture "
                               + ", ".join(f"{n} {q:.3g}" for n, q in zip(self._joints, self.demo.home)))

    def _on_first_state(self, msg) -> None:
        if self.demo is not None:
            return
        sample = joint_state_to_array(msg, self._joints)
        if sample.values is None or sample.missing:
            self.throttle.warn("start", f"joint_states lacks {sample.missing or sample.problems}; waiting")
            return
        self._make_demonstrator(sample.values)
        self.destroy_subscription(self._state_sub)

    # ------------------------------------------------------------------ ticking
    def _tick(self) -> None:
        if self.demo is None:
            return
        now = self.get_clock().now().nanoseconds * 1e-9
        if now <= 0.0:  # sim time not started yet
            return
        if self.t0 is None:
            self.t0 = now
        t = now - self.t0
        if t < 0:  # the clock went backwards (sim reset): restart the chain
            self.t0, t = now, 0.0
            self.demo.reset()
            self._window_start = None
        self._check_pace(now)
        q = self.demo.sample(t)
        self.cmd_pub.publish(float64_multiarray(q))
        prim = self.demo.current_primitive
        self.prim_pub.publish(self._String(data=prim))
        self.robot_prim_pub.publish(self._String(data=prim))
        if prim != self.last_primitive:
            self.get_logger().info(f"t={t:6.2f} s: {prim}")
            self.last_primitive = prim

    def _check_pace(self, now: float) -> None:
        """Count commands per BEHIND_WINDOW_S of clock time; warn when well under the rate."""
        if self._window_start is None:
            self._window_start, self._window_sent = now, 0
        self._window_sent += 1
        span = now - self._window_start
        if span >= BEHIND_WINDOW_S:
            due = span * self.rate
            if self._window_sent < BEHIND_FRACTION * due:
                self.get_logger().warning(
                    f"falling behind the clock: {self._window_sent} commands in {span:.2f} s of "
                    f"{'sim' if self.get_parameter('use_sim_time').value else 'wall'} time, {due:.0f} due at "
                    f"{self.rate:g} Hz; the demonstrations get coarser. Lower the sim's real_time_factor")
            self._window_start, self._window_sent = now, 0


def _limits_given(lower, upper) -> bool:
    """[0.0] (the default) for both means: not given."""
    return not (list(lower) == [0.0] and list(upper) == [0.0])


def main(args=None) -> int:
    return run_node(DemonstratorNode, args, params=PARAMS, prog="python -m pvrnn_ros.ros.demonstrator_node")


if __name__ == "__main__":
    import sys

    sys.exit(main())
