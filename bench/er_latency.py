#!/usr/bin/env python3
"""ER tick latency per backend next to the autograd reference, and training speed.

    python bench/er_latency.py [--quick] [--json PATH] [--cases abcdef] [--backends cpu triton]

Same as `pvrnn-ros bench` (one implementation: pvrnn_ros/kernels/bench.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pvrnn_ros.commands import bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_arguments(ap)
    return bench.run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
