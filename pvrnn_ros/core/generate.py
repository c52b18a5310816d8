"""Generation from a trained model: prior (free), posterior reconstruction, target generation."""
from __future__ import annotations

import numpy as np
import torch

from .checkpoint import TrainedModel

MODES = ("prior", "posterior", "target")


@torch.no_grad()
def generate(trained: TrainedModel, mode: str, steps: int | None = None, count: int | None = None,
             k: int = 10, sample: bool | None = None, seed: int = 0,
             sequences: list[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """Returns (name, joint positions [T, D] in raw units) per generated sequence.

    prior:     free generation from N(0, I) at t = 1 and the learned prior after (sampled by default)
    posterior: reconstruction of training sequence n from its A (z = mu_q)
    target:    A of sequence n for the first k steps, then the prior (mean by default)
    """
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r} is invalid: expected one of {', '.join(MODES)}")
    model, A = trained.model, trained.adaptive
    gen = torch.Generator(device=trained.device).manual_seed(seed)
    n_train = A.mu.shape[0]
    if mode == "prior":
        count = count or n_train
        steps = steps or max(trained.sequence_lengths)
        raw, _, _ = model.rollout(model.zero_state(count), steps, sample=True if sample is None else sample,
                                  generator=gen, first_is_unit_prior=True)
        names = [f"prior_{i:03d}" for i in range(count)]
        lengths = [steps] * count
    else:
        idx = list(range(n_train)) if sequences is None else list(sequences)
        bad = [i for i in idx if not 0 <= i < n_train]
        if bad:
            raise ValueError(f"sequence index {bad[0]} is out of range: the model has {n_train} training sequences")
        sel = torch.tensor(idx, device=trained.device)
        lengths = [steps or trained.sequence_lengths[i] for i in idx]
        T = max(lengths)
        a_mu, a_ls = A.mu[sel], A.logsigma[sel]
        if T > a_mu.shape[1]:  # generating past the training length: pad A (only prior steps use it)
            pad = a_mu.new_zeros(len(idx), T - a_mu.shape[1], a_mu.shape[2])
            a_mu, a_ls = torch.cat([a_mu, pad], 1), torch.cat([a_ls, pad], 1)
        if mode == "posterior":
            posterior_steps = T
        else:
            if k < 1:
                raise ValueError(f"k = {k} is invalid: target generation needs at least one posterior step")
            posterior_steps = k
        raw, _, _ = model.rollout(model.zero_state(len(idx)), T, a_mu, a_ls, posterior_steps=posterior_steps,
                                  sample=bool(sample), generator=gen, first_is_unit_prior=True)
        names = [f"{mode}_{trained.sequence_names[i]}" for i in idx]
    values = model.coding.decode(raw)[..., :trained.layout.n_joints].cpu().double().numpy()
    return [(name, trained.normalizer.denormalize(values[i, :n])) for i, (name, n) in enumerate(zip(names, lengths))]


def training_sequence(trained: TrainedModel, index: int) -> np.ndarray:
    """Training sequence `index` in raw units [T, D]."""
    n = trained.sequence_lengths[index]
    return trained.normalizer.denormalize(trained.data[index, :n, :trained.layout.n_joints].cpu().double().numpy())
