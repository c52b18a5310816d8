"""Modalities in every backend: outputs mixing tanh dimensions, softmax-coded joints and
categorical (task) softmaxes, with per-dimension weighted masks, equal the autograd reference
(ER regress, the window pass, hand-derived gradients, the training kernel), at awkward sizes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import EXTRA, random_data, random_model, random_problem, rel_err  # noqa: E402

from pvrnn_ros.core.model import free_energy  # noqa: E402
from pvrnn_ros.core.window import reference_window_pass  # noqa: E402
from pvrnn_ros.kernels.reference import ReferenceBackend, window_loss  # noqa: E402

pytest.importorskip("numba")
from pvrnn_ros.kernels import cpu_train  # noqa: E402
from pvrnn_ros.kernels.cpu import CpuBackend  # noqa: E402

MODALITIES = [k for k in EXTRA if k != "none"]
TOL = 1e-4


def test_coding_layout_and_one_hot():
    model = random_model(output="softmax", n_joints=2, bins=[3, 4], extra="cat5+ee1+cat2")
    c = model.coding
    assert c.kind == "softmax" and c.n_dims == 5 and c.bins == [3, 4, 5, 1, 2] and c.out_dim == 15
    assert c.dim_kinds == ["softmax", "softmax", "categorical", "tanh", "categorical"]
    x = torch.tensor([[0.1, -0.2, 3.0, 0.4, 1.0]])
    t = c.target(x)
    assert torch.equal(t[0, 2], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))  # class 3 of 5
    assert torch.equal(t[0, 4, :2], torch.tensor([0.0, 1.0]))
    assert t[0, 3, 0] == pytest.approx(0.4) and torch.all(t[0, 3, 1:] == 0)  # tanh value in bin 0
    raw = torch.randn(1, 15)
    dec = c.decode(raw)
    assert dec[0, 3] == pytest.approx(torch.tanh(raw[0, c.tanh_unit[3]]).item())
    probs = c.probabilities(raw, 2)
    assert probs.shape == (1, 5) and float(probs.sum()) == pytest.approx(1.0)
    assert dec[0, 2] == float(probs.argmax())
    with pytest.raises(ValueError, match="not categorical"):
        c.probabilities(raw, 0)


@pytest.mark.parametrize("extra", MODALITIES)
@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("posterior", ["A", "d+A"])
def test_cpu_regress_matches_reference(extra, output, posterior):
    model = random_model(d=(7, 5), z=(2, 3), output=output, posterior=posterior, bottom_up=True, n_joints=3,
                         extra=extra, seed=len(extra))
    for B, W, K in ((1, 1, 3), (3, 17, 4)):
        problem, a_mu, a_ls, adam = random_problem(model, B=B, W=W, K=K, use_eps=True, seed=B + W)
        res = CpuBackend().regress(problem, a_mu, a_ls, adam)
        ref = ReferenceBackend().regress(problem, a_mu, a_ls, adam)
        assert rel_err(res.losses, ref.losses) < TOL
        assert rel_err(res.a_mu, ref.a_mu) < TOL and rel_err(res.a_ls, ref.a_ls) < TOL
        assert rel_err(res.adam.v_mu, ref.adam.v_mu) < TOL


@pytest.mark.parametrize("extra", MODALITIES)
@pytest.mark.parametrize("output", ["tanh", "softmax"])
def test_cpu_gradient_matches_autograd(extra, output):
    model = random_model(d=(7, 5, 3), z=(2, 1, 3), tau=(2.0, 4.0, 8.0), output=output, posterior="d+A",
                         bottom_up=True, n_joints=4, extra=extra, seed=7, dtype=torch.float64)
    problem, a_mu, a_ls, _ = random_problem(model, B=2, W=9, K=1, use_eps=True, seed=4, dtype=torch.float64)
    mu, ls = a_mu.clone().requires_grad_(True), a_ls.clone().requires_grad_(True)
    loss = window_loss(problem, mu, ls, problem.eps[0])
    g_mu, g_ls = torch.autograd.grad(loss.sum(), (mu, ls))
    l2, h_mu, h_ls = CpuBackend().loss_and_grad(problem, a_mu, a_ls, problem.eps[0])
    assert rel_err(l2, loss.detach()) < 1e-5
    assert rel_err(h_mu, g_mu) < 1e-5 and rel_err(h_ls, g_ls) < 1e-5


def test_weights_in_the_mask_scale_the_loss():
    """Doubling every mask value doubles the reconstruction term exactly (reference and cpu)."""
    model = random_model(output="tanh", n_joints=3, extra="ee3+cat3", seed=2, dtype=torch.float64)
    problem, a_mu, a_ls, _ = random_problem(model, B=1, W=6, K=1, use_eps=False, seed=3, dtype=torch.float64)
    kl_free = type(problem)(**{**problem.__dict__, "kl_w": problem.kl_w * 0, "kl_w1": problem.kl_w1 * 0})
    doubled = type(problem)(**{**kl_free.__dict__, "joint_mask": kl_free.joint_mask * 2})
    for loss in (lambda p: window_loss(p, a_mu, a_ls, None), lambda p: CpuBackend().loss_and_grad(p, a_mu, a_ls, None)[0]):
        single, double = float(loss(kl_free).sum()), float(loss(doubled).sum())
        assert single > 0 and double == pytest.approx(2 * single, rel=1e-9)


@pytest.mark.parametrize("extra", MODALITIES)
@pytest.mark.parametrize("samples", [0, 3])
def test_cpu_window_pass_matches_reference(extra, samples):
    model = random_model(output="softmax", n_joints=3, extra=extra, seed=5)
    problem, a_mu, a_ls, _ = random_problem(model, B=1, W=7, K=1, use_eps=False, seed=6)
    noise = torch.randn(samples, 4, model.z_total, generator=torch.Generator().manual_seed(1)) if samples else None
    got = CpuBackend().window_pass(problem, a_mu, a_ls, 4, noise)
    ref = reference_window_pass(problem, a_mu, a_ls, 4, noise)
    assert got.free_energy == pytest.approx(ref.free_energy, rel=TOL)
    for name in ("raw", "rollout_raw", "kl_by_layer"):
        assert rel_err(getattr(got, name), getattr(ref, name)) < TOL, name


@pytest.mark.parametrize("extra", MODALITIES)
@pytest.mark.parametrize("output", ["tanh", "softmax"])
def test_training_kernel_matches_autograd(extra, output):
    model = random_model(d=(7, 5), z=(2, 3), output=output, posterior="A", n_joints=3, extra=extra, seed=9,
                         dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    N, T, Z, D = 5, 9, model.z_total, model.coding.n_dims
    a_mu = (torch.randn(N, T, Z, generator=g) * 0.6).double().requires_grad_(True)
    a_ls = (torch.randn(N, T, Z, generator=g) * 0.6 - 0.5).double().requires_grad_(True)
    eps = torch.randn(N, T, Z, generator=g).double()
    x = random_data(model, (N, T), g, torch.float64)
    sm = (torch.arange(T)[None] < torch.tensor([T, 4, 1, T - 2, 6])[:, None]).double()
    jm = sm.unsqueeze(-1) * (torch.rand(D, generator=g).double() * 2 + 0.3)  # modality weights
    jm = jm * (torch.rand(N, T, D, generator=g) > 0.2).double()  # some dimensions not recorded
    target = model.coding.target(x)
    fw = model.flat()
    out = model.posterior_forward(a_mu, a_ls, eps, fw=fw)
    ref = free_energy(model, out, target, jm, sm, model.kl_w, model.kl_w1)
    params = list(model.parameters())
    grads_ref = torch.autograd.grad(ref.total, params + [a_mu, a_ls])
    terms, pg, gm, gl = cpu_train.model_grads(model, a_mu.detach(), a_ls.detach(), eps, target, jm, sm,
                                              model.kl_w, model.kl_w1)
    assert terms.total == pytest.approx(float(ref.total.detach()), rel=1e-9)
    got = {id(p): gr for p, gr in pg}
    for (name, p), r in zip(model.named_parameters(), grads_ref[:-2]):
        assert rel_err(got[id(p)], r) < 1e-9, name
    assert rel_err(gm, grads_ref[-2]) < 1e-9 and rel_err(gl, grads_ref[-1]) < 1e-9
