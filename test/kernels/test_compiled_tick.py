"""The ER engine's compiled tick (`kernels.cpu_stream`: window kept by the CPU backend, one call per
tick) equals the generic path (a `WindowProblem` per tick) and the autograd reference over streams
of ticks: every field of every tick, through start-up, sliding, missing joints, modalities, live
setting changes and resets."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest.importorskip("numba")

from test_backends import _tiny_trained  # noqa: E402

from pvrnn_ros.core.config import ERConfig  # noqa: E402
from pvrnn_ros.core.er import ErrorRegression  # noqa: E402


def _engines(trained, cfg):
    return {
        "compiled": ErrorRegression(trained, dataclasses.replace(cfg, backend="cpu")),
        "generic": ErrorRegression(trained, dataclasses.replace(cfg, backend="cpu"), compiled_tick=False),
        "reference": ErrorRegression(trained, dataclasses.replace(cfg, backend="reference")),
    }


def _assert_ticks_equal(a, b, tol, where):
    assert (a.prediction is None) == (b.prediction is None), where
    assert a.window == b.window and a.iterations == b.iterations, where
    if a.prediction is None:
        return
    close = dict(rtol=tol, atol=tol)
    np.testing.assert_allclose(b.prediction, a.prediction, **close, err_msg=f"{where}: prediction")
    assert (a.spread is None) == (b.spread is None), where
    if a.spread is not None:
        np.testing.assert_allclose(b.spread, a.spread, **close, err_msg=f"{where}: spread")
    np.testing.assert_allclose(b.losses, a.losses, **close, err_msg=f"{where}: losses")
    np.testing.assert_allclose(b.reconstruction, a.reconstruction, **close, err_msg=f"{where}: reconstruction")
    for key in ("reconstruction_error", "free_energy"):
        np.testing.assert_allclose(getattr(b, key), getattr(a, key), **close, err_msg=f"{where}: {key}")
    np.testing.assert_allclose(b.kl_per_layer, a.kl_per_layer, **close, err_msg=f"{where}: kl")
    # Adam divides by the gradient's own size, so where a latent unit barely moves the loss, float32
    # rounding in its gradient moves its mean by a visible step while the outputs agree to 1e-7 (AMD
    # EPYC, residual_correction, tick 15: 3.4e-5 here, predictions 4e-7): the latents get the
    # reference's bound, the outputs keep theirs
    lat = dict(rtol=max(tol, 2e-4), atol=max(tol, 2e-4)) if tol > 0 else close
    for la, lb in zip(a.latent_means, b.latent_means):
        np.testing.assert_allclose(lb, la, **lat, err_msg=f"{where}: latent means")
    assert a.modalities.keys() == b.modalities.keys(), where
    for name, ma in a.modalities.items():
        mb = b.modalities[name]
        assert ma.observed == mb.observed, where
        np.testing.assert_allclose(mb.current, ma.current, **close, err_msg=f"{where}: {name} current")
        np.testing.assert_allclose(mb.prediction, ma.prediction, **close, err_msg=f"{where}: {name} prediction")


def _stream(n=16, joints=3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n)[:, None] * 0.3 + np.arange(joints)[None]) + 0.05 * rng.standard_normal((n, joints))
    x[4, 1] = np.nan  # a missing joint
    x[9] = [3.0, -3.0, 0.0][:joints]  # far outside the training range (clamped)
    return x


SETTINGS = {
    "sampled": dict(sample_posterior=True, samples=4),
    "keep_best_reset_copy": dict(keep_best=True, adam_reset=True, slide_init="copy", samples=0),
    "no_growing": dict(growing_window=False, samples=3, first_iterations=7),
    "residual_correction": dict(residual_decay=0.8, residual_velocity=0.7, adam_reset=True, samples=2),
    "forgetting": dict(forgetting=0.7, adam_reset=True, samples=2),
    "forgetting_no_growing": dict(forgetting=0.5, growing_window=False, keep_best=True, samples=0),
}


@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_compiled_tick_equals_generic_and_reference(output, setting):
    trained = _tiny_trained(output)
    cfg = ERConfig(**{"window": 6, "iterations": 5, "first_iterations": 8, **SETTINGS[setting]})
    engines = _engines(trained, cfg)
    runs = {name: [er.step(obs) for obs in _stream()] for name, er in engines.items()}
    assert sum(t.prediction is not None for t in runs["compiled"]) >= 10
    for i, (c, g, r) in enumerate(zip(runs["compiled"], runs["generic"], runs["reference"])):
        _assert_ticks_equal(g, c, 2e-5, f"tick {i} vs generic")
        _assert_ticks_equal(r, c, 2e-4, f"tick {i} vs reference")


def test_live_changes_follow_the_generic_path():
    trained = _tiny_trained("softmax")
    engines = _engines(trained, ERConfig(window=5, iterations=4, first_iterations=6, samples=2))
    for i, obs in enumerate(_stream(24)):
        if i == 8:  # what er_node does on a live parameter change
            for er in engines.values():
                er.cfg.lr, er.cfg.iterations = 0.05, 7
        ticks = {name: er.step(obs) for name, er in engines.items()}
        _assert_ticks_equal(ticks["generic"], ticks["compiled"], 2e-5, f"tick {i}")
        _assert_ticks_equal(ticks["reference"], ticks["compiled"], 2e-4, f"tick {i}")


def test_reset_is_a_fresh_engine():
    trained = _tiny_trained("tanh")
    cfg = ERConfig(window=4, iterations=3, first_iterations=5, samples=2, backend="cpu")
    used, fresh = ErrorRegression(trained, cfg), ErrorRegression(trained, cfg)
    stream = _stream(20)
    for obs in stream[:12]:
        used.step(obs)
    used.reset()
    for i, obs in enumerate(stream[12:]):
        _assert_ticks_equal(fresh.step(obs), used.step(obs), 0.0, f"tick {i} after reset")


@pytest.mark.parametrize("output", ["tanh", "softmax"])
def test_compiled_tick_with_modalities_observed_and_inferred(tmp_path, output):
    """End effector observed on odd steps only, the task class never: masks, one-hot classes and
    the recognition estimates as the generic path."""
    from test.core.test_modalities import _config, _episode, _write_csvs

    from pvrnn_ros.core.data import load_demonstrations
    from pvrnn_ros.core.train import build_model

    cfg = _config()
    cfg.model.output = output
    cfg.model.softmax_bins = 5
    trained = build_model(cfg, load_demonstrations(_write_csvs(tmp_path), modalities=cfg.data.modalities))
    engines = _engines(trained, ERConfig(window=5, iterations=3, first_iterations=5, samples=3))
    _, joints, ee, _ = _episode(1)
    for t in range(14):
        mods = {"end_effector": ee[t]} if t % 2 else ({"task": "wave"} if t == 6 else None)
        ticks = {name: er.step(joints[t], mods) for name, er in engines.items()}
        assert set(ticks["compiled"].modalities) == {"end_effector", "task"}
        _assert_ticks_equal(ticks["generic"], ticks["compiled"], 2e-5, f"tick {t}")
        _assert_ticks_equal(ticks["reference"], ticks["compiled"], 2e-4, f"tick {t}")


@pytest.mark.parametrize("decay,gain", [(0.0, 0.5), (0.9, 0.0), (0.8, 0.7)])
@pytest.mark.parametrize("samples", [0, 5])
def test_compiled_joint_report_equals_the_engines(decay, gain, samples):
    """`cpu_stream._joint_report` (the compiled tick's report) against `ErrorRegression._joint_report`
    on random windows: joints missing at the newest and the step before, extra modality columns
    that are not joints, one sample or several."""
    from pvrnn_ros.kernels import cpu_stream

    trained = _tiny_trained("tanh")
    er = ErrorRegression(trained, ERConfig(residual_decay=decay, residual_velocity=gain, backend="reference"))
    J = er.n_joints
    rng = np.random.default_rng(int(decay * 10) + samples)
    W, P, S, D = 7, 4, max(1, samples), J + 2
    decoded, obs = rng.normal(size=(W, D)), rng.normal(size=(W, D))
    rollouts = rng.normal(size=(S, P, D))
    observed = (rng.random((W, D)) > 0.3).astype(np.float64) * rng.uniform(0.5, 2.0, (W, D))
    observed[-1, 0] = 0.0  # missing now: no correction for it
    observed[-1, 1], observed[-2, 1] = 1.0, 0.0  # seen now, not before: no velocity term
    sampled = samples > 0
    want = er._joint_report(decoded, rollouts, obs, observed, sampled)
    n = er.trained.normalizer
    got = cpu_stream._joint_report(decoded, rollouts, obs, observed, J, decay, gain, n.lo, n.hi, n.scale, sampled)
    for name, w, g in zip(("prediction", "spread", "reconstruction"), want[:3], got[:3]):
        if w is None:
            assert not sampled and g.size == 0, name
            continue
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12, err_msg="mse")
    if decay > 0:  # the correction reached the prediction: without it the result differs
        plain = dataclasses.replace(er.cfg, residual_decay=0.0)
        er.cfg = plain
        assert not np.allclose(er._joint_report(decoded, rollouts, obs, observed, sampled)[0], want[0])
