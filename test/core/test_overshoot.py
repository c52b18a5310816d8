"""train.overshoot_steps: the prior rolled k steps from every posterior state reconstructs the
demonstration there. The term against independent prior rollouts (model.rollout) from each state,
its gradient reaching the weights and A, the trainer's backend choice and the config's checks."""
import pytest
import torch

from pvrnn_ros.core.config import ConfigError
from pvrnn_ros.core.model import State, overshoot_reconstruction
from pvrnn_ros.core.train import Trainer, build_model, training_mask

from .conftest import sine_demos, small_config


def _rollout_sum(model, out, target, jm, sm, steps):
    """The term by brute force: one `model.rollout` per start step."""
    B, T, _ = out.d.shape
    per_k = torch.zeros(steps, dtype=out.d.dtype)
    for s in range(T - 1):
        raw, _, _ = model.rollout(State(out.states_h[:, s], out.d[:, s]), steps)
        for k in range(1, steps + 1):
            if s + k < T:
                rec = model.coding.reconstruction(raw[:, k - 1:k], target[:, s + k:s + k + 1], jm[:, s + k:s + k + 1])
                per_k[k - 1] += (rec * sm[:, s + k:s + k + 1]).sum() / B
    return per_k.mean()


@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("coding", ["tanh", "softmax"])
def test_overshoot_equals_prior_rollouts_from_every_state(posterior, coding):
    torch.manual_seed(0)
    cfg = small_config(posterior=posterior, output=coding)
    trained = build_model(cfg, sine_demos())
    model, A = trained.model, trained.adaptive
    with torch.no_grad():  # A away from zero, so every step's posterior state differs
        A.mu.normal_(0.0, 0.5)
    target, jm, sm = model.coding.target(trained.data), training_mask(trained), trained.step_mask()
    out = model.posterior_forward(A.mu, A.logsigma, None, keep_h=True)
    for steps in (1, 3):
        got = overshoot_reconstruction(model, out, target, jm, sm, steps)
        want = _rollout_sum(model, out, target, jm, sm, steps)
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7), (steps, float(got), float(want))
    # steps past the sequence's end: only the k that reach a step count
    T = out.d.shape[1]
    assert torch.isfinite(overshoot_reconstruction(model, out, target, jm, sm, T + 3))


def test_overshoot_gradient_reaches_the_weights_and_A():
    cfg = small_config(posterior="d+A")
    trained = build_model(cfg, sine_demos())
    model, A = trained.model, trained.adaptive
    with torch.no_grad():
        A.mu.normal_(0.0, 0.5)
    out = model.posterior_forward(A.mu, A.logsigma, None, keep_h=True)
    loss = overshoot_reconstruction(model, out, model.coding.target(trained.data), training_mask(trained),
                                    trained.step_mask(), 4)
    loss.backward()
    prior_w = model.layers[0].prior.weight.grad
    assert prior_w is not None and prior_w.abs().sum() > 0  # the prior is what the term trains
    assert A.mu.grad.abs().sum() > 0  # and through the start states, A
    assert A.mu.grad[:, -1].abs().sum() == 0  # the last step starts no overshoot


def test_trainer_runs_overshoot_on_autograd_and_lowers_the_prior_rollout_error():
    def fit(steps):
        cfg = small_config(posterior="d+A")
        cfg.train.overshoot_steps = steps
        cfg.train.lr = 3e-3
        trained = build_model(cfg.validate(), sine_demos())
        trainer = Trainer(trained)
        for _ in range(400):
            trainer.epoch()
        out = trained.model.posterior_forward(trained.adaptive.mu, trained.adaptive.logsigma, None, keep_h=True)
        with torch.no_grad():
            err = overshoot_reconstruction(trained.model, out, trained.model.coding.target(trained.data),
                                           training_mask(trained), trained.step_mask(), 5)
        return trainer.backend, float(err)

    backend_off, err_off = fit(0)
    backend_on, err_on = fit(5)
    assert backend_on == "reference"  # auto picks autograd: the fused trainer has no such term
    assert err_on < 0.9 * err_off, (err_on, err_off)  # 0.82 when written


def test_overshoot_config_is_checked():
    cfg = small_config()
    cfg.train.overshoot_steps = -1
    with pytest.raises(ConfigError, match="train.overshoot_steps = -1"):
        cfg.validate()
    cfg = small_config()
    cfg.train.overshoot_weight = float("nan")
    with pytest.raises(ConfigError, match="train.overshoot_weight"):
        cfg.validate()
    cfg = small_config()
    cfg.train.overshoot_steps, cfg.train.backend = 3, "cpu"
    with pytest.raises(ConfigError, match="fused cpu trainer has no overshoot term"):
        cfg.validate()
