import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pvrnn_ros.core.config import LayerConfig
from pvrnn_ros.core.model import PVRNN, AdaptiveVectors, free_energy, kl_diag_gauss

from .conftest import small_config


def test_kl_closed_form_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    shape = (5, 7, 3)
    mu_q, mu_p = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    ls_q, ls_p = torch.randn(shape, generator=g) * 0.7, torch.randn(shape, generator=g) * 0.7
    ours = kl_diag_gauss(mu_q, ls_q, mu_p, ls_p)
    ref = kl_divergence(Normal(mu_q, ls_q.exp()), Normal(mu_p, ls_p.exp()))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_flat_layout_equals_per_layer_equations():
    """The block matrices reproduce DESIGN.md's per-layer MTRNN update, with top-down and bottom-up."""
    cfg = small_config(bottom_up=True,
                       layers=[LayerConfig(d=5, z=2, tau=2.0), LayerConfig(d=4, z=3, tau=4.0), LayerConfig(d=3, z=1, tau=8.0)])
    torch.manual_seed(0)
    model = PVRNN(cfg.model, n_joints=2)
    fw = model.flat()
    d_prev = [torch.randn(1, l.d) for l in cfg.model.layers]
    h_prev = [torch.randn(1, l.d) for l in cfg.model.layers]
    z = [torch.randn(1, l.z) for l in cfg.model.layers]
    h_flat = torch.cat(h_prev, 1) + fw.inv_tau * (torch.cat(d_prev, 1) @ fw.W_rec + torch.cat(z, 1) @ fw.W_zd + fw.b_h - torch.cat(h_prev, 1))
    expected = []
    for i, layer in enumerate(model.layers):
        u = layer.rec(d_prev[i]) + layer.z_in(z[i])
        if layer.top is not None:
            u = u + layer.top(d_prev[i + 1])
        if layer.bottom is not None:
            u = u + layer.bottom(d_prev[i - 1])
        tau = cfg.model.layers[i].tau
        expected.append((1 - 1 / tau) * h_prev[i] + u / tau)
    torch.testing.assert_close(h_flat, torch.cat(expected, 1), rtol=1e-5, atol=1e-6)
    # prior of each layer from that layer's own d only
    pre = torch.cat(d_prev, 1) @ fw.W_p + fw.b_p
    Z = model.z_total
    for i, layer in enumerate(model.layers):
        off = sum(model.z_sizes[:i])
        zl = model.z_sizes[i]
        own = layer.prior(d_prev[i])
        torch.testing.assert_close(pre[:, off:off + zl], own[:, :zl])
        torch.testing.assert_close(pre[:, Z + off:Z + off + zl], own[:, zl:])


@pytest.mark.parametrize("posterior", ["A", "d+A"])
def test_gradients_reach_A_only_through_the_loss(posterior):
    cfg = small_config(posterior=posterior)
    torch.manual_seed(1)
    model = PVRNN(cfg.model, n_joints=3)
    A = AdaptiveVectors(3, 9, model.z_total)
    with torch.no_grad():
        A.mu.normal_(0, 0.3)
    data = torch.rand(3, 9, 3) - 0.5
    step_mask = torch.ones(3, 9)
    step_mask[1, 6:] = 0  # sequence 1 is shorter
    out = model.posterior_forward(A.mu, A.logsigma, torch.randn(3, 9, model.z_total))
    terms = free_energy(model, out, data, step_mask.unsqueeze(-1).expand_as(data), step_mask, model.kl_w, model.kl_w1)
    terms.total.backward()
    g = A.mu.grad
    assert g[:, :6].abs().sum() > 0
    assert torch.all(g[1, 6:] == 0), "padded steps past a sequence's end must get no gradient"
    # A of sequence 0 affects only sequence 0's loss
    A.mu.grad = None
    out = model.posterior_forward(A.mu, A.logsigma, None)
    terms = free_energy(model, out, data, torch.ones_like(data), torch.ones(3, 9), model.kl_w, model.kl_w1)
    terms.per_sequence[0].backward()
    assert A.mu.grad[0].abs().sum() > 0 and torch.all(A.mu.grad[1:] == 0)


def test_prior_is_unit_gaussian_at_t1_and_learned_after():
    cfg = small_config()
    torch.manual_seed(2)
    model = PVRNN(cfg.model, n_joints=3)
    with torch.no_grad():
        for layer in model.layers:
            layer.prior.bias.fill_(0.3)
    A = AdaptiveVectors(2, 5, model.z_total)
    out = model.posterior_forward(A.mu, A.logsigma, None)
    assert torch.all(out.mu_p[:, 0] == 0) and torch.all(out.ls_p[:, 0] == 0)
    assert torch.all(out.mu_p[:, 1:] != 0)


def test_masked_joints_do_not_affect_reconstruction():
    cfg = small_config()
    torch.manual_seed(3)
    model = PVRNN(cfg.model, n_joints=3)
    raw = torch.randn(2, 4, 3)
    x = torch.rand(2, 4, 3) - 0.5
    mask = torch.ones(2, 4, 3)
    mask[:, :, 1] = 0
    x2 = x.clone()
    x2[:, :, 1] = 123.0
    a = model.coding.reconstruction(raw, x, mask)
    b = model.coding.reconstruction(raw, x2, mask)
    torch.testing.assert_close(a, b)


def test_softmax_coding_round_trip_and_loss_minimum():
    cfg = small_config(output="softmax", softmax_bins=[21, 9, 15])
    model = PVRNN(cfg.model, n_joints=3)
    assert model.coding.out_dim == 45
    x = torch.tensor([[0.3, -0.55, 0.71]])
    p = model.coding.target(x)  # [1, 3, Kmax]
    assert torch.allclose(p.sum(-1), torch.ones(1, 3))
    # logits equal to the target's log-probabilities decode close to x and give ~zero loss
    logits = torch.cat([torch.log(p[0, j, :n]) for j, n in enumerate([21, 9, 15])])[None]
    decoded = model.coding.decode(logits)
    torch.testing.assert_close(decoded, x, atol=0.03, rtol=0)
    loss = model.coding.reconstruction(logits, p, torch.ones(1, 3))
    assert float(loss) < 1e-5
    worse = model.coding.reconstruction(logits.roll(3, -1), p, torch.ones(1, 3))
    assert float(worse) > 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    cfg = small_config()
    torch.manual_seed(0)
    model = PVRNN(cfg.model, n_joints=3)
    A = AdaptiveVectors(2, 8, model.z_total)
    out_cpu = model.posterior_forward(A.mu, A.logsigma, None)
    model_gpu, A_gpu = model.cuda(), A.cuda()
    out_gpu = model_gpu.posterior_forward(A_gpu.mu, A_gpu.logsigma, None)
    np.testing.assert_allclose(out_gpu.raw.cpu().detach().numpy(), out_cpu.raw.detach().numpy(), atol=1e-5)
