"""Error regression: the engine on a model trained on probabilistic primitive chains."""
import numpy as np
import pytest
import torch

from pvrnn_ros.core.baselines import BaselineSettings
from pvrnn_ros.core.config import ERConfig
from pvrnn_ros.core.er import ErrorRegression
from pvrnn_ros.core.evaluate import evaluate

from .conftest import primitive_demos


def one_step_errors(er, obs):
    errs = np.full(len(obs), np.nan)
    prev = None
    for t, x in enumerate(obs):
        if prev is not None:
            errs[t] = float(np.mean((prev - x) ** 2))
        prev = er.step(x).prediction[0]
    return errs


def test_er_lowers_window_loss_over_iterations(trained):
    er = ErrorRegression(trained)
    obs = primitive_demos(1, 100)[0].positions
    drops = []
    for t in range(40):
        tick = er.step(obs[t])
        if t >= 12:
            drops.append(tick.losses[-1] < tick.losses[0])
    assert np.mean(drops) > 0.9, "ER iterations must lower the window loss on nearly every tick"


def test_er_on_training_sequence_approaches_posterior_reconstruction(trained):
    cfg = ERConfig(window=12, iterations=30, first_iterations=60, lr=0.1, horizon=4, backend="reference")
    er = ErrorRegression(trained, cfg)
    n = trained.sequence_lengths[0]
    data = trained.normalizer.denormalize(trained.data[0, :n].numpy())
    recs = [er.step(x).reconstruction_error for x in data[:60]]
    with torch.no_grad():
        out = trained.model.posterior_forward(trained.adaptive.mu[:1], trained.adaptive.logsigma[:1], None)
        posterior_mse = float(((trained.model.coding.decode(out.raw)[0, :60] - trained.data[0, :60]) ** 2).mean())
    er_mse = float(np.mean(recs[20:]))
    assert er_mse < 5 * posterior_mse + 2e-3, (er_mse, posterior_mse)
    # and far better than the model running on its prior
    no_er = ErrorRegression(trained, ERConfig(window=12, iterations=0, first_iterations=0, backend="reference"))
    prior_mse = float(np.mean([no_er.step(x).reconstruction_error for x in data[:60]][20:]))
    assert er_mse < 0.3 * prior_mse


def test_prediction_error_spikes_at_a_switch_then_recovers(trained):
    a, b = primitive_demos(2, 200)
    s = 60
    stream = np.vstack([a.positions[:s], b.positions[35:95]])  # jump to another demonstration mid-stream
    err = one_step_errors(ErrorRegression(trained), stream)
    before = np.nanmean(err[s - 12:s])
    spike = np.nanmax(err[s:s + 2])
    after = np.nanmean(err[s + 8:s + 20])
    assert spike > 5 * before, (before, spike)
    assert after < 0.25 * spike, (spike, after)


def test_masked_joints_do_not_affect_the_loss(trained):
    from pvrnn_ros.core.window import WindowProblem
    from pvrnn_ros.kernels.reference import window_loss

    model = trained.model
    W, Z = 10, model.z_total
    x = torch.rand(1, W, 7) - 0.5
    mask = torch.ones(1, W, 7)
    mask[0, :, 2] = 0
    mask[0, 4, :] = 0
    x_other = x.clone()
    x_other[0, :, 2] = 40.0  # what a missing joint would do if it were fed as a number
    x_other[0, 4, :] = -40.0
    a_mu = (0.3 * torch.randn(1, W, Z)).requires_grad_(True)
    a_ls = torch.zeros(1, W, Z, requires_grad=True)
    er = ErrorRegression(trained)
    results = []
    for target in (x, x_other):
        problem = WindowProblem(model, er.fw, *model.zero_state(1), target, mask, er.kl_w, er.kl_w1, True, None, 0.1, 1)
        loss = window_loss(problem, a_mu, a_ls, None).sum()
        results.append((loss.detach(), *torch.autograd.grad(loss, (a_mu, a_ls))))
    for u, v in zip(*results):
        assert torch.equal(u, v)
    # and the engine turns NaN into a masked joint, never a number
    obs = primitive_demos(1, 300)[0].positions[:20]
    obs[:, 2] = np.nan
    for o in obs:
        tick = er.step(o)
    assert np.all(np.isfinite(tick.losses)) and float(er.mask[:, 2].sum()) == 0.0


@pytest.mark.parametrize("kind", ["extreme", "constant", "all_missing"])
def test_no_nan_on_extreme_or_constant_inputs(trained, kind):
    er = ErrorRegression(trained)
    rng = np.random.default_rng(0)
    for t in range(30):
        if kind == "extreme":
            x = rng.choice([-1e6, 1e6, 1e30], size=7)
        elif kind == "constant":
            x = np.full(7, 0.3)
        else:
            x = np.full(7, np.nan)
        tick = er.step(x)
        assert np.all(np.isfinite(tick.prediction))
        assert np.isfinite(tick.free_energy) and all(np.isfinite(tick.kl_per_layer))
        assert np.all(np.isfinite(er.a_mu.numpy())) and np.all(np.isfinite(er.a_ls.numpy()))


def test_wrong_dimension_is_a_clear_error(trained):
    er = ErrorRegression(trained)
    with pytest.raises(ValueError, match="observation has 5 values, expected 7"):
        er.step(np.zeros(5))


def test_settings_variants_run(trained):
    obs = primitive_demos(1, 400)[0].positions[:25]
    for kw in [dict(adam_reset=True), dict(keep_best=True), dict(growing_window=False), dict(slide_init="copy"),
               dict(samples=4), dict(meta_prior=[0.1, 0.1]), dict(sample_posterior=True)]:
        cfg = ERConfig(window=8, iterations=5, first_iterations=5, horizon=5, backend="reference", **kw)
        er = ErrorRegression(trained, cfg)
        ticks = [er.step(x) for x in obs]
        if kw.get("growing_window") is False:
            assert ticks[0].prediction is None and ticks[7].prediction is not None
        if kw.get("samples"):
            assert ticks[-1].spread.shape == (5, 7) and np.all(ticks[-1].spread > 0)
        if kw.get("keep_best"):
            assert all(t.losses.size == 5 for t in ticks)
        assert ticks[-1].prediction.shape == (5, 7)


def test_evaluate_against_baselines(trained, tmp_path):
    held_out = primitive_demos(3, 500, seconds=12.0)
    m = evaluate(trained, held_out, tmp_path, progress=False,
                 baselines=BaselineSettings(hidden_sizes=(16,), max_epochs=60, patience=20))
    mse = {k: np.array(v["mse_by_horizon"]) for k, v in m["methods"].items()}
    assert set(mse) == {"er", "no_er", "hold", "const_velocity", "gru", "lstm"}
    training = m["training"]
    assert training["pvrnn"]["epochs"] == trained.epoch
    for kind in ("gru", "lstm"):
        assert training[kind]["hidden"] == 16 and 1 <= training[kind]["best_epoch"] <= training[kind]["epochs"] <= 60
    for h in (3, 5, 8):
        assert mse["er"][h - 1] < mse["no_er"][h - 1]
        assert mse["er"][h - 1] < mse["const_velocity"][h - 1]
    f = np.load(tmp_path / "predictions" / "ep500.npz")
    T = f["observed"].shape[0]
    assert f["predicted"].shape == (T, 8, 7) and list(f["joint_names"]) == [f"j{j}" for j in range(7)]
    # predicted[t, h-1] is the prediction of step t+h made after step t: check one against a fresh ER run
    er = ErrorRegression(trained)
    for t in range(6):
        tick = er.step(f["observed"][t])
    assert np.allclose(f["predicted"][5], tick.prediction)
    for png in ("error_vs_horizon.png", "ep500_prediction.png", "ep500_free_energy.png"):
        assert (tmp_path / png).stat().st_size > 5000
    assert "| PV-RNN + ER |" in (tmp_path / "metrics.md").read_text()


def test_hypotheses_with_no_spread_are_the_single_hypothesis_engine(trained):
    obs = primitive_demos(1, 410)[0].positions[:30]
    base = dict(window=8, iterations=5, first_iterations=10, horizon=5, samples=0, backend="reference")
    one = ErrorRegression(trained, ERConfig(**base))
    three = ErrorRegression(trained, ERConfig(**base, hypotheses=3, hypothesis_spread=0.0))
    for t, x in enumerate(obs):
        a, b = one.step(x), three.step(x)
        # float32: batched and single products round differently (by CPU and BLAS build), and once
        # the window slides the carried state passes that on from tick to tick: seen on an Intel
        # Xeon, 1e-7 over the first window, growing to 1e-4 by tick 30. A wrong hypothesis or Adam
        # state would be off by far more.
        strict = t < base["window"]
        np.testing.assert_allclose(b.prediction, a.prediction, rtol=1e-4, atol=2e-5 if strict else 5e-4)
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-4 if strict else 2e-3, atol=1e-6)
        assert b.hypothesis_losses.shape == (3,) and np.ptp(b.hypothesis_losses) < 1e-6 * abs(b.losses[-1])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_hypotheses_keep_the_carried_fit_as_one_and_pick_the_lowest(trained, backend):
    """Hypothesis 0 is exactly what the one-hypothesis engine computes from the same state; the
    winner is the lowest free energy, and after a jump to another demonstration some perturbed
    hypothesis wins."""
    import copy

    a, b = primitive_demos(2, 420)
    stream = np.vstack([a.positions[:40], b.positions[50:80]])
    cfg = ERConfig(window=10, iterations=8, first_iterations=20, horizon=5, samples=0, backend=backend,
                   sample_posterior=True)
    single = ErrorRegression(trained, cfg, compiled_tick=False)
    wins = []
    for t, x in enumerate(stream):
        if t >= 12:
            multi = copy.deepcopy(single)
            multi.cfg.hypotheses, multi.cfg.hypothesis_spread = 4, 1.0
            m = multi.step(x)
            s = single.step(x)  # same generator state: hypothesis 0 drew the same posterior noise
            np.testing.assert_allclose(m.hypothesis_losses[0], s.losses[-1], rtol=1e-5)
            assert m.hypothesis_losses[m.hypothesis] == m.hypothesis_losses.min()
            np.testing.assert_allclose(m.losses[-1], m.hypothesis_losses.min(), rtol=1e-12)
            assert m.hypothesis_losses.min() <= s.losses[-1] * (1 + 1e-6)
            wins.append(m.hypothesis)
        else:
            single.step(x)
    assert any(w != 0 for w in wins), "no perturbed hypothesis ever fitted better"
    assert all(w in range(4) for w in wins)


def test_hypotheses_run_in_the_evaluation_and_are_validated(trained):
    with pytest.raises(ValueError, match="er.hypotheses"):
        ERConfig(hypotheses=0).validate()
    with pytest.raises(ValueError, match="er.hypothesis_spread"):
        ERConfig(hypothesis_spread=float("nan")).validate()
    cfg = ERConfig(window=8, iterations=5, first_iterations=5, horizon=5, samples=4, backend="cpu", hypotheses=3)
    er = ErrorRegression(trained, cfg)
    assert er.stream is None  # several hypotheses: the generic path, batched in the backend
    ticks = [er.step(x) for x in primitive_demos(1, 430)[0].positions[:20]]
    assert ticks[-1].prediction.shape == (5, 7) and np.all(np.isfinite(ticks[-1].prediction))
    assert {t.hypothesis for t in ticks} <= {0, 1, 2}


def _paired_runs(trained, obs, **correction):
    """The same stream through an engine without and one with the residual correction (same seed)."""
    base = ERConfig(window=10, iterations=10, first_iterations=30, horizon=6, samples=0, backend="reference",
                    residual_decay=0.0, residual_velocity=0.0)
    plain, corrected = ErrorRegression(trained, base), ErrorRegression(trained, ERConfig(**{**base.__dict__, **correction}))
    return [(plain.step(x), corrected.step(x)) for x in obs]


def test_residual_correction_adds_the_newest_residual_and_its_change(trained):
    obs = primitive_demos(1, 600)[0].positions[:30].copy()
    obs[20, 2] = np.nan  # joint 2 missing at the newest step of tick 20, and so from v at tick 21
    decay, gain = 0.8, 0.6
    h = np.arange(1, 7)[:, None]
    ticks = _paired_runs(trained, obs, residual_decay=decay, residual_velocity=gain)
    for t, (plain, corr) in enumerate(ticks):
        # the regression is untouched: the same fit, the same window reconstruction
        np.testing.assert_allclose(corr.losses, plain.losses, rtol=1e-6)
        np.testing.assert_allclose(corr.reconstruction, plain.reconstruction, rtol=1e-6, atol=1e-9)
        r = np.where(np.isfinite(obs[t]), obs[t] - plain.reconstruction, 0.0)
        # diff / decay^h = r + gain * h * v: a line in h through r (v: the residual's change, from
        # this tick's reconstruction of the step before, which the tick does not report)
        line = (corr.prediction - plain.prediction) / decay ** h
        slope = line[1] - line[0]
        np.testing.assert_allclose(line, r + h * slope, rtol=1e-4, atol=1e-6, err_msg=f"tick {t}")
        if t == 0 or t == 21:  # no step before / the step before lacks joint 2
            assert np.all(np.abs(slope[2 if t == 21 else slice(None)]) < 1e-9), (t, slope)
        elif t != 20:
            assert np.all(np.abs(slope) > 0), (t, slope)
    assert np.all(ticks[20][1].prediction[:, 2] == ticks[20][0].prediction[:, 2])  # no correction when missing
    assert np.any(ticks[20][1].prediction[:, 0] != ticks[20][0].prediction[:, 0])


def test_residual_correction_lowers_short_horizon_error_on_held_out_chains(trained):
    def mse_by_horizon(pairs, obs, which):
        P = 6
        err = np.zeros(P)
        n = np.zeros(P)
        for t, pair in enumerate(pairs):
            for k in range(P):
                if t + k + 1 < len(obs):
                    err[k] += np.mean((pair[which].prediction[k] - obs[t + k + 1]) ** 2)
                    n[k] += 1
        return err / n

    obs = primitive_demos(1, 700)[0].positions[:120]
    pairs = _paired_runs(trained, obs, residual_decay=0.9)
    plain, corrected = mse_by_horizon(pairs, obs, 0), mse_by_horizon(pairs, obs, 1)
    assert corrected[0] < 0.7 * plain[0], (plain, corrected)
    assert corrected[5] < 1.2 * plain[5], (plain, corrected)


@pytest.mark.parametrize("key,value", [("residual_decay", 1.5), ("residual_decay", -0.1), ("residual_decay", float("nan")),
                                       ("residual_velocity", -1.0), ("residual_velocity", float("inf"))])
def test_bad_residual_correction_settings_are_named(key, value):
    with pytest.raises(ValueError, match=f"er.{key}"):
        ERConfig(**{key: value}).validate()


class _RecordingBackend:
    """The reference backend, keeping every window problem it is asked to regress."""

    def __init__(self, model):
        from pvrnn_ros.kernels import get_backend

        self.inner = get_backend("reference", model)
        self.problems = []

    def regress(self, problem, a_mu, a_ls, adam):
        self.problems.append(problem)
        return self.inner.regress(problem, a_mu, a_ls, adam)


def test_forgetting_weighs_each_window_step_by_its_age(trained):
    """er.forgetting f: the regressed problem's weight of a step `age` steps before the newest is
    f^age times its mask (0 where a joint is missing), for a growing and for a full window."""
    obs = primitive_demos(1, 440)[0].positions[:14].copy()
    obs[9, 2] = np.nan
    spy = _RecordingBackend(trained.model)
    er = ErrorRegression(trained, ERConfig(window=6, iterations=2, first_iterations=2, horizon=3, samples=0,
                                           forgetting=0.5), backend=spy)
    for x in obs:
        er.step(x)
    for tick, problem in enumerate(spy.problems):
        newest = tick  # the index of the newest observation in `obs`
        n = problem.joint_mask.shape[1]
        assert n == min(tick + 1, 6)
        for row in range(n):
            step = newest - (n - 1 - row)
            expected = 0.5 ** (n - 1 - row) * np.isfinite(obs[step]).astype(np.float32)
            np.testing.assert_allclose(problem.joint_mask[0, row].numpy(), expected, rtol=1e-6,
                                       err_msg=f"tick {tick}, window row {row}")


def test_forgetting_fits_the_newest_steps_closer(trained):
    """A strong forgetting factor lowers the newest step's reconstruction error (what the
    prediction starts from) against equal weights, over a stream, on the same model."""
    obs = primitive_demos(1, 450)[0].positions[:60]
    errors = {}
    for f in (1.0, 0.3):
        er = ErrorRegression(trained, ERConfig(window=12, iterations=10, first_iterations=30, horizon=3, samples=0,
                                               residual_decay=0.0, forgetting=f, backend="cpu"))
        ticks = [er.step(x) for x in obs]
        errors[f] = np.mean([np.mean((t.reconstruction - x) ** 2) for t, x in zip(ticks[12:], obs[12:])])
    assert errors[0.3] < 0.9 * errors[1.0], errors


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, float("nan")])
def test_forgetting_is_validated(bad):
    with pytest.raises(ValueError, match=r"er\.forgetting"):
        ERConfig(forgetting=bad).validate()
