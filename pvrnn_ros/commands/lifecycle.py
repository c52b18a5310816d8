"""`pvrnn-ros lifecycle NODE [TRANSITION]`: show or change a managed node's lifecycle state."""
from __future__ import annotations

import argparse

HELP = "show a managed node's state and transitions, or trigger one (configure, activate, ...)"
DESCRIPTION = (
    "Without TRANSITION: print the node's state and the transitions possible from it. With TRANSITION "
    "(configure, activate, deactivate, cleanup, shutdown): trigger it through the node's "
    "~/change_state service and print the new state; exit code 1 if the node refused or the transition "
    "failed (the node's log says why), 2 if it did not answer. The managed nodes are er_node and "
    "recorder_node; e.g. `pvrnn-ros lifecycle er_node deactivate`. There is no `ros2 lifecycle` here; "
    "on a full ROS install that command works on the same nodes."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pvrnn_ros.ros.lifecycle import TRANSITIONS

    parser.add_argument("node", help="node name, e.g. er_node or /robot1/er_node")
    parser.add_argument("transition", nargs="?", choices=TRANSITIONS, help="transition to trigger")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: the environment's)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="s in all for this call: finding the node's services, the transition "
                             "(configure loads a model) and the state queries")
    parser.add_argument("--no-localhost", action="store_true",
                        help="do not set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (talk to other machines)")


def run(args: argparse.Namespace) -> int:
    import os
    import time

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from pvrnn_ros.ros.lifecycle import GOALS, LifecycleClient

    if not args.no_localhost:
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    target = args.node if args.node.startswith("/") else "/" + args.node
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    try:
        node = rclpy.create_node("pvrnn_lifecycle_cli", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = LifecycleClient(node, target, executor=executor)
        deadline = time.monotonic() + args.timeout

        def left() -> float:  # one deadline for the whole call, not one per service call
            return max(0.1, deadline - time.monotonic())

        if not client.wait(args.timeout):
            print(f"pvrnn-ros lifecycle: error: {target} offers no lifecycle services within {args.timeout:g} s "
                  f"(domain {domain}); is it running, and is it a managed node (er_node, recorder_node)?")
            return 2
        if args.transition:
            ok = client.change(args.transition, timeout=left())
            state = client.state(timeout=min(left(), 10.0))
            if ok is None:
                print(f"{target}: {args.transition}: no answer within {args.timeout:g} s (state {state})")
                return 2
            if not ok:
                print(f"{target}: {args.transition} refused or failed; state {state} (the node's log says why)")
                return 1
            print(f"{target}: {args.transition} ok; state {state}")
            return 0
        state = client.state(timeout=left())
        transitions = client.available(timeout=left())
        if state is None or transitions is None:
            print(f"{target}: no answer to the state query within {args.timeout:g} s")
            return 2
        print(f"{target}: {state}")
        for label, _ in transitions:
            print(f"  {label:<11} -> {GOALS.get(label, '?')}")
        return 0
    finally:
        context.try_shutdown()
