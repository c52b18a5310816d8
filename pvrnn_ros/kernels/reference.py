"""Reference ER backend: the window forward/backward by autograd, Adam written out by hand.

This is the ground truth the fast backends are tested against. Adam follows torch.optim.Adam
exactly (bias-corrected moments, eps added to the corrected sqrt(v))."""
from __future__ import annotations

import torch

from pvrnn_ros.core.window import AdamState, WindowProblem, WindowResult, reference_window_pass
from pvrnn_ros.core.model import State, free_energy


def window_loss(problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                eps: torch.Tensor | None) -> torch.Tensor:
    """Per-window negative ELBO [B]: sum_t rec_t + sum_t kl weights . KL_t."""
    model = problem.model
    out = model.posterior_forward(a_mu, a_ls, eps, State(problem.h0, problem.d0),
                                  problem.first_is_unit_prior, fw=problem.fw)
    ones = torch.ones(a_mu.shape[:2], device=a_mu.device, dtype=a_mu.dtype)
    terms = free_energy(model, out, problem.target, problem.joint_mask, ones, problem.kl_w, problem.kl_w1,
                        problem.first_is_unit_prior)
    return terms.per_sequence


def adam_update(param: torch.Tensor, grad: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int,
                lr: float, betas: tuple[float, float], eps: float) -> None:
    b1, b2 = betas
    m.mul_(b1).add_(grad, alpha=1 - b1)
    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
    bc1 = 1 - b1**step
    bc2 = 1 - b2**step
    denom = (v.sqrt() / (bc2**0.5)).add_(eps)
    param.addcdiv_(m, denom, value=-lr / bc1)


class ReferenceBackend:
    name = "reference"
    window_pass = staticmethod(reference_window_pass)  # the tick's last pass and rollouts, in torch

    def regress(self, problem: WindowProblem, a_mu: torch.Tensor, a_ls: torch.Tensor,
                adam: AdamState) -> WindowResult:
        a_mu = a_mu.detach().clone()
        a_ls = a_ls.detach().clone()
        ad = AdamState(adam.m_mu.clone(), adam.v_mu.clone(), adam.m_ls.clone(), adam.v_ls.clone(), adam.step)
        losses = []
        best = None
        for k in range(problem.iterations):
            mu = a_mu.requires_grad_(True)
            ls = a_ls.requires_grad_(True)
            eps = None if problem.eps is None else problem.eps[k]
            with torch.enable_grad():
                per_window = window_loss(problem, mu, ls, eps)
                g_mu, g_ls = torch.autograd.grad(per_window.sum(), (mu, ls))
            losses.append(per_window.detach())
            a_mu, a_ls = mu.detach(), ls.detach()
            if problem.keep_best:
                best = _track_best(best, per_window.detach(), a_mu, a_ls, k)
            ad.step += 1
            adam_update(a_mu, g_mu, ad.m_mu, ad.v_mu, ad.step, problem.lr, problem.betas, problem.adam_eps)
            adam_update(a_ls, g_ls, ad.m_ls, ad.v_ls, ad.step, problem.lr, problem.betas, problem.adam_eps)
        best_iteration = None
        if problem.keep_best and problem.iterations > 0:
            eps = None if problem.eps is None else problem.eps[-1]
            with torch.no_grad():
                final = window_loss(problem, a_mu, a_ls, eps)
            best = _track_best(best, final, a_mu, a_ls, problem.iterations)
            a_mu, a_ls, best_iteration = best[1], best[2], best[3]
        stacked = torch.stack(losses) if losses else a_mu.new_zeros(0, a_mu.shape[0])
        return WindowResult(a_mu, a_ls, ad, stacked, best_iteration)


def _track_best(best, loss, a_mu, a_ls, k):
    """Per window, keep the iterate with the lowest loss. best = (loss [B], mu, ls, iteration)."""
    if best is None:
        return (loss.clone(), a_mu.clone(), a_ls.clone(), k)
    better = loss < best[0]
    sel = better[:, None, None]
    return (torch.where(better, loss, best[0]), torch.where(sel, a_mu, best[1]),
            torch.where(sel, a_ls, best[2]), k if bool(better.any()) else best[3])
