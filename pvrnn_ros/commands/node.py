"""`pvrnn-ros node NAME [--ros-args ...]`: run one ROS 2 node of the package in this process."""
from __future__ import annotations

import argparse
import importlib

HELP = "start one ROS 2 node: pvrnn-ros node er_node --ros-args ..."
DESCRIPTION = (
    "Run one node (sim_node, demonstrator_node, recorder_node, er_node) like `ros2 run pvrnn_ros NAME`. "
    "Everything after NAME is passed to the node untouched, e.g. "
    "`pvrnn-ros node er_node --ros-args -p model_path:=runs/demo/model/model.pt -p mode:=observe` or "
    "`--ros-args --params-file config/imitate_params.yaml`. `pvrnn-ros node NAME --help` lists the node's "
    "parameters (defaults, valid values, which may change live) without starting it. Keep DDS on this "
    "machine with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST."
)
NODES = ("sim_node", "demonstrator_node", "recorder_node", "er_node")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=NODES, help="node to run")
    parser.add_argument("ros_args", nargs=argparse.REMAINDER, help="--ros-args ... (passed to rclpy)")


def run_raw(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        parser = argparse.ArgumentParser(prog="pvrnn-ros node", description=DESCRIPTION)
        add_arguments(parser)
        parser.print_help()
        return 0
    name = argv[0]
    if name not in NODES:
        print(f"pvrnn-ros node: error: unknown node {name!r}; choose from {', '.join(NODES)}")
        return 2
    module = importlib.import_module(f"pvrnn_ros.ros.{name}")
    from pvrnn_ros.ros.params import help_requested

    if help_requested(list(argv[1:])):  # the parameter table, without starting ROS
        print(module.PARAMS.help_text(f"pvrnn-ros node {name}"))
        return 0
    try:
        return int(module.main([name] + list(argv[1:])) or 0)
    except ValueError as exc:  # bad parameters: say so without a traceback
        print(f"pvrnn-ros node {name}: error: {exc}")
        return 2


def run(args: argparse.Namespace) -> int:
    return run_raw([args.name] + list(args.ros_args or []))
