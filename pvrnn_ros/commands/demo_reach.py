"""`pvrnn-ros demo --task reach`: reach demonstrations, train, plan to held-out goals, baselines, report.

Stages: (1) synthesise reach demonstrations in the MuJoCo arm (targets uniform in the reach region);
(2) train a PV-RNN on joints + end effector; (3) fit the goal-conditioned behaviour-cloning baseline
(early stopping); (4) for every held-out goal (inside the region and on its faces): plan with the
PV-RNN, replay the nearest demonstration, roll out the BC policy -- each executed in the sim and
measured with MuJoCo; (5) OUT/report.md, OUT/results.json and PNGs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

# The reach model: joints + end effector at 10 Hz. margin 0.1 widens the normalisation range so that
# goals on the region's faces (beyond the extremes the random targets happened to reach) stay
# inside what the tanh outputs can produce.
REACH_CONFIG = {
    "data": {"rate_hz": 10.0, "margin": 0.1, "modalities": [{"name": "end_effector", "weight": 1.0}]},
    "train": {"lr": 3e-3, "epochs": 4000},
    "plan": {"iterations": 300, "candidates": 8, "goal_weight": 100.0},
}


def reach_config(path: str | None = None):
    from pvrnn_ros.core.config import Config

    return Config.load(path) if path else Config.from_dict(json.loads(json.dumps(REACH_CONFIG)))


def run(args) -> int:
    import torch

    from pvrnn_ros.core.baselines import BaselineSettings
    from pvrnn_ros.core.reach import fit_reach_policy
    from pvrnn_ros.core.train import train
    from pvrnn_ros.sim.arm_sim import ArmSim
    from pvrnn_ros.sim.reach import REACH_REGION, heldout_goals, synthesize_reach
    from pvrnn_ros.sim.reach_eval import (bc_training_episodes, load_reach_data, plan_horizon, run_bc, run_nearest,
                                          run_online, run_pvrnn, summaries)
    from pvrnn_ros.sim.scenes import scene_path

    from ._common import show_progress
    from .demo import _Stage

    q = args.quick
    episodes = args.episodes or (40 if q else 120)
    epochs = args.epochs if args.epochs is not None else (150 if q else None)
    n_goals = args.goals if args.goals is not None else (2 if q else 10)
    if episodes < 4:
        print("pvrnn-ros demo: error: --task reach needs --episodes >= 4 (the BC baseline holds some out)")
        return 2
    if n_goals < 1:
        print(f"pvrnn-ros demo: error: --goals = {n_goals} is invalid: expected at least 1 goal per kind")
        return 2
    settings = BaselineSettings(max_epochs=args.baseline_epochs or (200 if q else 3000),
                                hidden_sizes=(32,) if q else (64, 128))
    progress = show_progress(args.no_progress)
    out = Path(args.out)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(max(1, args.threads))
    cfg = reach_config(args.config)
    if not any(m.name == "end_effector" for m in cfg.data.modalities):
        print("pvrnn-ros demo: error: --task reach needs data.modalities to include end_effector "
              "(goals are end-effector points)")
        return 2
    epochs = cfg.train.epochs if epochs is None else epochs
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    print(f"pvrnn-ros demo --task reach -> {out}/  ({episodes} reach demonstrations, {epochs} epochs, "
          f"{n_goals} + {n_goals} held-out goals; region {REACH_REGION.describe()})")

    with _Stage(timings, "synth", f"1/5 synthesise {episodes} reach demonstrations"):
        synthesize_reach(out / "data", episodes, seed=args.seed, progress=progress)
        data = load_reach_data(out / "data", cfg.data.rate_hz, cfg.data.modalities)
    with _Stage(timings, "train", f"2/5 train the PV-RNN ({epochs} epochs)"):
        cfg.train.threads = max(1, args.threads)
        t0 = time.perf_counter()
        trained = train(cfg, data.demos, out / "model", epochs=epochs, progress=progress)
        pvrnn_seconds = time.perf_counter() - t0
    with _Stage(timings, "baseline", "3/5 fit the goal-conditioned BC policy (early stopping)"):
        eps, reached = bc_training_episodes(data)
        policy = fit_reach_policy(eps, reached, settings, progress=progress)
        print(f"  BC policy: hidden {policy.info['hidden']}, best epoch {policy.info['best_epoch']} of "
              f"{policy.info['epochs']}, validation MSE {policy.info['best_val_mse']:.3g}, "
              f"{policy.info['seconds_all_candidates']:.1f} s")
    goals, labels = heldout_goals(data.region, n_goals, n_goals, seed=args.seed + 12345)
    with _Stage(timings, "evaluate", f"4/5 reach {len(goals)} held-out goals in the sim (4 methods)"):
        sim = ArmSim(scene_path("arm7"))
        home = sim.positions(trained.joint_names)
        H, _ = plan_horizon(data.timing, trained.rate_hz)
        results = run_pvrnn(trained, trained.config.plan, sim, home, goals, labels, data.timing, progress=progress)
        results += run_online(trained, trained.config.plan, sim, home, goals, labels, data.timing, progress=progress)
        results += run_nearest(data, sim, home, goals, labels, progress=progress)
        results += run_bc(policy, trained.joint_names, sim, home, goals, labels, H, trained.rate_hz, progress=progress)
        sim.close()
    summary = summaries(results)
    train_times = {"pvrnn": pvrnn_seconds, "pvrnn_online": pvrnn_seconds, "nearest": 0.0, "bc": policy.info["seconds_all_candidates"]}
    with _Stage(timings, "report", "5/5 report"):
        timings["total"] = time.monotonic() - t_start
        report = write_report(out, results, summary, train_times, timings, trained, policy, data, epochs, args.seed)
    for method, s in summary.items():
        a = s["all"]
        print(f"  {method:8s} success {a['successes']}/{a['goals']}  median final error {a['median_error'] * 100:.1f} cm"
              f"  (train {train_times[method]:.1f} s)")
    print(f"\ndemo done in {time.monotonic() - t_start:.0f} s; report: {report}")
    return 0




def write_report(out: Path, results, summary, train_times, timings, trained, policy, data, epochs, seed) -> Path:
    import numpy as np

    from pvrnn_ros.sim.reach_eval import ONLINE_CANDIDATES, ONLINE_ITERATIONS, ONLINE_LEAD_STEPS

    from .demo_reach_plots import METHOD_NAMES, plot_free_energy, plot_paths

    plot_paths(results, data.region, out / "reach_paths.png")
    plot_free_energy([r for r in results if r.method == "pvrnn"], out / "plan_free_energy.png")
    tol = results[0].outcome.tolerance
    pc = trained.config.plan
    lines = ["# pvrnn-ros demo --task reach", "",
             f"{len(data.demos)} reach demonstrations (targets uniform in {data.region.describe()}, seed {seed}; "
             f"reach {data.timing.reach_s:g} s, hold {data.timing.hold_s:g} s, return {data.timing.return_s:g} s, "
             f"rest {data.timing.rest_s:g} s), model rate {trained.rate_hz:g} Hz. Held-out goals: "
             f"{sum(r.label == 'inside' for r in results if r.method == 'pvrnn')} inside the region (its central 60 %), "
             f"{sum(r.label == 'edge' for r in results if r.method == 'pvrnn')} on its faces. Every trajectory is "
             f"executed in MuJoCo under position control from the home posture, held {1.5:g} s to settle, and the "
             f"`end_effector` site measured; success = final distance <= {tol * 100:g} cm.", "",
             f"PV-RNN: {epochs} epochs; plan: {pc.iterations} Adam iterations, {pc.candidates} candidates, lr {pc.lr:g}, "
             f"goal weight {pc.goal_weight:g}, meta-prior {pc.meta_prior or 'as trained'}; horizon = the reach + hold, "
             f"goal held from the step the reach ends. Online: the same model replanning every step in closed loop "
             f"(warm-started, {ONLINE_ITERATIONS} iterations and {ONLINE_CANDIDATES} candidates per tick, the plan "
             f"commanded {ONLINE_LEAD_STEPS / trained.rate_hz:g} s ahead), the goal due "
             f"when the reach ends, counted from its arrival. BC: MLP (joints, goal) -> next posture, hidden "
             f"{policy.info['hidden']}, input joints perturbed in training (std {policy.info['state_noise']:g}, normalised), "
             f"early stopping (best epoch {policy.info['best_epoch']} of {policy.info['epochs']}). "
             f"Nearest: the demonstration whose end effector at the end of its hold is closest to the goal, "
             f"its recorded joints replayed.",
             "", "| method | training time | success (all) | inside | edge | median / mean / max final error | "
             "median time to reach | s per goal |", "|---|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        a = s["all"]
        part = lambda k: f"{s[k]['successes']}/{s[k]['goals']}" if k in s else "-"  # noqa: E731
        ttr = "-" if a["median_time_to_reach"] is None else f"{a['median_time_to_reach']:.2f} s"
        lines.append(f"| {METHOD_NAMES[method]} | {train_times[method]:.1f} s | {a['successes']}/{a['goals']} "
                     f"({a['success_rate']:.0%}) | {part('inside')} | {part('edge')} | {a['median_error'] * 100:.1f} / "
                     f"{a['mean_error'] * 100:.1f} / {a['max_error'] * 100:.1f} cm | {ttr} | {s['seconds_per_goal']:.3f} |")
    lines += ["", "## Per goal (final error in cm; time to reach in s, - = never within tolerance)", "",
              "| goal (m) | kind | " + " | ".join(METHOD_NAMES[m] for m in summary) + " |",
              "|---|---|" + "---|" * len(summary)]
    by = {m: [r for r in results if r.method == m] for m in summary}
    first = next(iter(by.values()))
    for i, r0 in enumerate(first):
        cells = []
        for m in summary:
            o = by[m][i].outcome
            ttr = "-" if o.time_to_reach is None else f"{o.time_to_reach:.2f}"
            refused = " (not planned: outside the model's outputs)" if by[m][i].extra.get("refused") else ""
            cells.append(f"{o.final_error * 100:.1f} ({ttr}){'' if o.success else ' ✗'}{refused}")
        lines.append(f"| ({r0.goal[0]:.3f}, {r0.goal[1]:.3f}, {r0.goal[2]:.3f}) | {r0.label} | " + " | ".join(cells) + " |")
    lines += ["", "![end-effector paths](reach_paths.png)", "", "![plan free energy](plan_free_energy.png)", "",
              "| stage | wall time |", "|---|---|"] + [f"| {k} | {v:.1f} s |" for k, v in timings.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    dump = {"summary": summary, "training_seconds": train_times, "timings": timings,
            "bc": {k: v for k, v in policy.info.items() if k != "candidates"},
            "goals": [{"method": r.method, "goal": r.goal.tolist(), "label": r.label, **r.outcome.as_dict(),
                       "settled": r.extra.get("settled"), "seconds": r.seconds,
                       "refused": r.extra.get("refused")} for r in results]}
    (out / "results.json").write_text(json.dumps(dump, indent=1, default=float))
    np.savez_compressed(out / "paths.npz", **{f"{r.method}_{i % len(first):02d}": r.end_effector
                                              for i, r in enumerate(results)})
    return out / "report.md"
