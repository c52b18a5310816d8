"""Random ER window problems for backend tests (shared by the CPU, Triton and ER tests)."""
from __future__ import annotations

import torch

from pvrnn_ros.core.config import LayerConfig, ModelConfig
from pvrnn_ros.core.window import AdamState, WindowProblem
from pvrnn_ros.core.model import FlatWeights, PVRNN


# modality codings beside the joints (OutputCoding's `extra`): none; one categorical of one class;
# a 3-component continuous modality and a 3-class categorical one; two categoricals of odd sizes
EXTRA = {
    "none": None,
    "cat1": [("categorical", 1)],
    "ee3+cat3": [("tanh", 1)] * 3 + [("categorical", 3)],
    "cat5+ee1+cat2": [("categorical", 5), ("tanh", 1), ("categorical", 2)],
}


def random_model(d=(7, 5), z=(2, 3), tau=(2.0, 5.0), n_joints=4, output="tanh", posterior="A",
                 bottom_up=False, bins=None, seed=0, scale=1.0, dtype=torch.float32, extra=None) -> PVRNN:
    """A PV-RNN with random weights scaled so tanh stays out of saturation. extra: a key of EXTRA
    or a list of (coding, width) for the dimensions after the joints."""
    torch.manual_seed(seed)
    layers = [LayerConfig(d=di, z=zi, tau=ti, w=0.01 * (i + 1), w1=0.5 + i) for i, (di, zi, ti) in
              enumerate(zip(d, z, tau))]
    if bins is None:
        bins = [3 + (j * 5) % 7 for j in range(n_joints)]  # odd, uneven bin counts
    cfg = ModelConfig(layers=layers, bottom_up=bottom_up, posterior=posterior, output=output,
                      softmax_bins=bins, logsigma_min=-3.0, logsigma_max=1.0)
    model = PVRNN(cfg, n_joints, EXTRA[extra] if isinstance(extra, str) else extra)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 4
            p.copy_(torch.randn_like(p) * scale / fan_in**0.5)
    return model.to(dtype)


def frozen(model: PVRNN) -> FlatWeights:
    with torch.no_grad():
        return FlatWeights(*[None if t is None else t.detach().clone() for t in model.flat()])


def random_data(model: PVRNN, shape: tuple, g: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Normalised values [..., D]: uniform in [-0.8, 0.8], class indices on categorical dimensions."""
    x = torch.rand(*shape, model.coding.n_dims, generator=g) * 1.6 - 0.8
    for j, (kind, n) in enumerate(zip(model.coding.dim_kinds, model.coding.bins)):
        if kind == "categorical":
            x[..., j] = torch.randint(0, n, shape, generator=g).float()
    return x.to(dtype)


def random_problem(model: PVRNN, B=2, W=5, K=3, use_eps=True, keep_best=False, first=True,
                   missing=True, lr=0.05, seed=1, dtype=torch.float32, weighted=None):
    """(problem, a_mu, a_ls, adam) with random carried state, targets, masks, A and Adam moments.
    weighted: masks hold per-dimension weights (modalities) instead of 0/1; default when the model
    has modalities."""
    g = torch.Generator().manual_seed(seed)
    Z, Dsum, D = model.z_total, model.d_total, model.coding.n_dims
    if weighted is None:
        weighted = D > model.n_joints

    def rnd(*shape, s=1.0):
        return (torch.randn(*shape, generator=g) * s).to(dtype)

    h0 = rnd(B, Dsum, s=0.5)
    d0 = torch.tanh(h0)
    x = random_data(model, (B, W), g, dtype)
    target = model.coding.target(x)
    mask = torch.ones(B, W, D, dtype=dtype)
    if weighted:
        mask = mask * (torch.rand(D, generator=g) * 2.0 + 0.3).to(dtype)
    if missing:
        mask[torch.rand(B, W, D, generator=g) < 0.25] = 0.0
        mask[:, :, 0] = 0.0 if D > 1 else mask[:, :, 0]  # one joint never observed
    eps = rnd(K, B, W, Z) if use_eps else None
    kl_w = (torch.rand(Z, generator=g) * 0.5 + 0.05).to(dtype)
    kl_w1 = (torch.rand(Z, generator=g) + 0.1).to(dtype)
    problem = WindowProblem(model=model, fw=frozen(model), h0=h0, d0=d0, target=target, joint_mask=mask,
                            kl_w=kl_w, kl_w1=kl_w1, first_is_unit_prior=first, eps=eps, lr=lr, iterations=K,
                            keep_best=keep_best)
    a_mu = rnd(B, W, Z, s=0.5)
    a_ls = rnd(B, W, Z, s=0.5) - 0.5
    a_ls.view(-1)[::7] = 1.5  # some log sigmas outside the clamp: zero gradient there
    adam = AdamState(rnd(B, W, Z, s=0.01), rnd(B, W, Z, s=0.01).abs() * 0.01,
                     rnd(B, W, Z, s=0.01), rnd(B, W, Z, s=0.01).abs() * 0.01, step=3)
    return problem, a_mu, a_ls, adam


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def assert_results_match(res, ref, tol: float = 1e-4) -> None:
    """A fast backend's WindowResult equals the reference's: every iterate's loss, A and the Adam
    moments after K steps, the step count and the best iterate."""
    assert res.losses.shape == ref.losses.shape
    assert rel_err(res.losses, ref.losses) < tol
    assert rel_err(res.a_mu, ref.a_mu) < tol
    assert rel_err(res.a_ls, ref.a_ls) < tol
    for name in ("m_mu", "v_mu", "m_ls", "v_ls"):
        assert rel_err(getattr(res.adam, name), getattr(ref.adam, name)) < tol, name
    assert res.adam.step == ref.adam.step
    assert res.best_iteration == ref.best_iteration
