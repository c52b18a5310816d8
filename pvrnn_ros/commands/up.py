"""`pvrnn-ros up GRAPH`: bring up a node graph (the same as launch/GRAPH.launch.py) as processes."""
from __future__ import annotations

import argparse
import signal
import time

HELP = "bring up a node graph (same as a launch file) as separate processes"
DESCRIPTION = (
    "Start every node of a graph from pvrnn_ros.bringup.GRAPHS with its params file from config/ "
    "(the same the launch files use), each as `python -m pvrnn_ros.ros.<node> --ros-args --params-file ...`, "
    "logging to RUN_DIR/<node>.log. Managed nodes (er_node, recorder_node) start with autostart:=false and "
    "are then configured and activated through their lifecycle services, as the launch files do; if one "
    "fails, its reason is printed and the graph stops. Ctrl-C or SIGTERM stops them all (SIGINT, then SIGTERM, "
    "then SIGKILL), also when `up` runs as a background job; if `up` itself is killed, its nodes get SIGTERM. "
    "Overrides: NODE.PARAM:=VALUE for one node, PARAM:=VALUE for all, e.g. "
    "`pvrnn-ros up imitate -p er_node.model_path:=runs/demo/model/model.pt`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pvrnn_ros.bringup import GRAPHS

    parser.add_argument("graph", choices=sorted(GRAPHS), help="graph to bring up")
    parser.add_argument("--param-override", "-p", action="append", default=[], metavar="[NODE.]PARAM:=VALUE",
                        help="parameter override (repeatable)")
    parser.add_argument("--run-dir", default=None, help="log directory (default runs/up/<graph>-<time>)")
    parser.add_argument("--params-dir", default=None, help="directory of params files (default: config/)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID for the nodes")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = Ctrl-C)")
    parser.add_argument("--lifecycle-timeout", type=float, default=180.0,
                        help="s to wait for each managed node to come up, configure and activate")
    parser.add_argument("--no-localhost", action="store_true",
                        help="do not set ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (talk to other machines)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pvrnn_ros.bringup import Bringup, ros_env, split_overrides, GRAPHS

    overrides = list(args.param_override)
    try:
        split_overrides(overrides, GRAPHS[args.graph])
    except ValueError as exc:
        print(f"pvrnn-ros up: error: {exc}")
        return 2
    run_dir = Path(args.run_dir or f"runs/up/{args.graph}-{time.strftime('%Y%m%d-%H%M%S')}")
    up = Bringup(args.graph, run_dir, overrides, env=ros_env(args.domain_id, not args.no_localhost),
                 params_dir=Path(args.params_dir) if args.params_dir else None)
    procs = up.start(manage=True)
    print(f"graph {args.graph}: {len(procs)} node(s), logs in {run_dir}/")
    for p in procs:
        print(f"  {p.spec.name:<18} pid {p.popen.pid:<7} params {p.spec.params}  log {p.log}")
    t0 = time.monotonic()
    code = 0
    # Our own handlers: a shell starting us in the background sets SIGINT to ignored, and SIGTERM's
    # default would leave the nodes running; either signal stops the whole graph.
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        failures = up.drive_lifecycle(timeout=args.lifecycle_timeout)
        if failures:
            for f in failures:
                print(f"pvrnn-ros up: error: {f}")
            code = 1
        else:
            print("Ctrl-C to stop")
        while not failures:
            time.sleep(0.2)
            exited = up.poll()
            if exited:
                for name, rc in exited:
                    print(f"node {name} exited with code {rc} (log: {run_dir / (name + '.log')})")
                    code = code or (rc if rc not in (0, None) else 0)
                break
            if args.duration and time.monotonic() - t0 >= args.duration:
                break
    except KeyboardInterrupt:
        print("\nstopping ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = up.stop()
    for name, rc in codes.items():
        print(f"  {name:<18} exit {rc}")
    return code


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt
