"""The `pvrnn-ros` command: one entry point, one verb per module in `pvrnn_ros.commands`.

Each verb module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Verb modules are imported lazily so `pvrnn-ros --help` stays fast and a verb's heavy
dependencies (rclpy, mujoco) load only when that verb runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, one-line help). Order is the order shown in --help.
VERBS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a PV-RNN on demonstrations (CSV, NPZ or rosbag2)"),
    "generate": ("generate", "generate sequences from a trained model (prior, posterior, target)"),
    "eval": ("eval", "run error regression over held-out demonstrations against baselines"),
    "plan": ("plan", "plan a motion to a goal (joint posture, end-effector point, task class)"),
    "sweep": ("sweep", "sweep config keys x seeds (train + ER eval per trial) on Ray Tune"),
    "synth": ("synth", "synthesize demonstrations in the MuJoCo arm sim"),
    "repair": ("repair", "make rosbag2 recordings cut by a crash readable again"),
    "bench": ("bench", "benchmark ER tick latency and training speed per backend"),
    "node": ("node", "start one ROS 2 node: pvrnn-ros node er_node --ros-args ..."),
    "up": ("up", "bring up a node graph (same as a launch file) as separate processes"),
    "lifecycle": ("lifecycle", "show a managed node's state and transitions, or trigger one"),
    "demo": ("demo", "end-to-end: simulate, record, train, run live ER imitation, report"),
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the uninformative None / False ones."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _load(verb: str):
    module_name, _ = VERBS[verb]
    return importlib.import_module(f"pvrnn_ros.commands.{module_name}")


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pvrnn-ros",
        description="PV-RNN for robots: learn motor sequences from demonstrations, then "
        "infer and predict live joint streams by error regression.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in verbs or list(VERBS):
        module_name, help_text = VERBS[verb]
        try:
            module = _load(verb)
        except ImportError as exc:  # a verb whose optional deps are missing still shows in --help
            p = sub.add_parser(verb, help=f"{help_text} (unavailable: {exc})")
            p.set_defaults(_unavailable=str(exc))
            continue
        p = sub.add_parser(verb, help=help_text, description=getattr(module, "DESCRIPTION", help_text),
                           formatter_class=_HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `node` forwards everything after it untouched (ROS args start with --ros-args).
    if argv and argv[0] == "node":
        return _load("node").run_raw(argv[1:])
    only = [argv[0]] if argv and argv[0] in VERBS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if getattr(args, "_unavailable", None):
        parser.error(f"'{args.verb}' is unavailable: {args._unavailable}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
