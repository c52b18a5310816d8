"""`pvrnn-ros bench`: ER tick latency per backend (side by side with `reference`) and training speed."""
from __future__ import annotations

import argparse

HELP = "benchmark ER tick latency and training speed per backend"
DESCRIPTION = (
    "Time one ER tick (K Adam iterations over a W-step window) for every available backend next to "
    "the autograd reference, on random weights, single-threaded: (a) an NRL-like 16-joint softmax "
    "net at W=K=15, (b) the default config at W=K=15, (c) at W=K=50, (d) (c) with 64 windows; "
    "(f) the whole engine tick a node runs (b plus the last window pass and 16 prior rollouts), (k) and (l) the "
    "network of (a) as a whole engine tick at W=K=15 and 50, the cpu backend as one compiled call per tick (cpu) and "
    "as a WindowProblem per tick (cpu_generic), interleaved; "
    "(g)-(j) planning at T-GLean size (W=70, K=100/500, B=1/16 candidates). Batched cases also time "
    "their B=1 tick interleaved and report the per-window cost and the B/B=1 ratio, threaded (cpu) "
    "and on one thread (cpu_1t); "
    "then (e) training epochs/s of the reference and fused CPU trainers, interleaved. JIT compile time is "
    "reported separately."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="few repeats (a fast smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--backends", nargs="+", default=None,
                        help="backends to time next to reference (default: all available)")
    parser.add_argument("--cases", default="abcdefkl",
                        help="which cases to run, e.g. 'abc'; engine ticks: f, k, l; planning: g-j")


def run(args: argparse.Namespace) -> int:
    from pvrnn_ros.kernels.bench import format_table, run_bench, to_json

    res = run_bench(quick=args.quick, backends=args.backends, only=args.cases)
    print()
    print(format_table(res))
    if args.json:
        to_json(res, args.json)
        print(f"wrote {args.json}")
    return 0
