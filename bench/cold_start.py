#!/usr/bin/env python3
"""Cold start: seconds from a new Python process to its first ER prediction, with numba's on-disk
cache as `scripts/install.sh` leaves it (kernels precompiled) and with an empty cache, in turn.

    python bench/cold_start.py [--runs 3] [--model runs/train/model.pt]

Without --model a small model is trained first (a few epochs; not timed). Each run is a fresh
process: import, load the checkpoint, build the ER engine, feed steps until the first prediction.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
import numpy as np
from pvrnn_ros.core.checkpoint import load_checkpoint
from pvrnn_ros.core.er import ErrorRegression
trained = load_checkpoint(sys.argv[1])
er = ErrorRegression(trained)
t1 = time.perf_counter()
x = trained.normalizer.denormalize(trained.data[0, :, :trained.layout.n_joints].numpy())
k = 0
while True:
    tick = er.step(x[k % len(x)])
    k += 1
    if tick.prediction is not None:
        break
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "to_first_prediction_s": t2 - t0, "steps": k}))
"""


def one(model: Path, cache_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", CHILD, str(model)], env=env, capture_output=True, text=True,
                         timeout=1200, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else None
        if model is None:
            sys.path.insert(0, str(ROOT))
            from pvrnn_ros.core.config import Config
            from pvrnn_ros.core.data import example_data_dir, load_demonstrations
            from pvrnn_ros.core.train import train

            train(Config(), load_demonstrations(example_data_dir()), Path(tmp) / "m", epochs=5, progress=False)
            model = Path(tmp) / "m" / "model.pt"
        rows = {"installed cache": [], "empty cache": []}
        for i in range(args.runs):  # interleaved: the two conditions see the same machine
            rows["installed cache"].append(one(model, None)["to_first_prediction_s"])
            with tempfile.TemporaryDirectory() as empty:
                rows["empty cache"].append(one(model, empty)["to_first_prediction_s"])
        for name, v in rows.items():
            print(f"{name:16s} first prediction after median {statistics.median(v):6.2f} s "
                  f"(min {min(v):.2f}, max {max(v):.2f}, {len(v)} fresh processes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
