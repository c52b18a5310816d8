"""Random restarts: train several models from consecutive seeds and keep the one whose error
regression predicts best.

How well a trained PV-RNN predicts in ER varies with its training seed far more than with most
settings (docs/results.md, sessions 15-16). `train.restarts` = N trains N models, from
train.seed, train.seed + 1, ..., and scores each by ER run over its own training demonstrations,
with the model's er.* settings: the prediction's MSE at every horizon 1..er.horizon, in the
model's normalised units, averaged over the horizons. The lowest score wins.

The score uses the training demonstrations, so no episode is held out of training. ER infers the
window's A afresh there, without the training posterior. On the bundled examples the score ranked
the seeds close to their held-out error (Spearman 0.83 over 12 seeds at 10 Hz, 0.76 over 8 at
20 Hz; docs/results.md, session 16).

Layout: DIR/restarts/seed_<s>/ holds each model as it trained (model.pt, loss.png, score.json),
DIR/model.pt is the winner (its history also holds every restart's score and training time), and
DIR/restarts.json holds every score and the choice. A stopped run keeps every finished restart;
`--resume` reuses them and continues the interrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from .checkpoint import TrainedModel, load_checkpoint, save_checkpoint
from .config import Config
from .data import Demonstration, resample

SCORE = "score.json"
SUMMARY = "restarts.json"


def er_prediction_error(trained: TrainedModel, demos: list[Demonstration]) -> list[float]:
    """ER's prediction MSE at horizons 1..er.horizon over `demos`, normalised units, mean over
    the joints, with the model's own er.* settings (one ER stream per demonstration). A model
    whose ER predicts a non-finite value where the truth is known scores inf at every horizon."""
    from .evaluate import _truth, run_er

    cfg = trained.config.er
    P = cfg.horizon
    sq, count = np.zeros(P), np.zeros(P)
    norm = trained.normalizer.normalize
    # without a growing window ER predicts nothing until the window is full
    first = 0 if cfg.growing_window else cfg.window - 1
    for demo in demos:
        obs = resample(demo.select(trained.joint_names), trained.rate_hz).positions
        predicted = norm(run_er(trained, obs, cfg)["predicted"])[first:]  # [T, P, J]
        truth = norm(_truth(obs, P))[first:]  # NaN past the end and where a joint is missing
        known = np.isfinite(truth).all(-1)  # [T, P]
        if not np.isfinite(predicted[known]).all():  # diverged (or failed to predict): this model loses
            return [math.inf] * P
        sq += np.where(known, ((predicted - truth) ** 2).mean(-1), 0.0).sum(0)
        count += known.sum(0)
    if not count.all():
        raise ValueError(f"the demonstrations are too short to score a {P}-step prediction "
                         f"(er.horizon = {P}): ER needs at least {P + 1} steps")
    return (sq / count).tolist()


def train_restarts(config: Config, demos: list[Demonstration], out_dir: str | Path, epochs: int | None = None,
                   progress: bool = True, device: str = "cpu", resume: bool = False) -> TrainedModel:
    """Train config.train.restarts models from consecutive seeds, score each with
    `er_prediction_error` on `demos`, save the best as out_dir/model.pt and return it. With
    `resume`, a restart already trained to `epochs` in out_dir/restarts/ is reused and one stopped
    early continues (from its own checkpoint and config); without it every restart trains afresh.
    If Ctrl-C stops a restart, that restart is returned unfinished and nothing is chosen."""
    from .train import Trainer, build_model

    out = Path(out_dir)
    n = config.train.restarts
    target = config.train.epochs if epochs is None else epochs
    rows = []
    for seed in range(config.train.seed, config.train.seed + n):
        run_dir = out / "restarts" / f"seed_{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if resume and (run_dir / "model.pt").exists():
            trained = load_checkpoint(run_dir / "model.pt", device)
        else:
            (run_dir / SCORE).unlink(missing_ok=True)  # a score of an earlier run's model is stale
            cfg = copy.deepcopy(config)
            cfg.train.seed = seed
            trained = build_model(cfg, demos, device)
        if trained.epoch < target:
            print(f"restart {seed - config.train.seed + 1}/{n} (train.seed {seed})", flush=True)
            trained = Trainer(trained).run(target, run_dir, progress)
            if trained.epoch < target:  # Ctrl-C: saved; --resume continues here
                print(f"restarts stopped at seed {seed}, epoch {trained.epoch}: --resume continues", flush=True)
                return trained
        rows.append(_score(trained, demos, run_dir, seed, time.perf_counter() - started))
    if not any(math.isfinite(r["score"]) for r in rows):
        raise ValueError(f"every restart's ER predicted non-finite values (seeds {[r['seed'] for r in rows]}): "
                         "the models diverged; lower train.lr or set train.grad_clip")
    best = min(rows, key=lambda r: r["score"])
    chosen = out / "restarts" / f"seed_{best['seed']}"
    winner = load_checkpoint(chosen / "model.pt", device)
    # what `pvrnn-ros eval` reports as the training cost: every restart, not the winner alone
    winner.history["restarts"] = {"seeds": [r["seed"] for r in rows], "scores": [r["score"] for r in rows],
                                  "train_seconds": float(sum(r["train_seconds"] for r in rows)),
                                  "chosen_train_seconds": best["train_seconds"]}
    save_checkpoint(winner, out / "model.pt")
    if (chosen / "loss.png").exists():
        shutil.copyfile(chosen / "loss.png", out / "loss.png")
    summary = {"chosen_seed": best["seed"], "score": "ER prediction MSE on the training demonstrations, "
               "normalised units, mean over horizons 1..er.horizon", "restarts": rows}
    (out / SUMMARY).write_text(json.dumps(summary, indent=1))
    print("restarts, ER prediction MSE on the training demonstrations: "
          + ", ".join(f"seed {r['seed']} {r['score']:.4g}" for r in rows) + f" -> seed {best['seed']}", flush=True)
    return winner


def _score(trained: TrainedModel, demos: list[Demonstration], run_dir: Path, seed: int, seconds: float) -> dict:
    """The restart's row, from run_dir/score.json when it scored this epoch already."""
    path = run_dir / SCORE
    if path.exists():
        try:
            row = json.loads(path.read_text())
            if row.get("epoch") == trained.epoch and "score" in row:
                return row
        except ValueError:
            pass  # a damaged score is computed again
    by_horizon = er_prediction_error(trained, demos)
    row = {"seed": seed, "epoch": trained.epoch, "score": float(np.mean(by_horizon)),
           "er_mse_by_horizon": by_horizon,
           "train_seconds": float(sum(trained.history.get("seconds", []))), "seconds_this_run": seconds}
    path.write_text(json.dumps(row, indent=1))
    return row
