"""Random restarts (train.restarts): several seeds trained, each scored by ER on its training
demonstrations, the best kept; the score against evaluate's own predictions; resuming; stale
scores; the sweep's trial with restarts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvrnn_ros.core.checkpoint import load_checkpoint
from pvrnn_ros.core.config import ConfigError, TrainConfig
from pvrnn_ros.core.restarts import SCORE, SUMMARY, er_prediction_error, train_restarts
from pvrnn_ros.core.train import train

from .conftest import sine_demos, small_config


def _config(restarts=3, epochs=12):
    cfg = small_config()
    cfg.train.epochs, cfg.train.restarts, cfg.train.seed = epochs, restarts, 5
    cfg.er.horizon, cfg.er.window, cfg.er.iterations, cfg.er.first_iterations, cfg.er.samples = 4, 6, 3, 5, 0
    return cfg.validate()


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_restarts_train_every_seed_and_keep_the_best_er_predictor(tmp_path):
    demos = sine_demos(n=3, seconds=3.0)
    best = train(_config(), demos, tmp_path, progress=False)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    rows = summary["restarts"]
    assert [r["seed"] for r in rows] == [5, 6, 7]
    assert all(r["epoch"] == 12 and len(r["er_mse_by_horizon"]) == 4 and r["train_seconds"] > 0 for r in rows)
    scores = [r["score"] for r in rows]
    assert len(set(scores)) == 3, "different seeds must give different models"
    chosen = rows[int(np.argmin(scores))]["seed"]
    assert summary["chosen_seed"] == chosen == best.config.train.seed
    for r in rows:  # each score is what the restart's own checkpoint scores now
        ckpt = load_checkpoint(tmp_path / "restarts" / f"seed_{r['seed']}" / "model.pt")
        np.testing.assert_allclose(np.mean(er_prediction_error(ckpt, demos)), r["score"], rtol=1e-12)
    kept = load_checkpoint(tmp_path / "model.pt")
    assert _same_weights(kept, load_checkpoint(tmp_path / "restarts" / f"seed_{chosen}" / "model.pt"))
    assert (tmp_path / "loss.png").exists()
    # eval reports what every restart cost, next to the winner's own training
    from pvrnn_ros.core.evaluate import pvrnn_training_info

    info = pvrnn_training_info(kept)
    assert info["restarts"] == 3
    np.testing.assert_allclose(info["seconds_all_restarts"], sum(r["train_seconds"] for r in rows))
    assert info["seconds"] < info["seconds_all_restarts"]
    # trained on after the choice (--resume): that time counts too
    more = train(_config(), None, tmp_path, epochs=15, resume=True, progress=False)
    later = pvrnn_training_info(more)
    np.testing.assert_allclose(later["seconds_all_restarts"] - info["seconds_all_restarts"],
                               later["seconds"] - info["seconds"])
    assert later["seconds"] > info["seconds"]


def test_the_score_is_evaluates_error_in_normalised_units(tmp_path):
    """er_prediction_error against the predictions `pvrnn-ros eval` writes (raw units), normalised
    here with the model's normaliser."""
    from pvrnn_ros.core.evaluate import evaluate

    demos = sine_demos(n=2, seconds=3.0)
    cfg = _config(restarts=1)
    trained = train(cfg, demos, tmp_path / "run", progress=False)
    evaluate(trained, demos, tmp_path / "eval", progress=False, methods=("er",), plots=False)
    P = cfg.er.horizon
    sq, n = np.zeros(P), np.zeros(P)
    for demo in demos:
        saved = np.load(tmp_path / "eval" / "predictions" / f"{demo.name}.npz")
        obs, pred = trained.normalizer.normalize(saved["observed"]), trained.normalizer.normalize(saved["predicted"])
        for t in range(len(obs)):
            for h in range(1, P + 1):
                if t + h < len(obs):
                    sq[h - 1] += np.mean((pred[t, h - 1] - obs[t + h]) ** 2)
                    n[h - 1] += 1
    np.testing.assert_allclose(er_prediction_error(trained, demos), sq / n, rtol=1e-9)
    # without a growing window the first W - 1 ticks predict nothing: they are not scored, and
    # the rest are finite
    trained.config.er.growing_window = False
    assert all(np.isfinite(er_prediction_error(trained, demos)))


def test_a_model_whose_er_diverges_scores_inf(tmp_path):
    demos = sine_demos(n=2, seconds=3.0)
    trained = train(_config(restarts=1), demos, tmp_path, progress=False)
    with torch.no_grad():
        next(trained.model.parameters()).fill_(float("nan"))
    assert er_prediction_error(trained, demos) == [float("inf")] * 4


def test_resume_reuses_finished_restarts_and_continues_a_stopped_one(tmp_path):
    demos = sine_demos(n=3, seconds=3.0)
    cfg = _config(restarts=2)
    first = train(cfg, demos, tmp_path / "a", progress=False)
    # the same restarts, but the second stopped half way (as Ctrl-C leaves it)
    partial = _config(restarts=1)
    partial.train.seed = 6
    train(partial, demos, tmp_path / "b" / "restarts" / "seed_6", epochs=6, progress=False)
    train(_config(restarts=1), demos, tmp_path / "b" / "restarts" / "seed_5", progress=False)
    seed5_before = load_checkpoint(tmp_path / "b" / "restarts" / "seed_5" / "model.pt")
    resumed = train_restarts(cfg, demos, tmp_path / "b", resume=True, progress=False)
    seed5_after = load_checkpoint(tmp_path / "b" / "restarts" / "seed_5" / "model.pt")
    assert len(seed5_after.history["loss"]) == len(seed5_before.history["loss"]) == 12  # reused, not retrained
    seed6 = load_checkpoint(tmp_path / "b" / "restarts" / "seed_6" / "model.pt")
    assert seed6.epoch == 12 and len(seed6.history["loss"]) == 12  # continued from epoch 6
    # a stopped-and-resumed restart is the uninterrupted one: the same choice and weights
    assert resumed.config.train.seed == first.config.train.seed
    assert _same_weights(resumed, first)


def test_a_fresh_run_ignores_an_earlier_runs_scores(tmp_path):
    demos = sine_demos(n=3, seconds=3.0)
    cfg = _config(restarts=2)
    stale = tmp_path / "restarts" / "seed_6"
    stale.mkdir(parents=True)
    (stale / SCORE).write_text(json.dumps({"seed": 6, "epoch": 12, "score": -1.0}))
    train(cfg, demos, tmp_path, progress=False)
    rows = json.loads((tmp_path / SUMMARY).read_text())["restarts"]
    assert all(r["score"] > 0 for r in rows)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_restarts_are_validated(bad):
    with pytest.raises(ConfigError, match=r"train\.restarts"):
        TrainConfig(restarts=bad).validate()


def test_a_sweep_trial_with_restarts_reports_every_restarts_training_time(tmp_path):
    from pvrnn_ros.core.data import write_csv
    from pvrnn_ros.core.sweep import SweepData, _spec, expand_grid, run_trial

    data = tmp_path / "data"
    for demo in sine_demos(n=3, seconds=3.0):
        write_csv(data / f"{demo.name}.csv", demo.times, demo.positions, demo.joint_names)
    trial = expand_grid(_config(restarts=1), {"train.restarts": [2]}, [0])[0]
    record = run_trial(_spec(trial, SweepData(str(data), str(data)), tmp_path / "sweep", None))
    assert record["status"] == "ok", record.get("traceback")
    out = tmp_path / "sweep" / "trials" / trial.trial_id
    rows = json.loads((out / SUMMARY).read_text())["restarts"]
    assert [r["seed"] for r in rows] == [0, 1]
    np.testing.assert_allclose(record["train_seconds"], sum(r["train_seconds"] for r in rows))
    assert record["train_restarts"] == 2
    from pvrnn_ros.core.sweep import _train_restarts

    legacy = {k: v for k, v in record.items() if k != "train_restarts"}  # written before the field
    assert _train_restarts(legacy, tmp_path / "sweep") == 2
    # the sweep's baselines get as many initialisations as the most restarted trial at the rate
    from pvrnn_ros.core.baselines import BaselineSettings
    from pvrnn_ros.core.sweep import sweep_baselines

    other = {**record, "trial_id": "other", "train_restarts": 3, "model": str(out / "model.pt")}
    quick = BaselineSettings(hidden_sizes=(4,), max_epochs=5, patience=2)
    found = sweep_baselines({"a": record, "b": other}, SweepData(str(data), str(data)), tmp_path / "sweep", quick)
    (entry,) = found.values()
    assert [c["init_seed"] for c in entry["training"]["gru"]["candidates"]] == [0, 1, 2]
