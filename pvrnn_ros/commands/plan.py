"""pvrnn-ros plan: plan to a goal with a trained model (free-energy minimisation over A)."""
from __future__ import annotations

from pathlib import Path

from ._common import ConfigError, fail, out_dir

HELP = "plan a motion to a goal (joint posture, end-effector point, task class) with a trained model"
DESCRIPTION = (
    "Goal-directed planning by active inference: the last observed steps of --history (default: the "
    "first step of the model's first training sequence) plus --horizon future steps whose only targets "
    "are the goal; Adam on the window's A for B candidate plans at once; the candidate with the lowest "
    "goal free energy wins. Goals: `joints=q1,...,qJ`, `joints.NAME=VALUE`, `end_effector=x,y,z` (a "
    "continuous modality of the model), `task=CLASS` (a categorical one); append `@K` to hold from "
    "future step K and `~TOL` for the tolerance, e.g. `--goal joints.elbow=1.2@20~0.02`. Writes "
    "DIR/plan.npz (times, joint_names, positions [H, J], each modality, free_energy, all candidates), "
    "DIR/plan.csv and PNGs (the plan in joint space, the end-effector path with the goal, the free "
    "energy over iterations)."
)


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint from `pvrnn-ros train`")
    p.add_argument("--goal", action="append", required=True, metavar="NAME=VALUES",
                   help="a goal term (repeat for combinations)")
    p.add_argument("--history", metavar="EPISODE", default=None,
                   help="a demonstration (CSV, NPZ, rosbag2) whose steps so far are the observed past")
    p.add_argument("--past", type=int, default=10, help="observed steps of the history in the window")
    p.add_argument("--horizon", type=int, default=None, help="planned steps (plan.horizon)")
    p.add_argument("--iterations", type=int, default=None, help="Adam steps (plan.iterations)")
    p.add_argument("--candidates", type=int, default=None, help="plans per call (plan.candidates)")
    p.add_argument("--lr", type=float, default=None, help="plan.lr")
    p.add_argument("--backend", default=None, help="plan.backend: auto, reference, cpu, triton")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")


def run(args) -> int:
    import copy

    import numpy as np

    from pvrnn_ros.core.checkpoint import CheckpointError, load_checkpoint
    from pvrnn_ros.core.data import DataError, read_any, resample
    from pvrnn_ros.core.plan import GoalTerm, Planner

    try:
        trained = load_checkpoint(args.model)
        cfg = copy.deepcopy(trained.config.plan)
        for key in ("horizon", "iterations", "candidates", "lr", "backend"):
            if getattr(args, key) is not None:
                setattr(cfg, key, getattr(args, key))
        goal = [GoalTerm.parse(g) for g in args.goal]
        J = trained.layout.n_joints
        if args.history:
            demo = resample(read_any(args.history), trained.rate_hz).select(trained.joint_names)
            history = demo.positions
        else:
            history = trained.normalizer.denormalize(trained.data[0, :1, :J].cpu().double().numpy())
        planner = Planner(trained, cfg, past=args.past)
        plan = planner.plan(history, goal)
    except (CheckpointError, DataError, ConfigError, ValueError) as exc:
        return fail(str(exc))
    out = out_dir(args.out)
    save_plan(plan, out, goal)
    for term, err, ok in zip(goal, plan.goal_errors, plan.reached):
        print(f"goal {term.modality}{'.' + ','.join(term.components) if term.components else ''}"
              f"={','.join(map(str, term.values))}: error {err:.4g} -> {'reached' if ok else 'NOT reached'} "
              f"(tolerance {term.tolerance:g})")
    fe = plan.free_energy
    print(f"free energy {fe['total']:.4g} (evidence {fe['evidence']:.4g}, goal {fe['goal']:.4g}); candidate "
          f"{plan.chosen} of {len(plan.candidates['goal'])}; {plan.iterations} iterations")
    print(f"wrote {out}/plan.npz, plan.csv and PNGs")
    return 0 if all(plan.reached) else 1


def save_plan(plan, out: Path, goal) -> None:
    import numpy as np

    from pvrnn_ros.core.data import write_csv

    mods = {f"modality_{k}": v for k, v in plan.modalities.items()}
    np.savez_compressed(out / "plan.npz", times=plan.times, joint_names=np.array(plan.joint_names),
                        positions=plan.positions, free_energy=np.array([plan.free_energy[k] for k in
                                                                        ("evidence", "goal", "total")]),
                        free_energy_parts=np.array(["evidence", "goal", "total"]), chosen=plan.chosen,
                        losses=plan.losses, goal_errors=np.array(plan.goal_errors),
                        reached=np.array(plan.reached),
                        **{f"candidates_{k}": v for k, v in plan.candidates.items()}, **mods)
    cols, names = [plan.positions], list(plan.joint_names)
    for k, v in plan.modalities.items():
        cols.append(v)
        names += [f"{k}.{i}" for i in range(v.shape[1])]
    write_csv(out / "plan.csv", plan.times, np.concatenate(cols, 1), names)
    _plots(plan, out, goal)


def _plots(plan, out: Path, goal) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 4))
    past_t = (np.arange(len(plan.past)) - len(plan.past) + 1) / (1 / plan.times[0])
    for j, name in enumerate(plan.joint_names):
        line, = ax.plot(plan.times, plan.positions[:, j], label=name)
        ax.plot(past_t, plan.past[:, j], color=line.get_color(), lw=2.5, alpha=0.5)
    for term in goal:
        if term.modality == "joints":
            comps = term.components or plan.joint_names
            for c, v in zip(comps, term.values):
                ax.scatter([plan.times[-1]], [float(v)], marker="*", s=90, color="k", zorder=5)
    ax.axvline(0, color="k", lw=0.7)
    ax.set_xlabel("time from now (s); thick: observed past")
    ax.set_ylabel("joint position")
    ax.set_title("plan in joint space (stars: joint goals)")
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(out / "plan_joints.png", dpi=100)
    plt.close(fig)
    if "end_effector" in plan.modalities:
        ee = plan.modalities["end_effector"]
        fig = plt.figure(figsize=(5.5, 5))
        ax3 = fig.add_subplot(projection="3d")
        ax3.plot(ee[:, 0], ee[:, 1], ee[:, 2], marker=".", label="planned end effector")
        for term in goal:
            if term.modality == "end_effector" and term.components is None:
                g = [float(v) for v in term.values]
                ax3.scatter([g[0]], [g[1]], [g[2]], marker="*", s=150, color="r", label="goal")
        ax3.legend()
        fig.tight_layout()
        fig.savefig(out / "plan_end_effector.png", dpi=100)
        plt.close(fig)
    if plan.losses.size:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogy(plan.losses, color="0.7", lw=0.8)
        ax.semilogy(plan.losses[:, plan.chosen], color="C0", lw=2, label=f"chosen (candidate {plan.chosen})")
        ax.set_xlabel("iteration")
        ax.set_ylabel("window free energy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "plan_free_energy.png", dpi=100)
        plt.close(fig)
