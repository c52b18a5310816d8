#!/usr/bin/env python3
"""Regenerate the bundled example demonstrations: pvrnn_ros/examples/arm7/.

12 episodes x 16 s at 50 Hz, seed 0, synthesized through the MuJoCo arm7 physics
(`pvrnn_ros.sim.synth.synthesize`). Writes episode_XXX.csv + episode_XXX.segments.json and
removes stale episode files first.

    python scripts/make_examples.py [--out pvrnn_ros/examples/arm7]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EPISODES, DURATION_S, RATE_HZ, SEED = 12, 16.0, 50.0, 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "pvrnn_ros" / "examples" / "arm7")
    args = ap.parse_args()

    from pvrnn_ros.sim.synth import synthesize

    args.out.mkdir(parents=True, exist_ok=True)
    for old in list(args.out.glob("episode_*.csv")) + list(args.out.glob("episode_*.segments.json")):
        old.unlink()
    paths = synthesize(args.out, episodes=EPISODES, duration_s=DURATION_S, seed=SEED,
                       scene="arm7", rate_hz=RATE_HZ)
    total = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"wrote {len(paths)} episodes to {args.out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
