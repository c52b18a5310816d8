"""The CPU ER kernels of another git revision against this tree's, side by side in one process:
interleaved rounds over the bench cases, medians of round medians, and the batched cases' ratio to
their B = 1 tick (d / c, i / g, j / h).

    PYTHONPATH=. python bench/kernel_ab.py --rev main --cases cdghij --rounds 5

The other revision's `pvrnn_ros/kernels/cpu.py` is taken with `git show` into a temporary
module (it shares this tree's `pvrnn_ros.core`), so only the kernels differ. `new_1t` is this
tree's batched path on one thread.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("d", "c"), ("i", "g"), ("j", "h"))  # batched case, its B = 1 case


def _old_module(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:pvrnn_ros/kernels/cpu.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    # the copy lives outside the package: its relative imports point back into it
    src = src.replace("from . import ", "from pvrnn_ros.kernels import ")
    folder = Path(tempfile.mkdtemp(prefix="pvrnn_kernel_ab_"))
    path = folder / "cpu_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("cpu_rev", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="main", help="git revision whose kernels are 'old'")
    ap.add_argument("--cases", default="cdghij")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from pvrnn_ros.kernels import cpu as cpu_new
    from pvrnn_ros.kernels.bench import make_problem, scenarios

    old = _old_module(args.rev)
    scs = {s.key: s for s in scenarios()}
    backends = {"old": old.CpuBackend(), "new": cpu_new.CpuBackend(), "new_1t": cpu_new.CpuBackend(parallel=False)}
    problems = {k: make_problem(scs[k]) for k in args.cases}
    for p in problems.values():  # JIT / cache load and warm-up, excluded
        for b in backends.values():
            b.regress(*p)
    torch.set_num_threads(1)
    res: dict = {}
    for _ in range(args.rounds):
        for k, p in problems.items():
            for name, b in backends.items():
                if name == "new_1t" and scs[k].B == 1:
                    continue
                n = 3 if scs[k].B * scs[k].K * scs[k].W > 50000 else 20
                ts = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    b.regress(*p)
                    ts.append((time.perf_counter() - t0) * 1e3)
                res.setdefault((k, name), []).append(statistics.median(ts))
    med = {key: statistics.median(v) for key, v in res.items()}
    print(f"old = {args.rev}, new = this tree; {args.rounds} interleaved rounds, median of round medians")
    for (k, name), v in res.items():
        print(f"({k}) {name:7s} {med[(k, name)]:10.3f} ms  rounds {[round(x, 2) for x in v]}")
    for big, one in PAIRS:
        for name in ("old", "new", "new_1t"):
            b1 = med.get((one, "new" if name == "new_1t" else name))
            if (big, name) in med and b1:
                print(f"ratio ({big})/({one}) {name:7s} {med[(big, name)] / b1:6.1f}x   per window "
                      f"{med[(big, name)] / scs[big].B:8.3f} ms vs B=1 {b1:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
