#!/usr/bin/env python3
"""Real-time factor of the MuJoCo arm sim with the demonstrator driving, per bundled scene.

    python bench/sim_rtf.py [--steps 1000] [--control-dt 0.02] [--render frame.png]

In teacher_learner the teacher follows the demonstrator and the learner follows the teacher's
previous measured positions (a lagging imitator), so both arms move. `--render PATH` saves a
PNG of the two-arm scene if an offscreen GL backend (EGL, then OSMesa) works.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_PROBE = ("import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/>"
          "</worldbody></mujoco>'); r = mujoco.Renderer(m, 16, 16); d = mujoco.MjData(m); "
          "r.update_scene(d); r.render()")


def pick_gl_backend() -> str | None:
    """First of $MUJOCO_GL, egl, osmesa that can render offscreen (probed in a subprocess)."""
    candidates = [os.environ["MUJOCO_GL"]] if os.environ.get("MUJOCO_GL") else []
    candidates += [b for b in ("egl", "osmesa") if b not in candidates]
    for backend in candidates:
        env = dict(os.environ, MUJOCO_GL=backend)
        if subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                          timeout=60).returncode == 0:
            return backend
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000, help="control steps per scene")
    ap.add_argument("--control-dt", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--render", metavar="PATH", help="save a PNG frame of the teacher_learner scene")
    args = ap.parse_args()

    backend = None
    if args.render:
        backend = pick_gl_backend()
        if backend:
            os.environ["MUJOCO_GL"] = backend  # before mujoco is imported

    import numpy as np

    from pvrnn_ros.sim import scene_path
    from pvrnn_ros.sim.arm_sim import ArmSim
    from pvrnn_ros.sim.primitives import Demonstrator

    for scene in ("arm7", "teacher_learner"):
        sim = ArmSim(scene_path(scene), control_dt=args.control_dt)
        driven = sim.robot_joints("teacher_") if scene == "teacher_learner" else sim.joint_names
        follower = sim.robot_joints("learner_") if scene == "teacher_learner" else []
        lo, hi = sim.joint_limits(driven)
        demo = Demonstrator(driven, lo, hi, seed=args.seed)
        sim.reset(positions=dict(zip(driven, demo.sample(0.0))))
        t0 = time.perf_counter()
        for _ in range(args.steps):
            sim.set_targets(demo.sample(sim.time), driven)
            if follower:
                sim.set_targets(sim.positions(driven), follower)
            sim.step()
        wall = time.perf_counter() - t0
        sim_s = args.steps * sim.control_dt
        print(f"{scene}: {args.steps} control steps ({sim_s:.1f} s sim, {sim.n_substeps} physics "
              f"steps each) in {wall:.3f} s wall -> RTF {sim_s / wall:.0f}x")
        if args.render and scene == "teacher_learner":
            if backend is None:
                print("render: no offscreen GL backend works here (tried MUJOCO_GL=egl and osmesa); "
                      "no PNG written")
            else:
                frame = sim.render(960, 720)
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                plt.imsave(args.render, np.ascontiguousarray(frame))
                print(f"render: wrote {args.render} ({frame.shape[1]}x{frame.shape[0]}, MUJOCO_GL={backend})")
        sim.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
