"""Every ER backend equals the autograd reference on random problems at awkward sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import assert_results_match, random_model, random_problem, rel_err  # noqa: E402

from pvrnn_ros.kernels.reference import ReferenceBackend, window_loss  # noqa: E402

numba = pytest.importorskip("numba")
from pvrnn_ros.kernels.cpu import BLAS_MIN_ROWS, CpuBackend  # noqa: E402

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]

# (d, z, tau) per architecture: 1 layer, 2 layers, 4 layers with odd widths
ARCH = {
    "1L": ((5,), (3,), (2.0,)),
    "2L": ((7, 5), (2, 3), (2.0, 6.0)),
    "4L": ((7, 5, 3, 9), (1, 2, 1, 3), (2.0, 4.0, 8.0, 16.0)),
}


@pytest.fixture(scope="module")
def cpu():
    return CpuBackend()


def _check(res, ref, keep_best):
    assert_results_match(res, ref, TOL)
    if not keep_best:
        assert res.best_iteration is None


@pytest.mark.parametrize("arch", list(ARCH))
@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("bottom_up", [False, True])
def test_cpu_matches_reference_grid(cpu, arch, output, posterior, bottom_up):
    d, z, tau = ARCH[arch]
    if arch == "1L" and bottom_up:
        pytest.skip("bottom-up needs two layers")
    model = random_model(d=d, z=z, tau=tau, output=output, posterior=posterior, bottom_up=bottom_up, n_joints=5,
                         seed=hash((arch, output, posterior, bottom_up)) % 1000)
    problem, a_mu, a_ls, adam = random_problem(model, B=3, W=6, K=4, use_eps=True, seed=3)
    _check(cpu.regress(problem, a_mu, a_ls, adam), ReferenceBackend().regress(problem, a_mu, a_ls, adam), False)
    # the same architectures through the BLAS products (>= cpu.BLAS_MIN_ROWS windows per thread)
    problem, a_mu, a_ls, adam = random_problem(model, B=_BLAS_B + 1, W=4, K=2, use_eps=True, seed=13)
    _check(cpu.regress(problem, a_mu, a_ls, adam), ReferenceBackend().regress(problem, a_mu, a_ls, adam), False)


# B >= cpu.BLAS_MIN_ROWS windows per thread (8 or 32, by host) take the BLAS products; threads take
# groups of >= 8 windows: 9 (one group), 17 (8 + 9), and enough for BLAS on two threads
_BLAS_B = 2 * BLAS_MIN_ROWS + 1


@pytest.mark.parametrize("B,W,K", [(1, 1, 3), (3, 1, 2), (1, 63, 2), (3, 17, 5), (9, 5, 3), (17, 3, 2),
                                   (_BLAS_B, 3, 2)])
@pytest.mark.parametrize("use_eps", [True, False])
@pytest.mark.parametrize("keep_best", [False, True])
@pytest.mark.parametrize("first", [True, False])
def test_cpu_matches_reference_shapes(cpu, B, W, K, use_eps, keep_best, first):
    model = random_model(d=(7, 5, 3, 9), z=(1, 2, 1, 3), tau=(2.0, 3.0, 5.0, 9.0), output="softmax",
                         posterior="d+A", bottom_up=True, n_joints=4, seed=W)
    problem, a_mu, a_ls, adam = random_problem(model, B=B, W=W, K=K, use_eps=use_eps, keep_best=keep_best,
                                               first=first, seed=B * 100 + W)
    _check(cpu.regress(problem, a_mu, a_ls, adam), ReferenceBackend().regress(problem, a_mu, a_ls, adam),
           keep_best)


def test_cpu_keep_best_picks_per_window(cpu):
    # a large learning rate makes the loss go up for some windows: the best iterate is then not the last
    model = random_model(output="tanh", n_joints=3, seed=5)
    problem, a_mu, a_ls, adam = random_problem(model, B=3, W=4, K=6, use_eps=True, keep_best=True, lr=0.8, seed=9)
    ref = ReferenceBackend().regress(problem, a_mu, a_ls, adam)
    _check(cpu.regress(problem, a_mu, a_ls, adam), ref, True)


def test_cpu_softmax_joint_far_below_the_others(cpu):
    """One joint's logits 200 above the rest: against one shift per step the others would underflow;
    each joint is shifted by its own max bin, so the result must still equal the reference."""
    model = random_model(output="softmax", n_joints=4, seed=6)
    with torch.no_grad():
        model.out.bias[: model.coding.bins[0]] += 200.0
    problem, a_mu, a_ls, adam = random_problem(model, B=2, W=5, K=3, use_eps=True, seed=12)
    res = cpu.regress(problem, a_mu, a_ls, adam)
    assert torch.isfinite(res.losses).all()
    _check(res, ReferenceBackend().regress(problem, a_mu, a_ls, adam), False)


def test_cpu_zero_iterations(cpu):
    model = random_model(seed=2)
    problem, a_mu, a_ls, adam = random_problem(model, K=0, use_eps=False, keep_best=True)
    res = cpu.regress(problem, a_mu, a_ls, adam)
    ref = ReferenceBackend().regress(problem, a_mu, a_ls, adam)
    assert res.losses.shape == (0, a_mu.shape[0])
    assert torch.equal(res.a_mu, ref.a_mu) and res.best_iteration is None and res.adam.step == adam.step


@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("use_eps", [True, False])
@pytest.mark.parametrize("B", [3, 9])  # 9: the BLAS products
def test_cpu_gradient_matches_autograd(cpu, output, posterior, use_eps, B):
    """The hand-derived BPTT against torch.autograd of the reference window loss, in float64."""
    model = random_model(d=(7, 5, 3), z=(2, 1, 3), tau=(2.0, 4.0, 8.0), output=output, posterior=posterior,
                         bottom_up=True, n_joints=5, seed=11, dtype=torch.float64)
    problem, a_mu, a_ls, _ = random_problem(model, B=B, W=9, K=1, use_eps=use_eps, seed=4, dtype=torch.float64)
    eps = problem.eps[0] if use_eps else None
    mu, ls = a_mu.clone().requires_grad_(True), a_ls.clone().requires_grad_(True)
    loss = window_loss(problem, mu, ls, eps)
    g_mu, g_ls = torch.autograd.grad(loss.sum(), (mu, ls))
    l2, h_mu, h_ls = cpu.loss_and_grad(problem, a_mu, a_ls, eps)
    assert rel_err(l2, loss.detach()) < 1e-5
    assert rel_err(h_mu, g_mu) < 1e-5
    assert rel_err(h_ls, g_ls) < 1e-5
    if posterior == "A":  # clamp: no gradient outside [logsigma_min, logsigma_max]
        assert torch.all(h_ls[a_ls > model.cfg.logsigma_max] == 0)


def test_cpu_weight_cache_tracks_in_place_updates(cpu):
    model = random_model(seed=1)
    problem, a_mu, a_ls, adam = random_problem(model, seed=2)
    cpu.regress(problem, a_mu, a_ls, adam)
    with torch.no_grad():
        problem.fw.W_rec.mul_(0.5)
    res = cpu.regress(problem, a_mu, a_ls, adam)
    _check(res, ReferenceBackend().regress(problem, a_mu, a_ls, adam), False)


def test_cpu_window_pass_reuses_tick_inputs_unless_modified(cpu):
    """window_pass after regress on the same problem reuses its conversions, but an in-place change
    to the problem's target in between is seen."""
    from pvrnn_ros.core.window import reference_window_pass

    model = random_model(seed=4)
    problem, a_mu, a_ls, adam = random_problem(model, B=1, W=6, K=3, use_eps=False, seed=5)
    cpu.regress(problem, a_mu, a_ls, adam)
    prep, arrays = cpu._inputs(problem)
    assert cpu._inputs(problem)[1] is arrays  # memo hit
    with torch.no_grad():
        problem.target.mul_(-1.0)
    got = cpu.window_pass(problem, a_mu, a_ls, 3, None)
    assert cpu._inputs(problem)[1] is not arrays
    ref = reference_window_pass(problem, a_mu, a_ls, 3, None)
    assert abs(got.free_energy - ref.free_energy) <= TOL * abs(ref.free_energy)


def _tiny_trained(output="tanh"):
    from pvrnn_ros.core.config import Config, LayerConfig
    from pvrnn_ros.core.data import Demonstration
    from pvrnn_ros.core.train import build_model

    cfg = Config()
    cfg.model.layers = [LayerConfig(d=9, z=2, tau=2.0), LayerConfig(d=5, z=1, tau=6.0)]
    cfg.model.output = output
    cfg.model.softmax_bins = 7
    t = np.arange(40) / cfg.data.rate_hz
    demos = [Demonstration(f"s{i}", t, np.stack([np.sin(t + i + j) for j in range(3)], 1), ["a", "b", "c"])
             for i in range(2)]
    trained = build_model(cfg, demos)
    with torch.no_grad():
        for p in trained.model.parameters():
            p.copy_(torch.randn_like(p) * 0.4)
    return trained


@pytest.mark.parametrize("output", ["tanh", "softmax"])
def test_error_regression_cpu_equals_reference(output):
    from pvrnn_ros.core.config import ERConfig
    from pvrnn_ros.core.er import ErrorRegression

    trained = _tiny_trained(output)
    cfg = ERConfig(window=6, iterations=5, first_iterations=8, sample_posterior=True, keep_best=False)
    rng = np.random.default_rng(0)
    stream = np.sin(np.arange(12)[:, None] * 0.3 + np.arange(3)[None]) + 0.05 * rng.standard_normal((12, 3))
    stream[4, 1] = np.nan  # a missing joint
    runs = {}
    for name in ("reference", "cpu"):
        er = ErrorRegression(trained, ERConfig(**{**cfg.__dict__, "backend": name}))
        runs[name] = [er.step(obs) for obs in stream]
    for a, b in zip(runs["reference"], runs["cpu"]):
        if a.prediction is None:
            assert b.prediction is None
            continue
        np.testing.assert_allclose(b.prediction, a.prediction, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.losses, a.losses, rtol=1e-4, atol=1e-6)


# -- Triton -----------------------------------------------------------------------------------
def _triton_installed() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("triton") is not None
    except Exception:
        return False


def _run_triton_cases(device: str):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run([sys.executable, str(Path(__file__).parent / "triton_cases.py"), "--device", device],
                          env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ticks = [r for r in rows if "case" in r]
    passes = [r for r in rows if "window_pass" in r]
    assert len(ticks) >= 9 and len(passes) == 3
    for row in ticks:
        for key in ("losses", "a_mu", "a_ls", "m_mu", "v_ls"):
            assert row[key] < TOL, row
        assert row["step"][0] == row["step"][1] and row["best"][0] == row["best"][1], row
    for row in passes:
        assert row["shapes"][0] == row["shapes"][1], row
        for key in ("free_energy", "raw", "kl_by_layer", "mu_q_last", "prior_next", "rollout_raw", "first", "end"):
            assert row[key] < TOL, row


@pytest.mark.skipif(not _triton_installed(), reason="triton not installed")
def test_triton_interpreter_matches_reference():
    _run_triton_cases("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_triton_cuda_matches_reference():
    _run_triton_cases("cuda")


def test_triton_import_fails_cleanly_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "try:\n    import pvrnn_ros.kernels.triton_er\nexcept ImportError as e:\n    print('IMPORTERROR', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "IMPORTERROR" in proc.stdout, proc.stderr


@pytest.mark.parametrize("output", ["tanh", "softmax"])
@pytest.mark.parametrize("posterior", ["A", "d+A"])
@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("first", [True, False])
def test_cpu_window_pass_matches_reference(cpu, output, posterior, sampled, first):
    """The tick's last window pass and prior rollouts, compiled, against the model's torch code."""
    from pvrnn_ros.core.window import reference_window_pass

    model = random_model(d=(7, 5, 3), z=(2, 1, 3), tau=(2.0, 4.0, 8.0), output=output, posterior=posterior,
                         bottom_up=True, n_joints=5, seed=21)
    problem, a_mu, a_ls, _ = random_problem(model, B=1, W=11, K=1, use_eps=False, first=first, seed=8)
    noise = torch.randn(6, 4, model.z_total, generator=torch.Generator().manual_seed(3)) if sampled else None
    got = cpu.window_pass(problem, a_mu, a_ls, 4, noise)
    ref = reference_window_pass(problem, a_mu, a_ls, 4, noise)
    assert got.rollout_raw.shape == ref.rollout_raw.shape == ((6 if sampled else 1), 4, model.coding.out_dim)
    assert abs(got.free_energy - ref.free_energy) <= TOL * abs(ref.free_energy)
    for name in ("raw", "kl_by_layer", "mu_q_last", "prior_next", "rollout_raw"):
        assert rel_err(getattr(got, name), getattr(ref, name)) < TOL, name
    for name in ("first", "end"):
        for a, b in zip(getattr(got, name), getattr(ref, name)):
            assert a.shape == b.shape and rel_err(a, b) < TOL, name
