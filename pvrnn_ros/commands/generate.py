"""pvrnn-ros generate: prior, posterior or target generation, written as CSV + PNG per sequence."""
from __future__ import annotations

import argparse

import numpy as np

from ._common import fail, out_dir

HELP = "generate sequences from a trained model (prior, posterior, target)"
DESCRIPTION = (
    "prior: free generation (N(0, I) at t = 1, the learned prior after); posterior: reconstruction "
    "of each training sequence from its A; target: A for the first k steps, then the prior. "
    "Writes one CSV (time + joint names, the training format) and one PNG per sequence."
)


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint (DIR/model.pt or DIR)")
    p.add_argument("--mode", choices=["prior", "posterior", "target"], default="posterior")
    p.add_argument("--out", metavar="DIR", default="runs/generate")
    p.add_argument("--steps", type=int, default=None, help="steps per sequence (default: training lengths)")
    p.add_argument("--count", type=int, default=None, help="prior mode: how many sequences")
    p.add_argument("--k", type=int, default=10, help="target mode: posterior steps before the prior")
    p.add_argument("--sample", action=argparse.BooleanOptionalAction, default=None,
                   help="sample z (default: prior mode samples, the others use the mean)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from pvrnn_ros.core.checkpoint import CheckpointError, load_checkpoint
    from pvrnn_ros.core.data import write_csv
    from pvrnn_ros.core.generate import generate, training_sequence
    from pvrnn_ros.core.plots import plot_joints

    try:
        trained = load_checkpoint(args.model)
        results = generate(trained, args.mode, steps=args.steps, count=args.count, k=args.k,
                           sample=args.sample, seed=args.seed)
    except (CheckpointError, ValueError) as exc:
        return fail(str(exc))
    out = out_dir(args.out)
    for i, (name, values) in enumerate(results):
        t = np.arange(len(values)) / trained.rate_hz
        write_csv(out / f"{name}.csv", t, values, trained.joint_names)
        series = {args.mode: values}
        if args.mode != "prior":
            series = {"data": training_sequence(trained, i), **series}
        title = f"{name}" + (f" (A for the first {args.k} steps)" if args.mode == "target" else "")
        plot_joints(out / f"{name}.png", t, series, trained.joint_names, title)
    print(f"wrote {len(results)} sequences (CSV + PNG) to {out}")
    return 0
