"""Compile the CPU kernels into numba's on-disk cache, so the first ER tick and the first training
epoch of a new process load them instead of compiling (minutes on a busy 2-core machine).

`scripts/install.sh` runs it once after installing: `python -m pvrnn_ros.kernels.precompile`.
The cache lives beside the kernel modules (`pvrnn_ros/kernels/__pycache__`), or in
NUMBA_CACHE_DIR where that is set; it stays valid until the kernel sources change.
"""
from __future__ import annotations

import sys
import time


def main() -> int:
    try:
        from . import cpu, cpu_train
    except ImportError as exc:  # numba missing: the reference backends still work
        print(f"pvrnn_ros kernels not precompiled: {exc}")
        return 0
    t0 = time.perf_counter()
    er_s = cpu.warmup()
    train_s = cpu_train.warmup()
    print(f"pvrnn_ros kernels compiled into numba's cache: ER {er_s:.1f} s, training {train_s:.1f} s "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
