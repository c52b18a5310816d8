"""The CPU backend's batched path (B > 1 windows advancing together, matrix-matrix products)
against the autograd reference at awkward sizes, mixed codings and weighted masks: the forward
losses, the hand-derived gradients, A and the Adam moments after K steps; and window b's result
equals running window b alone (B = 1), whatever the grouping over threads."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import assert_results_match, random_model, random_problem, rel_err  # noqa: E402

from pvrnn_ros.kernels.reference import ReferenceBackend, window_loss  # noqa: E402

pytest.importorskip("numba")
from pvrnn_ros.kernels.cpu import CpuBackend  # noqa: E402

TOL = 1e-4
BATCHES = [2, 5, 17]  # below, at and above the kernels' 4-row blocks and the 8-window thread groups
# (output, modality extras): joints only, tanh joints with modalities, softmax joints with modalities
CODINGS = [("tanh", None), ("softmax", None), ("tanh", "ee3+cat3"), ("softmax", "cat5+ee1+cat2")]


def _model(output, extra, posterior="d+A", dtype=torch.float32, seed=0):
    return random_model(d=(7, 5, 3), z=(2, 1, 3), tau=(2.0, 4.0, 8.0), output=output, posterior=posterior,
                        bottom_up=True, n_joints=3, extra=extra, seed=seed, dtype=dtype)


def _check(res, ref):
    assert_results_match(res, ref, TOL)


def _window(problem, a_mu, a_ls, adam, b):
    """Window b of a batched problem as a problem of its own (B = 1)."""
    sl = slice(b, b + 1)
    one = dataclasses.replace(problem, h0=problem.h0[sl], d0=problem.d0[sl], target=problem.target[sl],
                              joint_mask=problem.joint_mask[sl],
                              eps=None if problem.eps is None else problem.eps[:, sl].contiguous())
    ad = dataclasses.replace(adam, m_mu=adam.m_mu[sl], v_mu=adam.v_mu[sl], m_ls=adam.m_ls[sl], v_ls=adam.v_ls[sl])
    return one, a_mu[sl], a_ls[sl], ad


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("output,extra", CODINGS)
@pytest.mark.parametrize("posterior", ["A", "d+A"])
def test_batched_regress_matches_reference(B, output, extra, posterior):
    model = _model(output, extra, posterior, seed=B)
    problem, a_mu, a_ls, adam = random_problem(model, B=B, W=9, K=4, use_eps=True, first=B != 5, seed=B + 7,
                                               weighted=True)
    _check(CpuBackend().regress(problem, a_mu, a_ls, adam), ReferenceBackend().regress(problem, a_mu, a_ls, adam))


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("keep_best", [False, True])
def test_batched_regress_noise_free_and_keep_best(B, keep_best):
    model = _model("softmax", "ee3+cat3", seed=30 + B)
    problem, a_mu, a_ls, adam = random_problem(model, B=B, W=13, K=5, use_eps=False, keep_best=keep_best,
                                               lr=0.5, first=False, seed=B)
    _check(CpuBackend().regress(problem, a_mu, a_ls, adam), ReferenceBackend().regress(problem, a_mu, a_ls, adam))


@pytest.mark.parametrize("B", BATCHES)
@pytest.mark.parametrize("output,extra", CODINGS)
@pytest.mark.parametrize("use_eps", [True, False])
def test_batched_gradient_matches_autograd(B, output, extra, use_eps):
    """The batched BPTT against torch.autograd of the reference window loss, in float64."""
    model = _model(output, extra, dtype=torch.float64, seed=40 + B)
    problem, a_mu, a_ls, _ = random_problem(model, B=B, W=11, K=1, use_eps=use_eps, seed=B, dtype=torch.float64,
                                            weighted=True)
    eps = problem.eps[0] if use_eps else None
    mu, ls = a_mu.clone().requires_grad_(True), a_ls.clone().requires_grad_(True)
    loss = window_loss(problem, mu, ls, eps)
    g_mu, g_ls = torch.autograd.grad(loss.sum(), (mu, ls))
    l2, h_mu, h_ls = CpuBackend().loss_and_grad(problem, a_mu, a_ls, eps, batched=True)
    assert rel_err(l2, loss.detach()) < 1e-5
    assert rel_err(h_mu, g_mu) < 1e-5
    assert rel_err(h_ls, g_ls) < 1e-5
    for b in range(B):  # each window's gradient on its own, not only the batch's norm
        assert rel_err(h_mu[b], g_mu[b]) < 1e-5 and rel_err(h_ls[b], g_ls[b]) < 1e-5


@pytest.mark.parametrize("B", BATCHES)
def test_batched_window_equals_window_alone(B):
    """Window b's losses, A and moments from the batched kernels equal window b run alone (B = 1);
    threads over groups of windows change nothing."""
    model = _model("softmax", "cat5+ee1+cat2", seed=50 + B)
    problem, a_mu, a_ls, adam = random_problem(model, B=B, W=10, K=6, use_eps=True, keep_best=True, seed=B,
                                               weighted=True)
    threaded, serial = CpuBackend(parallel=True), CpuBackend(parallel=False)
    res = threaded.regress(problem, a_mu, a_ls, adam)
    res_serial = serial.regress(problem, a_mu, a_ls, adam)
    for name in ("losses", "a_mu", "a_ls"):
        assert rel_err(getattr(res, name), getattr(res_serial, name)) < 1e-6, name
    for b in range(B):
        alone = serial.regress(*_window(problem, a_mu, a_ls, adam, b))
        assert rel_err(res.losses[:, b], alone.losses[:, 0]) < 1e-5
        assert rel_err(res.a_mu[b], alone.a_mu[0]) < 1e-5
        assert rel_err(res.a_ls[b], alone.a_ls[0]) < 1e-5
        assert rel_err(res.adam.v_mu[b], alone.adam.v_mu[0]) < 1e-5
    # and a window's result does not depend on its neighbours: change window 0's target only
    # (last iterates: the best one may be the start, the same for both)
    last = dataclasses.replace(problem, keep_best=False)
    other = dataclasses.replace(last, target=last.target.clone())
    other.target[0] = other.target[0].flip(0)
    base, moved = threaded.regress(last, a_mu, a_ls, adam), threaded.regress(other, a_mu, a_ls, adam)
    assert rel_err(moved.a_mu[0], base.a_mu[0]) > 1e-3
    assert rel_err(moved.a_mu[1:], base.a_mu[1:]) < 1e-6


def test_batch_parts_groups_at_least_min_windows():
    import numba

    bk = CpuBackend()
    threads = numba.get_num_threads()
    assert bk.batch_parts(1) == 1 and bk.batch_parts(CpuBackend.MIN_WINDOWS_PER_THREAD - 1) == 1
    assert bk.batch_parts(64) == min(threads, 64 // CpuBackend.MIN_WINDOWS_PER_THREAD)
    assert CpuBackend(parallel=False).batch_parts(64) == 1
