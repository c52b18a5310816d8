"""Data coding: per-joint normalisation and the network's output coding (tanh or softmax)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Normalizer:
    """Maps each joint's [lo, hi] (raw units, e.g. rad) to [-scale, scale] for the tanh output."""

    lo: np.ndarray  # [D]
    hi: np.ndarray  # [D]
    scale: float = 0.8

    @classmethod
    def fit(cls, sequences: list[np.ndarray], scale: float = 0.8, margin: float = 0.0) -> "Normalizer":
        stacked = np.concatenate([s[np.all(np.isfinite(s), axis=1)] for s in sequences], axis=0)
        if stacked.size == 0:
            raise ValueError("cannot fit normalisation: no finite samples in the data")
        lo, hi = stacked.min(axis=0), stacked.max(axis=0)
        span = hi - lo
        # A joint that never moves keeps a unit span so it maps to 0 rather than dividing by zero.
        span = np.where(span > 1e-9, span, 1.0)
        lo, hi = lo - margin * span, lo + span * (1 + margin)
        return cls(lo=lo.astype(np.float64), hi=hi.astype(np.float64), scale=float(scale))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return self.scale * (2.0 * (np.asarray(x, dtype=np.float64) - self.lo) / (self.hi - self.lo) - 1.0)

    def denormalize(self, y: np.ndarray) -> np.ndarray:
        return self.lo + (np.asarray(y, dtype=np.float64) / self.scale + 1.0) * 0.5 * (self.hi - self.lo)

    def state_dict(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "scale": self.scale}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Normalizer":
        return cls(lo=np.asarray(state["lo"], dtype=np.float64), hi=np.asarray(state["hi"], dtype=np.float64),
                   scale=float(state["scale"]))


class OutputCoding(torch.nn.Module):
    """How the network's output layer codes joint values.

    tanh: one unit per joint, x_hat = tanh(raw).
    softmax: the lab's coding. Joint j has n_j reference points r_jk spread over [-1, 1]; a
    target value x is coded as p_jk proportional to exp(-(x - r_jk)^2 / (2 sigma_j^2)), the
    network outputs a softmax per joint and is decoded as the weighted mean sum_k q_jk r_jk.
    """

    def __init__(self, kind: str, n_joints: int, bins: list[int] | int = 11, sigma_in_bins: float = 1.0):
        super().__init__()
        self.kind = kind
        self.n_joints = n_joints
        if kind == "tanh":
            self.out_dim = n_joints
            return
        if kind != "softmax":
            raise ValueError(f"output = {kind!r} is invalid: expected 'tanh' or 'softmax'")
        bins = [bins] * n_joints if isinstance(bins, int) else list(bins)
        if len(bins) != n_joints:
            raise ValueError(f"softmax_bins has {len(bins)} entries but the data have {n_joints} joints")
        self.bins = bins
        self.out_dim = int(sum(bins))
        kmax = max(bins)
        # gather index [D, Kmax] into the logits padded with one -inf column (index out_dim)
        index = torch.full((n_joints, kmax), self.out_dim, dtype=torch.long)
        refs = torch.zeros(n_joints, kmax)
        sigma = torch.zeros(n_joints, 1)
        valid = torch.zeros(n_joints, kmax, dtype=torch.bool)
        offset = 0
        for j, n in enumerate(bins):
            index[j, :n] = torch.arange(offset, offset + n)
            refs[j, :n] = torch.linspace(-1.0, 1.0, n)
            sigma[j] = sigma_in_bins * 2.0 / (n - 1)
            valid[j, :n] = True
            offset += n
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("refs", refs, persistent=False)
        self.register_buffer("sigma", sigma, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    # -- softmax helpers ---------------------------------------------------------------------
    def _grouped_log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., out_dim] -> [..., D, Kmax] log-probabilities, -inf on padding."""
        pad = logits.new_full(logits.shape[:-1] + (1,), float("-inf"))
        grouped = torch.cat([logits, pad], dim=-1)[..., self.index]  # [..., D, Kmax]
        return torch.log_softmax(grouped, dim=-1)

    def encode_softmax(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised joint values [..., D] -> target distributions [..., D, Kmax] (0 on padding)."""
        logits = -((x.unsqueeze(-1) - self.refs) ** 2) / (2 * self.sigma**2)
        logits = logits.masked_fill(~self.valid, float("-inf"))
        return torch.softmax(logits, dim=-1)

    # -- public ------------------------------------------------------------------------------
    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Network output [..., out_dim] -> normalised joint values [..., D]."""
        if self.kind == "tanh":
            return torch.tanh(raw)
        probs = self._grouped_log_softmax(raw).exp()
        return (probs * self.refs).sum(-1)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the reconstruction loss compares the output with: x itself (tanh) or its coding."""
        if self.kind == "tanh":
            return x
        return self.encode_softmax(torch.nan_to_num(x))

    def reconstruction(self, raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-step reconstruction error [...]: 0.5 sum_j m_j (x_j - x_hat_j)^2 / D for tanh, or
        sum_j m_j KL(p_j || q_j) / D for softmax. `mask` [..., D] is 1 where joint j was observed."""
        if self.kind == "tanh":
            diff = torch.where(mask > 0, torch.tanh(raw) - target, torch.zeros_like(raw))
            return 0.5 * (diff**2).sum(-1) / self.n_joints
        logq = self._grouped_log_softmax(raw)
        logp = torch.log(target.clamp_min(1e-30))
        per_joint = torch.where(self.valid, target * (logp - logq), torch.zeros_like(logq)).sum(-1)
        return (per_joint * mask).sum(-1) / self.n_joints

