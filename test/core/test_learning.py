"""What training must achieve on probabilistic primitive chains, and the meta-prior's signature."""
import numpy as np
import pytest
import torch

from pvrnn_ros.core.config import Config, LayerConfig, ModelConfig
from pvrnn_ros.core.generate import generate, training_sequence
from pvrnn_ros.core.train import Trainer, build_model

from .conftest import PRIMITIVE_RATE, primitive_demos


def posterior_mse(model):
    with torch.no_grad():
        out = model.model.posterior_forward(model.adaptive.mu, model.adaptive.logsigma, None)
        mask = model.step_mask().unsqueeze(-1)
        err = (model.model.coding.decode(out.raw) - model.data) ** 2 * mask
        return float(err.sum() / (mask.sum() * model.data.shape[2]))


def test_training_drives_posterior_reconstruction_error_down(trained):
    first = trained.history["first_epoch"][0]["rec_mse"]
    final = posterior_mse(trained)
    assert final < 0.05 * first, (first, final)
    assert final < 0.01


def _windows(seqs, length=10, stride=2):
    return np.array([s[i:i + length].ravel() for s in seqs for i in range(0, len(s) - length, stride)])


def _mean_nn_distance(queries, reference):
    d = ((queries[:, None, :] - reference[None, :, :]) ** 2).mean(-1)
    return float(np.sqrt(d.min(1)).mean())


def test_prior_generation_produces_primitives_of_the_data(trained):
    data = [training_sequence(trained, i) for i in range(len(trained.sequence_lengths))]
    ref = _windows(data)
    generated = [g for _, g in generate(trained, "prior", count=6, steps=140, seed=1)]
    d_generated = _mean_nn_distance(_windows(generated), ref)
    # null: smooth random motion with each joint's own mean, spread and a primitive-like tempo
    rng = np.random.default_rng(0)
    stacked = np.vstack(data)
    t = np.arange(140) / PRIMITIVE_RATE
    null = [stacked.mean(0) + stacked.std(0) * np.sqrt(2) * np.sin(2 * np.pi * rng.uniform(0.2, 0.6, 7) * t[:, None]
                                                                    + rng.uniform(0, 2 * np.pi, 7)) for _ in range(6)]
    d_null = _mean_nn_distance(_windows(null), ref)
    # every 1 s window the prior produces lies close to some 1 s window of the demonstrations
    assert d_generated < 0.5 * d_null, (d_generated, d_null)
    # and it moves like the data (not a fixed point, not noise)
    spread = np.mean([g.std(0) for g in generated], 0).mean()
    assert 0.4 * stacked.std(0).mean() < spread < 1.6 * stacked.std(0).mean()


def _train_with_w(w, epochs=600):
    cfg = Config(model=ModelConfig(layers=[LayerConfig(d=12, z=2, tau=2.0, w=w)]))
    cfg.data.rate_hz = PRIMITIVE_RATE
    cfg.train.lr = 0.01
    model = build_model(cfg.validate(), primitive_demos(3, 50, seconds=5.0))
    trainer = Trainer(model)
    for _ in range(epochs):
        stats = trainer.epoch()
    with torch.no_grad():
        out = model.model.posterior_forward(model.adaptive.mu, model.adaptive.logsigma, None)
        sigma_p = model.model.prior_sigma_by_layer(out, model.step_mask())[0]
    return {"kl": stats.kl[0], "mse": posterior_mse(model), "sigma_p": sigma_p}


def test_meta_prior_sweep_trades_kl_for_reconstruction():
    """Large w pulls the posterior onto the prior (little information in z, a deterministic model);
    small w lets z carry the data (large KL, small reconstruction error).

    The paper's other signature, large w -> small mean prior sigma, needs far longer training than a
    test affords: after 10k epochs of this set-up w = 1 still sits at sigma_p ~ 0.6 with z unused,
    while w = 1e-3 reaches ~0.17 (see the closing note of issue 2). It is not asserted here."""
    runs = {w: _train_with_w(w) for w in (1.0, 0.01, 1e-4)}
    kl = [runs[w]["kl"] for w in (1.0, 0.01, 1e-4)]
    mse = [runs[w]["mse"] for w in (1.0, 0.01, 1e-4)]
    assert kl[0] < kl[1] < kl[2], runs
    assert kl[0] < 0.1 * kl[2], runs
    assert mse[2] < mse[1] < mse[0], runs
