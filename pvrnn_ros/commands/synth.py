"""`pvrnn-ros synth`: synthesize demonstrations in the MuJoCo arm sim."""
from __future__ import annotations

import argparse

HELP = "synthesize demonstrations in the MuJoCo arm sim"
DESCRIPTION = (
    "Run the scripted demonstrator (smooth primitives chained by a probabilistic FSM) through "
    "the MuJoCo physics and write one CSV per episode (header time,<joint names>; measured joint "
    "positions) plus <episode>.segments.json with the primitive sequence. With --task reach the teacher "
    "reaches a target drawn uniformly from the reach region (pvrnn_ros.sim.reach.REACH_REGION), holds and "
    "returns; each CSV also has end_effector.x/y/z (the arm's end_effector site, measured) and "
    "<episode>.target.json holds the target, the IK posture and the region."
)

SCENES = ("arm7", "teacher_learner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--episodes", "-n", type=int, default=10, help="number of episodes")
    parser.add_argument("--out", "-o", required=True, help="output directory")
    parser.add_argument("--task", choices=("primitives", "reach"), default="primitives",
                        help="primitives: the probabilistic FSM of motion primitives; reach: reach a target "
                             "in the workspace and return (arm7 scene; --duration is set by the reach timing)")
    parser.add_argument("--duration", type=float, default=16.0, help="seconds per episode")
    parser.add_argument("--seed", type=int, default=0, help="base random seed")
    parser.add_argument("--scene", choices=SCENES, default="arm7",
                        help="bundled scene (teacher_learner drives the teacher arm)")
    parser.add_argument("--rate", type=float, default=None,
                        help="output sample rate in Hz (default: the 50 Hz control rate)")
    parser.add_argument("--control-dt", type=float, default=0.02,
                        help="control period in s (a multiple of the 0.002 s physics step)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pvrnn_ros.sim.synth import synthesize

    if args.task == "reach":
        if args.scene != "arm7":
            print(f"pvrnn-ros synth: error: --task reach runs in the arm7 scene, not --scene {args.scene}")
            return 2
        from pvrnn_ros.sim.reach import REACH_REGION, synthesize_reach

        try:
            paths = synthesize_reach(args.out, args.episodes, seed=args.seed, rate_hz=args.rate,
                                     control_dt=args.control_dt, progress=not args.no_progress)
        except ValueError as exc:
            print(f"pvrnn-ros synth: error: {exc}")
            return 2
        print(f"wrote {len(paths)} reach episodes to {args.out} (targets in {REACH_REGION.describe()}; "
              f"end-effector site 'end_effector' of sim/arm7.xml)")
        return 0
    try:
        paths = synthesize(args.out, episodes=args.episodes, duration_s=args.duration, seed=args.seed,
                           scene=args.scene, rate_hz=args.rate, progress=not args.no_progress,
                           control_dt=args.control_dt)
    except ValueError as exc:
        print(f"pvrnn-ros synth: error: {exc}")
        return 2
    print(f"wrote {len(paths)} episodes to {args.out}")
    return 0
