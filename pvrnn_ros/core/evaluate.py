"""Evaluation of online error regression against baselines, on exactly the same steps.

Methods:
  er             the trained PV-RNN with error regression (the config's ER settings)
  no_er          the same PV-RNN and engine with zero ER iterations: the posterior never adapts
                 to the observations, so it runs on its prior (the paper's model lacking the procedure)
  hold           zero-order hold: x[t+h] = x[t]
  const_velocity x[t+h] = x[t] + h (x[t] - x[t-1])
  gru, lstm      a GRU / LSTM trained on the same demonstrations to convergence (validation split by
                 episode, early stopping, hidden size chosen on validation: core/baselines.py),
                 reading the stream and predicting the next P steps directly
predicted[t, h-1] is the prediction made after observing step t of step t+h.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .baselines import (BaselineSettings, FittedPredictor, const_velocity_predictions, fit_predictor,
                        hold_predictions)
from .checkpoint import TrainedModel
from .config import ERConfig
from .data import Demonstration, resample
from .er import ErrorRegression

METHOD_LABELS = {
    "er": "PV-RNN + ER",
    "no_er": "PV-RNN without ER",
    "hold": "zero-order hold",
    "const_velocity": "constant velocity",
    "gru": "GRU predictor (early-stopped)",
    "lstm": "LSTM predictor (early-stopped)",
}
LEARNED_BASELINES = ("gru", "lstm")


# ------------------------------------------------------------------------------------- baselines
def fit_learned_baselines(trained: TrainedModel, horizon: int, kinds: tuple[str, ...],
                          settings: BaselineSettings | None = None, progress: bool = False) -> dict[str, FittedPredictor]:
    """GRU / LSTM predictors on the PV-RNN's own training data (normalised), trained to convergence."""
    if trained.config.train.threads:  # the same threads the PV-RNN trained with
        torch.set_num_threads(trained.config.train.threads)
    settings = settings or BaselineSettings()
    if settings.restarts is None:  # as many restarts as the PV-RNN had (train.restarts)
        settings = replace(settings, restarts=trained.config.train.restarts)
    data = trained.data.detach().cpu()[..., :trained.layout.n_joints]  # joints (modalities are not predicted here)
    return {kind: fit_predictor(kind, data, trained.sequence_lengths, horizon, settings, progress)
            for kind in kinds}


def pvrnn_training_info(trained: TrainedModel) -> dict:
    """The PV-RNN's own training time, from the checkpoint's history (per-epoch seconds)."""
    seconds = trained.history.get("seconds") or []
    info = {"epochs": int(trained.epoch), "seconds": float(sum(seconds)) if seconds else None,
            "note": None if seconds else "the checkpoint holds no per-epoch times"}
    restarts = trained.history.get("restarts")  # train.restarts: every restart's training is the cost
    if restarts:
        info["restarts"] = len(restarts["seeds"])
        # the winner may have trained on (--resume) since it was chosen
        later = (info["seconds"] or 0.0) - restarts.get("chosen_train_seconds", info["seconds"] or 0.0)
        info["seconds_all_restarts"] = float(restarts["train_seconds"]) + max(0.0, later)
    return info


# ------------------------------------------------------------------------------------- ER runs
def run_er(trained: TrainedModel, obs: np.ndarray, cfg: ERConfig, progress=None) -> dict:
    """Feed `obs` [T, D] (raw units) tick by tick; collect predictions and per-tick diagnostics."""
    er = ErrorRegression(trained, cfg)
    T, D = obs.shape
    P = cfg.horizon
    predicted = np.full((T, P, D), np.nan)
    spread = np.full((T, P, D), np.nan)
    L = len(trained.model.z_sizes)
    free_energy, rec, kl, ms = np.full(T, np.nan), np.full(T, np.nan), np.full((T, L), np.nan), np.zeros(T)
    # recognition: every categorical modality is left unobserved, so ER infers it
    recognition = {m.name: np.full((T, len(m.components)), np.nan) for m in trained.layout.modalities
                   if m.kind == "categorical"}
    for t in range(T):
        t0 = time.perf_counter()
        tick = er.step(obs[t])
        ms[t] = 1000 * (time.perf_counter() - t0)
        for name, probs in tick.recognition.items():
            recognition[name][t] = probs
        if tick.prediction is not None:
            predicted[t] = tick.prediction
            if tick.spread is not None:
                spread[t] = tick.spread
            free_energy[t], rec[t], kl[t] = tick.free_energy, tick.reconstruction_error, tick.kl_per_layer
        if progress is not None:
            progress.update(1)
    return {"predicted": predicted, "spread": spread, "free_energy": free_energy, "reconstruction": rec,
            "kl": kl, "tick_ms": ms, "backend": er.backend.name, "recognition": recognition}


def _truth(obs: np.ndarray, horizon: int) -> np.ndarray:
    """truth[t, h-1] = obs[t + h] (NaN past the end)."""
    T, D = obs.shape
    out = np.full((T, horizon, D), np.nan)
    for h in range(1, horizon + 1):
        out[: T - h, h - 1] = obs[h:]
    return out


def _load_segments(demo: Demonstration) -> list[float]:
    """Switch times (s) from a `<name>.segments.json` sidecar written by `pvrnn-ros synth`, if any."""
    if not demo.source:
        return []
    path = Path(demo.source).with_suffix(".segments.json")
    if not path.exists():
        return []
    segments = json.loads(path.read_text())
    return [float(s["start_time"]) for s in segments[1:]]


# ------------------------------------------------------------------------------------- evaluate
def evaluate(
    trained: TrainedModel,
    demos: list[Demonstration],
    out_dir: str | Path,
    er_config: ERConfig | None = None,
    progress: bool = True,
    baselines: BaselineSettings | None = None,
    methods: tuple[str, ...] = ("er", "no_er", "hold", "const_velocity", "gru", "lstm"),
    plots: bool = True,
    fitted_baselines: dict[str, FittedPredictor] | None = None,
) -> dict:
    """Run every method over `demos` (raw units, any joint order) and write predictions, metrics and PNGs.

    `baselines` sets how the GRU / LSTM are trained (core/baselines.py); `fitted_baselines` passes
    ones already trained on this model's data (a sweep reuses them across trials).
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(er_config or trained.config.er)
    cfg.validate("er", n_layers=len(trained.model.z_sizes))
    P = cfg.horizon
    episodes = [resample(d.select(trained.joint_names), trained.rate_hz) for d in demos]
    switch_times = [_load_segments(d) for d in demos]
    total_ticks = sum(len(e) for e in episodes)
    wanted = tuple(k for k in LEARNED_BASELINES if k in methods)
    learned = dict(fitted_baselines or {})
    missing = tuple(k for k in wanted if k not in learned)
    if missing:
        learned.update(fit_learned_baselines(trained, P, missing, baselines, progress))
    learned = {k: learned[k] for k in wanted}
    for kind, fitted in learned.items():
        if fitted.model.horizon != P:
            raise ValueError(f"the fitted {kind} baseline predicts {fitted.model.horizon} steps, expected {P}")
    n_er_runs = sum(m in methods for m in ("er", "no_er"))
    bar = tqdm(total=total_ticks * n_er_runs, desc="error regression", unit="tick", disable=not progress)
    sq_err = {m: np.zeros(P) for m in methods}
    count = np.zeros(P)
    switch_curves = []
    per_episode = []
    tick_ms = []
    recognised = []
    for ep, demo, switches in zip(episodes, demos, switch_times):
        obs = ep.positions
        preds: dict[str, np.ndarray] = {}
        er_run = None
        if "er" in methods:
            er_run = run_er(trained, obs, cfg, bar)
            preds["er"] = er_run["predicted"]
            tick_ms.append(er_run["tick_ms"][1:])  # the first tick runs first_iterations
            recognised.append(er_run["recognition"])
        if "no_er" in methods:
            preds["no_er"] = run_er(trained, obs, replace(cfg, iterations=0, first_iterations=0, samples=0), bar)["predicted"]
        if "hold" in methods:
            preds["hold"] = hold_predictions(obs, P)
        if "const_velocity" in methods:
            preds["const_velocity"] = const_velocity_predictions(obs, P)
        for kind, fitted in learned.items():
            preds[kind] = trained.normalizer.denormalize(fitted.predict(trained.normalizer.normalize(obs)))
        truth = _truth(obs, P)
        # the same steps for every method: where all of them predicted and the truth exists
        valid = np.all(np.isfinite(truth), axis=-1)
        for p in preds.values():
            valid &= np.all(np.isfinite(p), axis=-1)
        ep_metrics = {"episode": ep.name, "steps": len(obs)}
        for m, p in preds.items():
            err = ((p - truth) ** 2).mean(-1)  # [T, P]
            sq_err[m] += np.where(valid, err, 0).sum(0)
            ep_metrics[m] = (np.where(valid, err, 0).sum(0) / np.maximum(valid.sum(0), 1)).tolist()
        count += valid.sum(0)
        per_episode.append(ep_metrics)
        if er_run is not None and switches:
            switch_curves += _switch_error_curves(preds["er"], truth, valid, switches, trained.rate_hz)
        extra = {f"predicted_{m}": p for m, p in preds.items() if m != "er"}
        np.savez_compressed(out / "predictions" / f"{ep.name}.npz", observed=obs,
                            predicted=preds.get("er", np.full_like(truth, np.nan)),
                            joint_names=np.array(trained.joint_names), rate_hz=trained.rate_hz, **extra)
        if plots and er_run is not None:
            _plot_episode(out, ep, er_run, trained, cfg)
    bar.close()
    mse = {m: (sq_err[m] / np.maximum(count, 1)).tolist() for m in methods}
    all_ms = np.concatenate(tick_ms) if tick_ms else np.zeros(0)
    metrics = {
        "horizon": P,
        "rate_hz": trained.rate_hz,
        "episodes": len(episodes),
        "steps_compared_per_horizon": count.astype(int).tolist(),
        "units": "rad^2 (mean over joints) on the model's joints",
        "er_config": {k: v for k, v in cfg.__dict__.items()},
        "methods": {m: {"label": METHOD_LABELS[m], "mse_by_horizon": mse[m]} for m in methods},
        "er_tick_ms": {"median": float(np.median(all_ms)) if all_ms.size else None,
                       "p90": float(np.percentile(all_ms, 90)) if all_ms.size else None,
                       "backend": er_run["backend"] if tick_ms else None},
        "training": {"pvrnn": pvrnn_training_info(trained), **{k: f.info for k, f in learned.items()}},
        "per_episode": per_episode,
    }
    if switch_curves:
        curves = np.array(switch_curves)
        metrics["er_error_around_switches"] = {
            "offsets_steps": list(range(-SWITCH_BEFORE, SWITCH_AFTER + 1)),
            "mse_h1": np.nanmean(curves, 0).tolist(),
            "switches": len(curves),
        }
    if recognised and any(recognised):
        from .recognition import evaluate_recognition, recognition_table

        metrics["recognition"] = evaluate_recognition(trained, episodes, recognised, out, plots=plots,
                                                      progress=progress, baselines=baselines)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "metrics.md").write_text(metrics_table(metrics)
                                    + (recognition_table(metrics["recognition"]) if metrics.get("recognition") else ""))
    if plots:
        _plot_error_vs_horizon(out / "error_vs_horizon.png", metrics)
        if "er_error_around_switches" in metrics:
            _plot_switch(out / "error_around_switches.png", metrics)
    return metrics


SWITCH_BEFORE, SWITCH_AFTER = 5, 15


def _switch_error_curves(pred, truth, valid, switches, rate) -> list[np.ndarray]:
    """One-step-ahead ER error at steps relative to each primitive switch (step index of the switch = 0)."""
    err = np.where(valid[:, 0], ((pred[:, 0] - truth[:, 0]) ** 2).mean(-1), np.nan)
    T = len(err)
    curves = []
    for s in switches:
        k = int(round(s * rate))
        lo, hi = k - SWITCH_BEFORE, k + SWITCH_AFTER
        if lo < 1 or hi > T:
            continue
        # prediction made at t is of step t + 1: align on the predicted step
        curves.append(err[lo - 1:hi])
    return curves


def metrics_table(metrics: dict, horizons: list[int] | None = None) -> str:
    P = metrics["horizon"]
    horizons = horizons or sorted({1, 2, 3, 5, min(10, P), P} & set(range(1, P + 1)))
    lines = [f"MSE by prediction horizon ({metrics['units']}; {metrics['episodes']} episodes at "
             f"{metrics['rate_hz']:g} Hz; the same steps for every method)", "",
             "| method | " + " | ".join(f"h={h}" for h in horizons) + " |",
             "|---|" + "---|" * len(horizons)]
    methods = metrics["methods"]
    best = {h: min(v["mse_by_horizon"][h - 1] for v in methods.values()) for h in horizons}
    for m, v in methods.items():
        cells = []
        for h in horizons:
            x = v["mse_by_horizon"][h - 1]
            cells.append(f"**{x:.3g}**" if x == best[h] else f"{x:.3g}")
        lines.append(f"| {v['label']} | " + " | ".join(cells) + " |")
    tick = metrics.get("er_tick_ms") or {}
    if tick.get("median") is not None:
        lines += ["", f"ER tick: median {tick['median']:.1f} ms, p90 {tick['p90']:.1f} ms "
                      f"(backend {tick['backend']}, W = {metrics['er_config']['window']}, "
                      f"K = {metrics['er_config']['iterations']})"]
    training = metrics.get("training") or {}
    if training:
        lines += ["", "| model | training | epochs | seconds |", "|---|---|---|---|"]
        pv = training.get("pvrnn") or {}
        if pv:
            secs = f"{pv['seconds']:.1f}" if pv.get("seconds") is not None else "not recorded"
            how = "full BPTT, fixed epochs"
            if pv.get("restarts"):
                how += f", the best ER predictor of {pv['restarts']} restarts (train.restarts)"
                secs += f" ({pv['seconds_all_restarts']:.1f} with every restart)"
            lines.append(f"| PV-RNN | {how} | {pv['epochs']} | {secs} |")
        for kind in LEARNED_BASELINES:
            g = training.get(kind)
            if g:
                lines.append(f"| {kind.upper()} {g['hidden']} ({g['weights']} weights) | early stopping on "
                             f"{g['val_episodes']} validation episode(s) ({g['split']}), best epoch {g['best_epoch']}, hidden from "
                             f"{', '.join(str(h) for h in dict.fromkeys(c['hidden'] for c in g['candidates']))}"
                             + (f", {g['restarts']} initialisations each" if g.get("restarts", 1) > 1 else "")
                             + (f", refit on all episodes for {g['refit']['epochs']} epochs" if g.get("refit") else "")
                             + f" | {g['epochs']}{' + ' + str(g['refit']['epochs']) if g.get('refit') else ''} | "
                             f"{g['seconds']:.1f} ({g['seconds_all_candidates']:.1f} with every candidate) |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- sweeps
def sweep(trained: TrainedModel, demos: list[Demonstration], out_dir: str | Path, grid: dict[str, list],
          base: ERConfig | None = None, progress: bool = True) -> list[dict]:
    """ER metrics for every combination in `grid` (keys: window, iterations, lr), plus the baselines once."""
    import itertools

    out = Path(out_dir)
    base = copy.deepcopy(base or trained.config.er)
    keys = list(grid)
    rows = []
    baseline = evaluate(trained, demos, out / "baselines", base, progress,
                        methods=("no_er", "hold", "const_velocity"), plots=False)
    for values in itertools.product(*(grid[k] for k in keys)):
        cfg = replace(base, **dict(zip(keys, values)))
        tag = "_".join(f"{k}{v:g}" for k, v in zip(keys, values))
        m = evaluate(trained, demos, out / tag, cfg, progress, methods=("er",), plots=False)
        rows.append({**dict(zip(keys, values)), "mse_by_horizon": m["methods"]["er"]["mse_by_horizon"],
                     "tick_ms_median": m["er_tick_ms"]["median"]})
    P = base.horizon
    hs = sorted({1, 3, 5, min(10, P)} & set(range(1, P + 1)))
    lines = ["| " + " | ".join(keys) + " | " + " | ".join(f"h={h}" for h in hs) + " | tick ms |",
             "|" + "---|" * (len(keys) + len(hs) + 1)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:g}" for k in keys) + " | "
                     + " | ".join(f"{r['mse_by_horizon'][h - 1]:.3g}" for h in hs) + f" | {r['tick_ms_median']:.1f} |")
    for m, v in baseline["methods"].items():
        lines.append(f"| {v['label']} " + "| " * (len(keys) - 1) + "| "
                     + " | ".join(f"{v['mse_by_horizon'][h - 1]:.3g}" for h in hs) + " | |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps({"rows": rows, "baselines": baseline["methods"]}, indent=2))
    return rows


# ------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_episode(out: Path, ep: Demonstration, run: dict, trained: TrainedModel, cfg: ERConfig) -> None:
    plt = _plt()
    obs, pred = ep.positions, run["predicted"]
    T, D = obs.shape
    rate = trained.rate_hz
    t = np.arange(T) / rate
    n = min(D, 7)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.5 * n + 0.8), sharex=True, squeeze=False)
    every = max(1, cfg.horizon // 2)
    for j in range(n):
        ax = axes[j, 0]
        ax.plot(t, obs[:, j], color="k", lw=1.5, label="observed")
        for s in range(0, T, every):  # the prediction fan: P-step predictions from every few ticks
            if np.isfinite(pred[s, 0, j]):
                tt = (s + np.arange(1, cfg.horizon + 1)) / rate
                ax.plot(tt, pred[s, :, j], color="tab:red", lw=0.8, alpha=0.6,
                        label="ER prediction" if s == 0 else None)
                if np.isfinite(run["spread"][s, 0, j]):
                    ax.fill_between(tt, pred[s, :, j] - run["spread"][s, :, j], pred[s, :, j] + run["spread"][s, :, j],
                                    color="tab:red", alpha=0.1)
        ax.set_ylabel(trained.joint_names[j], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("time [s]")
    fig.suptitle(f"{ep.name}: observed vs ER predictions (next {cfg.horizon} steps)")
    fig.tight_layout()
    fig.savefig(out / f"{ep.name}_prediction.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    axes[0].plot(t, run["free_energy"], label="free energy (window)")
    axes[0].plot(t, run["reconstruction"], label="reconstruction MSE (window)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    for i in range(run["kl"].shape[1]):
        axes[1].plot(t, run["kl"][:, i], label=f"KL layer {i + 1}")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    axes[1].set_xlabel("time [s]")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"{ep.name}: free energy and KL per layer during ER")
    fig.tight_layout()
    fig.savefig(out / f"{ep.name}_free_energy.png", dpi=90)
    plt.close(fig)


def _plot_error_vs_horizon(path: Path, metrics: dict) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    h = np.arange(1, metrics["horizon"] + 1)
    for m, v in metrics["methods"].items():
        ax.plot(h, v["mse_by_horizon"], marker="o", label=v["label"], lw=2 if m == "er" else 1.2)
    ax.set_yscale("log")
    ax.set_xlabel(f"prediction horizon [steps at {metrics['rate_hz']:g} Hz]")
    ax.set_ylabel("MSE [rad²]")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title("prediction error vs horizon (held-out demonstrations)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_switch(path: Path, metrics: dict) -> None:
    plt = _plt()
    s = metrics["er_error_around_switches"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(s["offsets_steps"], s["mse_h1"], marker="o")
    ax.axvline(0, color="k", ls="--", lw=1)
    ax.set_xlabel("steps after a primitive switch")
    ax.set_ylabel("one-step ER prediction MSE [rad²]")
    ax.set_title(f"ER error around {s['switches']} primitive switches")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
