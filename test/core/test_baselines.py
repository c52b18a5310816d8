"""Learned baselines: the generic early-stopping trainer, GRU/LSTM predictors, the GRU classifier."""
import numpy as np
import pytest
import torch
from torch import nn

from pvrnn_ros.core.baselines import (
    IGNORE_LABEL,
    BaselineSettings,
    GRUClassifier,
    fit_gru_classifier,
    fit_predictor,
    masked_cross_entropy,
    split_episodes,
    train_early_stopping,
)


def _sines(n=6, T=60, D=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(T) / 10.0
    out = np.stack([np.stack([0.6 * np.sin(1.5 * t * (1 + 0.3 * j) + rng.uniform(0, 6.3)) for j in range(D)], 1)
                    for _ in range(n)])
    return torch.tensor(out, dtype=torch.float32)


def test_early_stopping_keeps_the_best_validation_weights_and_stops_on_patience():
    # a 1-parameter model whose validation optimum (w = 1) differs from the training optimum (w = 3):
    # training walks past the validation optimum, so validation loss rises and patience must stop it
    torch.manual_seed(0)
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    x = torch.ones(4, 1)

    def loss_fn(m, target):
        return ((m(x) - target) ** 2).mean()

    state, report = train_early_stopping(model, torch.full((4, 1), 3.0), torch.full((4, 1), 1.0), loss_fn,
                                         patience=15, max_epochs=2000, lr=0.05, min_delta=0.0)
    assert report.stopped_early and report.epochs == report.best_epoch + 15 < 2000
    assert report.best_val_loss == min(report.val_curve) == pytest.approx(report.val_curve[report.best_epoch - 1])
    assert abs(float(model.weight.detach()) - 1.0) < 0.1  # the model holds the best weights, not the last
    assert torch.equal(state["weight"], model.weight.detach())
    assert report.seconds > 0 and len(report.val_curve) == report.epochs


def test_early_stopping_reports_reaching_max_epochs_while_improving():
    model = nn.Linear(1, 1, bias=False)
    x = torch.ones(2, 1)
    _, report = train_early_stopping(model, torch.full((2, 1), 5.0), torch.full((2, 1), 5.0),
                                     lambda m, y: ((m(x) - y) ** 2).mean(), patience=10, max_epochs=25, lr=0.01)
    assert report.epochs == 25 and report.best_epoch == 25 and not report.stopped_early


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="hidden_sizes"):
        BaselineSettings(hidden_sizes=()).validate()
    with pytest.raises(ValueError, match="val_fraction = 1.5"):
        BaselineSettings(val_fraction=1.5).validate()
    with pytest.raises(ValueError, match="at least 2 training episodes, got 1"):
        split_episodes(1, 0.25, 0)
    with pytest.raises(ValueError, match="predictor kind = 'rnn'"):
        fit_predictor("rnn", _sines(), [60] * 6, 3, BaselineSettings(max_epochs=2))


def test_split_is_by_episode_and_disjoint():
    train, val = split_episodes(12, 0.25, seed=3)
    assert len(val) == 3 and len(train) == 9 and not set(train) & set(val)
    assert sorted(train + val) == list(range(12))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_predictor_learns_sines_and_chooses_hidden_size_on_validation(kind):
    torch.manual_seed(0)
    data = _sines(n=6, T=60)
    lengths = [60, 60, 55, 60, 50, 60]
    settings = BaselineSettings(hidden_sizes=(4, 24), max_epochs=250, patience=40, lr=1e-2)
    fitted = fit_predictor(kind, data, lengths, horizon=3, settings=settings)
    info = fitted.info
    assert [c["hidden"] for c in info["candidates"]] == [4, 24]
    best = min(info["candidates"], key=lambda c: c["best_val_loss"])
    assert info["hidden"] == best["hidden"] and fitted.model.hidden == best["hidden"]
    assert info["train_episodes"] + info["val_episodes"] == 6
    assert info["seconds_all_candidates"] >= info["seconds"] > 0
    # refit: the chosen size retrained on every episode for its best epoch count
    assert info["refit"]["epochs"] == info["best_epoch"] and info["refit"]["seconds"] > 0
    # far better than predicting "no motion" (zero-order hold) 3 steps ahead on a fresh sequence
    fresh = _sines(n=1, T=60, seed=9)[0].numpy()
    pred = fitted.predict(fresh)
    assert pred.shape == (60, 3, 2)
    err = ((pred[10:-3, 2] - fresh[13:]) ** 2).mean()
    hold = ((fresh[10:-3] - fresh[13:]) ** 2).mean()
    assert err < 0.3 * hold


def test_masked_cross_entropy_ignores_unlabelled_steps():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    labels = torch.tensor([[0, IGNORE_LABEL]])
    expected = -torch.log_softmax(logits[0, 0], -1)[0]
    assert float(masked_cross_entropy(logits, labels)) == pytest.approx(float(expected))


def test_gru_classifier_recognises_frequency_causally():
    # class 0: slow sine, class 1: fast sine; the label switches mid-sequence, the first steps are unlabelled
    rng = np.random.default_rng(0)
    T, N = 80, 8
    inputs = np.zeros((N, T, 1), np.float32)
    labels = np.full((N, T), IGNORE_LABEL)
    for n in range(N):
        switch = int(rng.integers(30, 50))
        first = n % 2
        phase = 0.0
        for t in range(T):
            cls = first if t < switch else 1 - first
            phase += 0.25 if cls == 0 else 1.2
            inputs[n, t, 0] = 0.7 * np.sin(phase)
            if t >= 5:
                labels[n, t] = cls
    torch.manual_seed(0)
    clf, info = fit_gru_classifier(inputs, labels, 2, BaselineSettings(hidden_sizes=(16,), max_epochs=300,
                                                                       patience=50, lr=1e-2))
    assert isinstance(clf, GRUClassifier) and info["hidden"] == 16 and info["epochs"] <= 300
    proba = clf.predict_proba(inputs[0])
    assert proba.shape == (T, 2) and np.allclose(proba.sum(1), 1)
    pred = np.argmax(np.stack([clf.predict_proba(x) for x in inputs]), -1)
    known = labels != IGNORE_LABEL
    assert (pred[known] == labels[known]).mean() > 0.8
    # causal: changing the future leaves the past's probabilities untouched
    changed = inputs[0].copy()
    changed[40:] = 0.0
    assert np.allclose(clf.predict_proba(changed)[:40], proba[:40])
    with pytest.raises(ValueError, match="label 5 is invalid"):
        fit_gru_classifier(inputs, np.full((N, T), 5), 2, BaselineSettings(max_epochs=2))
    with pytest.raises(ValueError, match=r"expected \[T, 1\]"):
        clf.predict_proba(np.zeros((4, 3)))


def test_a_single_training_episode_is_split_by_time():
    fitted = fit_predictor("gru", _sines(n=1, T=80), [80], horizon=3,
                           settings=BaselineSettings(hidden_sizes=(8,), max_epochs=30, patience=10))
    assert fitted.info["split"].startswith("by time") and fitted.info["val_episodes"] == 1
    with pytest.raises(ValueError, match="too short to hold out"):
        fit_predictor("gru", _sines(n=1, T=8), [8], horizon=3, settings=BaselineSettings(max_epochs=2))


def test_restarts_try_each_initialisation_on_the_same_split_and_keep_the_lowest_validation_loss():
    data = _sines(n=6, T=60)
    lengths = [60] * 6
    settings = BaselineSettings(hidden_sizes=(4, 8), max_epochs=40, patience=10, lr=1e-2, seed=2, restarts=3)
    info = fit_predictor("gru", data, lengths, horizon=3, settings=settings).info
    rows = info["candidates"]
    assert [(c["hidden"], c["init_seed"]) for c in rows] == [(h, s) for h in (4, 8) for s in (2, 3, 4)]
    assert len({c["best_val_loss"] for c in rows}) == 6, "each initialisation trains its own model"
    best = min(rows, key=lambda c: c["best_val_loss"])
    assert (info["hidden"], info["init_seed"], info["restarts"]) == (best["hidden"], best["init_seed"], 3)
    # one initialisation of the restarts is exactly the run without restarts of that seed
    single = fit_predictor("gru", data, lengths, horizon=3,
                           settings=BaselineSettings(hidden_sizes=(4, 8), max_epochs=40, patience=10, lr=1e-2,
                                                     seed=2)).info
    assert [c["best_val_loss"] for c in single["candidates"]] == [rows[0]["best_val_loss"], rows[3]["best_val_loss"]]
    assert single["val_episodes"] == info["val_episodes"]
    with pytest.raises(ValueError, match="restarts = 0"):
        BaselineSettings(restarts=0).validate()


def test_evaluate_gives_the_baselines_as_many_restarts_as_the_pvrnn(tmp_path):
    from pvrnn_ros.core.evaluate import fit_learned_baselines
    from pvrnn_ros.core.train import build_model

    from .conftest import sine_demos, small_config

    cfg = small_config()
    cfg.train.restarts = 2
    trained = build_model(cfg, sine_demos(n=4, seconds=3.0))
    quick = BaselineSettings(hidden_sizes=(4,), max_epochs=5, patience=2)
    fitted = fit_learned_baselines(trained, 3, ("gru",), quick)
    assert [c["init_seed"] for c in fitted["gru"].info["candidates"]] == [0, 1]
    quick.restarts = 1  # given explicitly, it wins
    assert len(fit_learned_baselines(trained, 3, ("gru",), quick)["gru"].info["candidates"]) == 1
