"""The fused CPU training path (`train.backend: cpu`) equals autograd on the reference forward:
loss and gradients w.r.t. every parameter and A, and whole training runs track `reference`."""
from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import random_model  # noqa: E402

from pvrnn_ros.core.config import Config, ConfigError, LayerConfig, ModelConfig  # noqa: E402
from pvrnn_ros.core.data import Demonstration  # noqa: E402
from pvrnn_ros.core.model import free_energy  # noqa: E402
from pvrnn_ros.core.train import Trainer, build_model  # noqa: E402

pytest.importorskip("numba")
from pvrnn_ros.kernels import cpu_train  # noqa: E402

ARCH = {  # (d, z, tau): one layer, three layers with odd widths
    "1L": ((5,), (3,), (2.0,)),
    "3L": ((7, 5, 3), (1, 2, 3), (2.0, 4.0, 9.0)),
}


def _problem(model, N=5, T=9, seed=3, missing=True):
    """Random A, noise, targets, variable lengths (one sequence of length 1) and joint masks."""
    dt = model.inv_tau.dtype
    g = torch.Generator().manual_seed(seed)
    Z, D = model.z_total, model.n_joints
    a_mu = (torch.randn(N, T, Z, generator=g) * 0.6).to(dt)
    a_ls = torch.randn(N, T, Z, generator=g) * 0.6 - 0.5
    a_ls.view(-1)[::7] = 1.5  # above logsigma_max = 1: the clamp's zero gradient
    a_ls.view(-1)[3::11] = -4.0  # below logsigma_min = -3
    a_ls = a_ls.to(dt)
    eps = torch.randn(N, T, Z, generator=g).to(dt)
    x = (torch.rand(N, T, D, generator=g) * 1.6 - 0.8).to(dt)
    lengths = torch.tensor(([T, T - 3, 1, T - 1, 4] * 3)[:N])
    sm = (torch.arange(T)[None] < lengths[:, None]).to(dt)
    jm = sm.unsqueeze(-1).expand(N, T, D).clone()
    if missing:
        jm[torch.rand(N, T, D, generator=g) < 0.2] = 0.0
    x = torch.where(sm.unsqueeze(-1) > 0, x, torch.zeros_like(x))
    return a_mu, a_ls, eps, x, model.coding.target(x), jm, sm


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("bottom_up", [False, True], ids=["td", "bu"])
@pytest.mark.parametrize("arch", list(ARCH))
def test_gradients_equal_autograd(arch, bottom_up, posterior, output, dtype, tol):
    d, z, tau = ARCH[arch]
    model = random_model(d=d, z=z, tau=tau, n_joints=3, output=output, posterior=posterior,
                         bottom_up=bottom_up, seed=len(d) + 2 * bottom_up, dtype=dtype)
    a_mu, a_ls, eps, x, target, jm, sm = _problem(model)
    first = not (bottom_up and posterior == "d+A")  # also the first_is_unit_prior=False form
    use_eps = eps if output == "tanh" or posterior == "A" else None  # also z = mu_q
    a_mu.requires_grad_(True)
    a_ls.requires_grad_(True)
    fw = model.flat()
    out = model.posterior_forward(a_mu, a_ls, use_eps, fw=fw, first_is_unit_prior=first)
    ref = free_energy(model, out, target, jm, sm, model.kl_w, model.kl_w1, first_is_unit_prior=first)
    names = [n for n in cpu_train.FIELDS if getattr(fw, n) is not None]
    params = list(model.parameters())
    g_ref = torch.autograd.grad(ref.total, [getattr(fw, n) for n in names] + params + [a_mu, a_ls])
    g_flat, g_par, g_A = g_ref[:len(names)], g_ref[len(names):-2], g_ref[-2:]

    # flat-layout API
    terms, grads = cpu_train.loss_and_grads(model, fw, a_mu, a_ls, use_eps, target, jm, sm, model.kl_w,
                                            model.kl_w1, data=x, first_is_unit_prior=first)
    assert abs(terms.total - float(ref.total.detach())) <= tol * abs(float(ref.total.detach()))
    assert abs(terms.rec - float(ref.rec.detach())) <= tol * abs(float(ref.rec.detach())) + 1e-12
    np.testing.assert_allclose(terms.kl_by_layer.double().numpy(), ref.kl_by_layer.detach().double().numpy(),
                               rtol=max(tol, 1e-6))
    with torch.no_grad():
        sq = float((((model.coding.decode(out.raw) - x) ** 2) * sm.unsqueeze(-1)).sum())
    assert abs(terms.sq_err - sq) <= max(tol, 1e-6) * sq + 1e-12
    for name, (n, g), r in zip(names, cpu_train.flat_grads(grads), g_flat):
        assert n == name
        assert g.shape == r.shape and _rel(g, r) <= tol, name
    for g, r, nm in zip((grads.a_mu, grads.a_ls), g_A, ("A_mu", "A_ls")):
        assert _rel(g, r) <= tol, nm
        assert torch.all(g[sm == 0] == 0), nm  # nothing flows into steps past a sequence's end

    # per-parameter fast path (what the trainer uses); twice: the cached layout is refreshed
    for _ in range(2):
        terms2, pg, gm, gl = cpu_train.model_grads(model, a_mu, a_ls, use_eps, target, jm, sm, model.kl_w,
                                                   model.kl_w1, data=x, first_is_unit_prior=first)
    assert terms2.total == pytest.approx(terms.total, rel=1e-12 if dtype == torch.float64 else 1e-6)
    got = {id(p): g for p, g in pg}
    assert len(got) == len(params)
    for (name, p), r in zip(model.named_parameters(), g_par):
        assert got[id(p)].shape == p.shape and _rel(got[id(p)], r) <= tol, name
    assert _rel(gm, g_A[0]) <= tol and _rel(gl, g_A[1]) <= tol


@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("N,threads", [(5, 2), (11, 2), (11, 3), (13, 4)])
def test_threaded_split_equals_one_thread(posterior, N, threads):
    """Sequences split between threads (parts of 2..6 sequences: full and partial 4-blocks, the
    2-sequence kernel) give the one-thread loss and gradients up to summation order."""
    d, z, tau = ARCH["3L"]
    model = random_model(d, z, tau, output="softmax", bins=5, posterior=posterior, bottom_up=True,
                         dtype=torch.float64, seed=N)
    a_mu, a_ls, eps, x, target, jm, sm = _problem(model, N=N, T=8)
    args = (model, a_mu, a_ls, eps, target, jm, sm, model.kl_w, model.kl_w1)
    assert len(cpu_train._parts(N, threads)) == min(threads, N // 2)
    t1, pg1, gm1, gl1 = cpu_train.model_grads(*args, data=x, threads=1)
    tn, pgn, gmn, gln = cpu_train.model_grads(*args, data=x, threads=threads)
    assert tn.total == pytest.approx(t1.total, rel=1e-12) and tn.sq_err == pytest.approx(t1.sq_err, rel=1e-12)
    np.testing.assert_allclose(tn.kl_by_layer, t1.kl_by_layer, rtol=1e-6)  # (stored as float32)
    for (p, g1), (q, gn) in zip(pg1, pgn):
        assert p is q and _rel(gn, g1) <= 1e-12
    assert gmn.shape == (N, 8, model.z_total) and _rel(gmn, gm1) <= 1e-12 and _rel(gln, gl1) <= 1e-12


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_cpu_adam_equals_torch_adam(clip):
    """CpuAdam (the cpu trainer's optimiser step) applies torch.optim.Adam's update, clipping as
    clip_grad_norm_, keeps the state in the optimizer, and a saved state resumes in torch's Adam."""
    g = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    ref = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    mine = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opt_ref = torch.optim.Adam(ref, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    opt_mine = torch.optim.Adam(mine, lr=0.01, betas=(0.8, 0.99), eps=1e-6, fused=True)
    adam = cpu_train.CpuAdam(opt_mine)
    for step in range(6):
        grads = [torch.randn(s, generator=g) * (step + 1) for s in shapes]
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        if clip:
            torch.nn.utils.clip_grad_norm_(ref, clip)
        opt_ref.step()
        adam.step(list(zip(mine, grads)), clip)
        for p, q in zip(ref, mine):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=2e-6, atol=1e-7)
            assert q.grad is None
    for p, q in zip(ref, mine):
        sr, sm = opt_ref.state[p], opt_mine.state[q]
        assert float(sm["step"]) == float(sr["step"]) == 6.0
        np.testing.assert_allclose(sm["exp_avg"].numpy(), sr["exp_avg"].numpy(), rtol=2e-6, atol=1e-8)
        np.testing.assert_allclose(sm["exp_avg_sq"].numpy(), sr["exp_avg_sq"].numpy(), rtol=2e-6, atol=1e-10)
    # the state dict continues in plain torch Adam exactly where CpuAdam left it
    again = [torch.nn.Parameter(q.detach().clone()) for q in mine]
    opt_again = torch.optim.Adam(again, lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    opt_again.load_state_dict(opt_mine.state_dict())
    for group in opt_again.param_groups:
        group["fused"] = None
    grads = [torch.randn(s, generator=g) for s in shapes]
    for p, q, gr in zip(ref, again, grads):
        p.grad, q.grad = gr.clone(), gr.clone()
    opt_ref.step()
    opt_again.step()
    for p, q in zip(ref, again):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=2e-6, atol=1e-7)
    with pytest.raises(ValueError, match="weight_decay"):
        cpu_train.CpuAdam(torch.optim.Adam(ref, weight_decay=0.1))


def test_layout_follows_parameter_updates():
    """The cached flat assembly re-reads the parameters every call (in-place optimiser updates)."""
    model = random_model(dtype=torch.float64)
    a_mu, a_ls, eps, x, target, jm, sm = _problem(model, N=2, T=5)
    args = (a_mu, a_ls, eps, target, jm, sm, model.kl_w, model.kl_w1)
    t0 = cpu_train.model_grads(model, *args)[0].total
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    t1 = cpu_train.model_grads(model, *args)[0].total
    ref = cpu_train.loss_and_grads(model, model.flat(), *args)[0].total
    assert t1 != t0 and t1 == pytest.approx(ref, rel=1e-12)


# ---------------------------------------------------------------------------------------------
def _demos(n=5, joints=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.arange(0, 2.0 + 0.7 * i, 0.1)  # different lengths
        pos = np.stack([np.sin(1.3 * t * (1 + 0.2 * j) + rng.uniform(0, 6)) for j in range(joints)], 1)
        out.append(Demonstration(f"s{i}", t, pos, [f"j{j}" for j in range(joints)]))
    return out


def _cfg(backend, **model_kwargs):
    layers = [LayerConfig(d=11, z=2, tau=2.0, w=0.01), LayerConfig(d=5, z=1, tau=6.0, w=0.02)]
    cfg = Config(model=ModelConfig(layers=layers, **model_kwargs))
    cfg.train.backend = backend
    cfg.train.lr = 0.01
    return cfg.validate()


@pytest.mark.parametrize("case", [
    dict(),  # full batch, posterior A, tanh
    dict(batch_size=2, posterior="d+A", output="softmax", softmax_bins=5, bottom_up=True),
    dict(batch_size=3, grad_clip=0.5),
    dict(weight_decay=0.05),
    dict(batch_size=2, grad_clip=0.5, weight_decay=0.05, posterior="d+A"),
], ids=["full", "minibatch-dA-softmax", "minibatch-clip", "weight-decay", "minibatch-clip-decay-dA"])
def test_training_tracks_reference(case):
    case = dict(case)
    train_kw = {k: case.pop(k) for k in ("batch_size", "grad_clip", "weight_decay") if k in case}
    demos = _demos()
    runs = {}
    for backend in ("reference", "cpu"):
        cfg = _cfg(backend, **case)
        for k, v in train_kw.items():
            setattr(cfg.train, k, v)
        trained = build_model(cfg, demos)
        trainer = Trainer(trained)
        assert trainer.backend == backend
        stats = [trainer.epoch() for _ in range(5)]
        runs[backend] = (trained, stats)
    (ref, ref_stats), (fast, fast_stats) = runs["reference"], runs["cpu"]
    for a, b in zip(ref_stats, fast_stats):
        assert b.loss == pytest.approx(a.loss, rel=1e-3)
        assert b.rec_mse == pytest.approx(a.rec_mse, rel=1e-3)
        np.testing.assert_allclose(b.kl, a.kl, rtol=1e-3)
    for (name, p), q in zip(ref.model.named_parameters(), fast.model.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-3, atol=1e-5, err_msg=name)
    for p, q in zip(ref.adaptive.parameters(), fast.adaptive.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_weight_decay_shrinks_the_weights(backend):
    demos = _demos()
    runs = []
    for wd in (0.0, 0.5):
        cfg = _cfg(backend)
        cfg.train.weight_decay = wd
        trained = build_model(cfg, demos)
        trainer = Trainer(trained)
        for _ in range(30):
            trainer.epoch()
        runs.append(trained)
    norm = [sum(float(p.detach().pow(2).sum()) for p in t.model.parameters()) for t in runs]
    assert norm[1] < 0.8 * norm[0], norm


def test_reference_backend_unchanged_and_resume_across_backends(tmp_path):
    """reference stays plain autograd + plain Adam; a checkpoint from one backend resumes in the other."""
    demos = _demos(n=3)
    trained = build_model(_cfg("reference"), demos)
    trainer = Trainer(trained)
    assert trainer.backend == "reference" and not trainer.optimizer.defaults.get("fused")
    trainer.run(3, tmp_path, progress=False)
    from pvrnn_ros.core.checkpoint import load_checkpoint

    resumed = load_checkpoint(tmp_path / "model.pt", "cpu")
    resumed.config.train.backend = "cpu"
    fast = Trainer(resumed)
    assert fast.backend == "cpu" and all(g["fused"] for g in fast.optimizer.param_groups)
    fast.epoch()
    back = copy.deepcopy(resumed)
    back.optimizer_state = fast.optimizer.state_dict()
    back.config.train.backend = "reference"
    again = Trainer(back)
    assert not any(g.get("fused") for g in again.optimizer.param_groups)
    again.epoch()


def test_backend_config(caplog):
    with pytest.raises(ConfigError, match=r"train\.backend.*'gpu'"):
        Config.from_dict({"train": {"backend": "gpu"}})
    assert Config().train.backend == "auto"
    with caplog.at_level(logging.INFO, logger="pvrnn_ros.train"):
        trainer = Trainer(build_model(_cfg("auto"), _demos(n=2)))
    assert trainer.backend == "cpu"
    assert "auto -> cpu" in caplog.text
