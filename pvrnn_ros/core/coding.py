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
    """How the network's output layer codes each data dimension.

    The data vector of one step is the joints (D_j values) followed by the extra modalities in
    order: a continuous modality adds one dimension per component, a categorical one adds one
    dimension holding the class index. Each dimension has its own output units:

    tanh: one unit, x_hat = tanh(raw) (joints with output "tanh", every continuous modality).
    softmax: the lab's coding of joints. Joint j has n_j reference points r_jk spread over [-1, 1];
      a target value x is coded as p_jk proportional to exp(-(x - r_jk)^2 / (2 sigma_j^2)), the
      network outputs a softmax per joint and is decoded as the weighted mean sum_k q_jk r_jk.
    categorical: C units, a softmax over the modality's classes; the target is the one-hot of the
      class index, the loss KL(p || q) as for softmax joints.

    `kind` is "tanh" when every dimension is a tanh unit, else "softmax": the grouped layout the
    fast kernels take, where a group of one unit (`bins[j] == 1`) is a tanh unit.
    """

    def __init__(self, kind: str, n_joints: int, bins: list[int] | int = 11, sigma_in_bins: float = 1.0,
                 extra: list[tuple[str, int]] | None = None):
        """extra: (coding, width) per extra data dimension, after the joints: ("tanh", 1) or
        ("categorical", C)."""
        super().__init__()
        if kind not in ("tanh", "softmax"):
            raise ValueError(f"output = {kind!r} is invalid: expected 'tanh' or 'softmax'")
        self.joint_kind = kind
        self.n_joints = n_joints
        extra = list(extra or [])
        if kind == "softmax":
            joint_bins = [bins] * n_joints if isinstance(bins, int) else list(bins)
            if len(joint_bins) != n_joints:
                raise ValueError(f"softmax_bins has {len(joint_bins)} entries but the data have {n_joints} joints")
            dims = [("softmax", int(b)) for b in joint_bins]
        else:
            dims = [("tanh", 1)] * n_joints
        for coding, width in extra:
            if coding not in ("tanh", "categorical") or (coding == "tanh" and width != 1) or width < 1:
                raise ValueError(f"extra output dimension {(coding, width)!r} is invalid: expected "
                                 f"('tanh', 1) or ('categorical', C >= 1)")
            dims.append((coding, int(width)))
        self.dim_kinds = [c for c, _ in dims]
        self.n_dims = len(dims)
        self.kind = "tanh" if all(c == "tanh" for c in self.dim_kinds) else "softmax"
        if self.kind == "tanh":
            self.bins = [1] * self.n_dims
            self.out_dim = self.n_dims
            return
        self.bins = [w for _, w in dims]
        self.out_dim = int(sum(self.bins))
        kmax = max(self.bins)
        # gather index [D, Kmax] into the logits padded with one -inf column (index out_dim)
        index = torch.full((self.n_dims, kmax), self.out_dim, dtype=torch.long)
        refs = torch.zeros(self.n_dims, kmax)
        sigma = torch.ones(self.n_dims, 1)
        valid = torch.zeros(self.n_dims, kmax, dtype=torch.bool)
        offset = 0
        for j, (coding, n) in enumerate(dims):
            index[j, :n] = torch.arange(offset, offset + n)
            if coding == "softmax":
                refs[j, :n] = torch.linspace(-1.0, 1.0, n)
                sigma[j] = sigma_in_bins * 2.0 / (n - 1)
            valid[j, :n] = True
            offset += n
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("refs", refs, persistent=False)
        self.register_buffer("sigma", sigma, persistent=False)
        self.register_buffer("valid", valid, persistent=False)
        self.register_buffer("is_tanh", torch.tensor([c == "tanh" for c in self.dim_kinds]), persistent=False)
        self.register_buffer("is_categorical", torch.tensor([c == "categorical" for c in self.dim_kinds]),
                             persistent=False)
        # raw output of each tanh dimension: the first (only) unit of its group
        self.register_buffer("tanh_unit", index[:, 0].clone(), persistent=False)

    # -- grouped helpers ---------------------------------------------------------------------
    def _grouped_log_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., out_dim] -> [..., D, Kmax] log-probabilities, -inf on padding."""
        pad = logits.new_full(logits.shape[:-1] + (1,), float("-inf"))
        grouped = torch.cat([logits, pad], dim=-1)[..., self.index]  # [..., D, Kmax]
        return torch.log_softmax(grouped, dim=-1)

    def encode_softmax(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised joint values [..., D] -> target distributions [..., D, Kmax] (0 on padding).
        Grouped layout: a tanh dimension keeps its value in bin 0; a categorical one becomes the
        one-hot of its class index."""
        logits = -((x.unsqueeze(-1) - self.refs) ** 2) / (2 * self.sigma**2)
        logits = logits.masked_fill(~self.valid, float("-inf"))
        coded = torch.softmax(logits, dim=-1)
        kmax = self.refs.shape[1]
        k = torch.arange(kmax, device=x.device)
        value_in_bin0 = torch.where(k == 0, x.unsqueeze(-1), torch.zeros_like(coded))
        one_hot = (x.round().long().unsqueeze(-1) == k).to(coded.dtype)
        coded = torch.where(self.is_tanh[:, None], value_in_bin0, coded)
        return torch.where(self.is_categorical[:, None], one_hot, coded)

    # -- public ------------------------------------------------------------------------------
    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Network output [..., out_dim] -> normalised values [..., D] (a categorical dimension
        decodes to its most probable class index)."""
        if self.kind == "tanh":
            return torch.tanh(raw)
        logq = self._grouped_log_softmax(raw)
        values = (logq.exp() * self.refs).sum(-1)
        values = torch.where(self.is_tanh, torch.tanh(raw[..., self.tanh_unit]), values)
        return torch.where(self.is_categorical, logq.argmax(-1).to(values.dtype), values)

    def probabilities(self, raw: torch.Tensor, dim: int) -> torch.Tensor:
        """Class probabilities [..., C] of categorical data dimension `dim`."""
        if self.kind == "tanh" or self.dim_kinds[dim] != "categorical":
            raise ValueError(f"output dimension {dim} is {self.dim_kinds[dim]!r}, not categorical")
        off, n = int(self.index[dim, 0]), self.bins[dim]
        return torch.softmax(raw[..., off:off + n], dim=-1)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the reconstruction loss compares the output with: x itself (tanh) or its coding."""
        if self.kind == "tanh":
            return x
        return self.encode_softmax(torch.nan_to_num(x))

    def reconstruction(self, raw: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-step reconstruction error [...]: sum_j m_j e_j / D with e_j = 0.5 (x_j - x_hat_j)^2 for a
        tanh dimension and KL(p_j || q_j) for a softmax or categorical one. `mask` [..., D] is the
        weight of dimension j where it was observed, 0 where it was not (1 for joints; modality
        weights scale it, see `core.modalities`)."""
        if self.kind == "tanh":
            diff = torch.where(mask > 0, torch.tanh(raw) - target, torch.zeros_like(raw))
            return 0.5 * (mask * diff**2).sum(-1) / self.n_dims
        logq = self._grouped_log_softmax(raw)
        logp = torch.log(target.clamp_min(1e-30))
        per_dim = torch.where(self.valid, target * (logp - logq), torch.zeros_like(logq)).sum(-1)
        y = torch.tanh(raw[..., self.tanh_unit])
        sq = torch.where(mask > 0, y - target[..., 0], torch.zeros_like(y))
        per_dim = torch.where(self.is_tanh, 0.5 * sq**2, per_dim)
        return (per_dim * mask).sum(-1) / self.n_dims
