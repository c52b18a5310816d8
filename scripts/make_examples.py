#!/usr/bin/env python3
"""Regenerate the bundled example demonstrations.

pvrnn_ros/examples/arm7/          training set: 12 episodes x 16 s at 50 Hz, seed 0
pvrnn_ros/examples/arm7_heldout/  held-out set for `pvrnn-ros eval`: 4 episodes, seed 1000
Both are synthesized through the MuJoCo arm7 physics (`pvrnn_ros.sim.synth.synthesize`) and
written as episode_XXX.csv + episode_XXX.segments.json; stale episode files are removed first.

    python scripts/make_examples.py [--root pvrnn_ros/examples]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DURATION_S, RATE_HZ = 16.0, 50.0
SETS = {"arm7": (12, 0), "arm7_heldout": (4, 1000)}  # name -> (episodes, seed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT / "pvrnn_ros" / "examples")
    args = ap.parse_args()

    from pvrnn_ros.sim.synth import synthesize

    for name, (episodes, seed) in SETS.items():
        out = args.root / name
        out.mkdir(parents=True, exist_ok=True)
        for old in list(out.glob("episode_*.csv")) + list(out.glob("episode_*.segments.json")):
            old.unlink()
        paths = synthesize(out, episodes=episodes, duration_s=DURATION_S, seed=seed, scene="arm7", rate_hz=RATE_HZ)
        total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        print(f"wrote {len(paths)} episodes to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
