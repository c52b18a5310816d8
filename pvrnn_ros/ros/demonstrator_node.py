"""demonstrator_node: drives a robot with probabilistic chains of motion primitives.

Publishes position targets where a teleoperator would: std_msgs/Float64MultiArray on
`<robot>/<controller>/commands` (joint order = `joints` param, short names), stamped by the node's
own clock (honours use_sim_time: with the sim's /clock it follows sim time), and the active
primitive's name (std_msgs/String) on `demonstrator/primitive`.
"""
from __future__ import annotations

from rclpy.node import Node

from .common import param, run_node  # noqa: F401 - param: the issue-15 declarations
from .params import Param, ParamTable
from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES  # numpy only: --help stays light
from .conversions import float64_multiarray

NODE_NAME = "demonstrator_node"

PARAMS = ParamTable(NODE_NAME, [
    Param("robot", "teacher", "robot namespace to drive ('' = none)", read_only=True),
    Param("controller", "forward_position_controller", "controller name", read_only=True),
    Param("joints", list(DEFAULT_JOINT_NAMES), "command joint order", read_only=True),
    Param("lower", [0.0], "joint lower limits (rad); [0.0] = arm7 defaults", read_only=True),
    Param("upper", [0.0], "joint upper limits (rad); [0.0] = arm7 defaults", read_only=True),
    Param("rate", 50.0, "command rate in Hz (node clock)", low=0.001, high=10000.0, read_only=True),
    Param("seed", 0, "random seed of the primitive chain", read_only=True),
])


class DemonstratorNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        from std_msgs.msg import Float64MultiArray, String

        from pvrnn_ros.sim.primitives import Demonstrator, default_limits

        p = PARAMS.declare(self)
        problems = PARAMS.check_all(p)
        if problems:
            raise ValueError("; ".join(problems))
        robot = p["robot"]
        controller = p["controller"]
        joints = [j for j in p["joints"] if j]
        lower = list(p["lower"])
        upper = list(p["upper"])
        self.rate = float(p["rate"])
        seed = int(p["seed"])
        if len(lower) != len(joints) or len(upper) != len(joints):
            lower, upper = default_limits(joints)
        self.demo = Demonstrator(joints, lower, upper, seed=seed)
        ns = f"{robot}/" if robot else ""
        self.cmd_pub = self.create_publisher(Float64MultiArray, f"{ns}{controller}/commands", 10)
        self.prim_pub = self.create_publisher(String, "demonstrator/primitive", 10)
        self._String = String
        self.t0 = None
        self.last_primitive = None
        self.create_timer(1.0 / self.rate, self._tick)  # node clock: sim time when use_sim_time
        self.get_logger().info(f"driving {ns}{controller}/commands at {self.rate:g} Hz, joints {joints}, seed {seed}")

    def _tick(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        if now <= 0.0:  # sim time not started yet
            return
        if self.t0 is None:
            self.t0 = now
        t = now - self.t0
        if t < 0:  # the clock went backwards (sim reset): restart the chain
            self.t0, t = now, 0.0
            self.demo.reset()
        q = self.demo.sample(t)
        self.cmd_pub.publish(float64_multiarray(q))
        prim = self.demo.current_primitive
        self.prim_pub.publish(self._String(data=prim))
        if prim != self.last_primitive:
            self.get_logger().info(f"t={t:6.2f} s: {prim}")
            self.last_primitive = prim


def main(args=None) -> int:
    return run_node(DemonstratorNode, args, params=PARAMS, prog="python -m pvrnn_ros.ros.demonstrator_node")


if __name__ == "__main__":
    import sys

    sys.exit(main())
