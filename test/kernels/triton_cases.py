"""Run the Triton backend against the reference on a few small cases; prints one JSON line per case.

Run as a script in a fresh process so TRITON_INTERPRET is set before triton is imported:
    TRITON_INTERPRET=1 python test/kernels/triton_cases.py [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from helpers import random_model, random_problem, rel_err  # noqa: E402

CASES = [
    # (d, z, output, posterior, bottom_up, B, W, K, eps, keep_best, first)
    ((7, 5), (2, 3), "tanh", "A", False, 3, 5, 3, True, False, True),
    ((7, 5, 3, 9), (1, 2, 1, 3), "softmax", "A", True, 1, 4, 2, False, True, False),
    ((5,), (3,), "softmax", "d+A", False, 3, 1, 3, True, False, True),
    ((7, 5), (2, 1), "tanh", "d+A", True, 1, 6, 2, False, False, False),
    # modalities beside the joints (helpers.EXTRA), weighted masks
    ((7, 5), (2, 3), "tanh", "A", False, 2, 5, 3, True, False, True, "ee3+cat3"),
    ((5, 3), (1, 2), "softmax", "d+A", True, 1, 4, 2, False, False, True, "cat5+ee1+cat2"),
    ((5,), (3,), "tanh", "A", False, 2, 3, 2, True, False, False, "cat1"),
    # planning: the last F steps are future, their only target a heavily weighted goal at the end
    # (F = 1: a one-step plan); (..., extra, F)
    ((7, 5), (2, 3), "tanh", "A", False, 3, 6, 3, False, False, True, "ee3+cat3", 3),
    ((5, 3), (1, 2), "softmax", "d+A", True, 2, 4, 2, False, False, True, None, 1),
]


def as_plan(problem, future: int):
    """Turn a random problem into a planning one: observed past, a goal-only future."""
    if future:
        m = problem.joint_mask
        m[:, -future:] = 0.0
        m[:, -1, : max(1, m.shape[2] // 2)] = 100.0
    return problem


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from pvrnn_ros.kernels.reference import ReferenceBackend
    from pvrnn_ros.kernels.triton_er import TritonBackend

    tb = TritonBackend()
    for i, (d, z, out, post, bu, B, W, K, eps, kb, first, *rest) in enumerate(CASES):
        extra, future = (rest + [None, 0])[:2]
        model = random_model(d=d, z=z, tau=[2.0 + 3 * j for j in range(len(d))], output=out, posterior=post,
                             bottom_up=bu, n_joints=5, seed=i, extra=extra)
        problem, a_mu, a_ls, adam = random_problem(model, B=B, W=W, K=K, use_eps=eps, keep_best=kb, first=first,
                                                   seed=10 + i)
        as_plan(problem, future)
        ref = ReferenceBackend().regress(problem, a_mu, a_ls, adam)
        if args.device != "cpu":
            dev = torch.device(args.device)
            model = model.to(dev)
            problem, a_mu, a_ls, adam = random_problem(model, B=B, W=W, K=K, use_eps=eps, keep_best=kb,
                                                       first=first, seed=10 + i)
            as_plan(problem, future)
            problem.fw = type(problem.fw)(*[None if t is None else t.to(dev) for t in problem.fw])
            for name in ("h0", "d0", "target", "joint_mask", "kl_w", "kl_w1", "eps"):
                val = getattr(problem, name)
                setattr(problem, name, None if val is None else val.to(dev))
            a_mu, a_ls = a_mu.to(dev), a_ls.to(dev)
            adam = type(adam)(adam.m_mu.to(dev), adam.v_mu.to(dev), adam.m_ls.to(dev), adam.v_ls.to(dev), adam.step)
        res = tb.regress(problem, a_mu, a_ls, adam)
        print(json.dumps({
            "case": i, "losses": rel_err(res.losses.cpu(), ref.losses), "a_mu": rel_err(res.a_mu.cpu(), ref.a_mu),
            "a_ls": rel_err(res.a_ls.cpu(), ref.a_ls), "m_mu": rel_err(res.adam.m_mu.cpu(), ref.adam.m_mu),
            "v_ls": rel_err(res.adam.v_ls.cpu(), ref.adam.v_ls), "step": [res.adam.step, ref.adam.step],
            "best": [res.best_iteration, ref.best_iteration],
        }), flush=True)
    # the tick's last window pass and rollouts: (d, z, output, posterior, W, S (0 = mean path), first)
    from pvrnn_ros.core.window import reference_window_pass

    for i, (d, z, out, post, W, S, first, extra) in enumerate([
            ((7, 5), (2, 3), "softmax", "A", 4, 3, False, None),
            ((5, 3), (1, 2), "tanh", "d+A", 3, 0, True, None),
            ((5, 3), (1, 2), "softmax", "A", 5, 2, True, "cat5+ee1+cat2")]):
        model = random_model(d=d, z=z, tau=[2.0, 5.0], output=out, posterior=post, bottom_up=True, n_joints=4,
                             seed=40 + i, extra=extra)
        problem, a_mu, a_ls, _ = random_problem(model, B=1, W=W, K=1, use_eps=False, first=first, seed=50 + i)
        noise = torch.randn(S, 3, model.z_total, generator=torch.Generator().manual_seed(i)) if S else None
        ref = reference_window_pass(problem, a_mu, a_ls, 3, noise)
        if args.device != "cpu":
            dev = torch.device(args.device)
            model = model.to(dev)
            problem.fw = type(problem.fw)(*[None if t is None else t.to(dev) for t in problem.fw])
            for name in ("h0", "d0", "target", "joint_mask", "kl_w", "kl_w1"):
                setattr(problem, name, getattr(problem, name).to(dev))
            a_mu, a_ls = a_mu.to(dev), a_ls.to(dev)
            noise = None if noise is None else noise.to(dev)
        got = tb.window_pass(problem, a_mu, a_ls, 3, noise)
        row = {"window_pass": i, "free_energy": abs(got.free_energy - ref.free_energy) / abs(ref.free_energy)}
        for name in ("raw", "kl_by_layer", "mu_q_last", "prior_next", "rollout_raw"):
            row[name] = rel_err(getattr(got, name).cpu(), getattr(ref, name))
        for name in ("first", "end"):
            row[name] = max(rel_err(a.cpu(), b) for a, b in zip(getattr(got, name), getattr(ref, name)))
        row["shapes"] = [list(got.rollout_raw.shape), list(ref.rollout_raw.shape)]
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
