"""Checkpoints: one dict holding everything a trained model is (nanoGPT style), written atomically."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .coding import Normalizer
from .config import Config
from .modalities import ModalityLayout
from .model import PVRNN, AdaptiveVectors

FORMAT = "pvrnn_ros.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, or not a pvrnn_ros checkpoint."""


@dataclass
class TrainedModel:
    """A PV-RNN with everything needed to use it on raw joint data."""

    config: Config
    model: PVRNN
    adaptive: AdaptiveVectors
    joint_names: list[str]
    normalizer: Normalizer
    sequence_names: list[str]
    sequence_lengths: list[int]
    data: torch.Tensor  # [N, T_max, D] normalised training data (zeros past each end), joints then modalities
    epoch: int = 0
    history: dict[str, list] = field(default_factory=dict)
    optimizer_state: dict | None = None
    rng_state: torch.Tensor | None = None
    layout: ModalityLayout | None = None  # modalities beside the joints (None = joints only)
    observed: torch.Tensor | None = None  # [N, T_max, D] 1 where a dimension was recorded (None = all)

    def __post_init__(self):
        if self.layout is None:
            self.layout = ModalityLayout(len(self.joint_names))

    @property
    def rate_hz(self) -> float:
        return self.config.data.rate_hz

    @property
    def device(self) -> torch.device:
        return self.model.inv_tau.device

    def step_mask(self) -> torch.Tensor:
        T = self.data.shape[1]
        lengths = torch.tensor(self.sequence_lengths, device=self.data.device)
        return (torch.arange(T, device=self.data.device)[None] < lengths[:, None]).to(self.data.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config": self.config.to_dict(),
            "joint_names": list(self.joint_names),
            "normalizer": self.normalizer.state_dict(),
            "sequence_names": list(self.sequence_names),
            "sequence_lengths": list(self.sequence_lengths),
            "data": self.data.detach().cpu(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "adaptive": {k: v.detach().cpu() for k, v in self.adaptive.state_dict().items()},
            "epoch": int(self.epoch),
            "history": self.history,
            "optimizer": self.optimizer_state,
            "rng_state": self.rng_state,
            "modalities": self.layout.state_dict(),
            "observed": None if self.observed is None else self.observed.detach().cpu(),
        }


def save_checkpoint(trained: TrainedModel, path: str | Path) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(trained.state_dict(), tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle of something else, ...
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a pvrnn_ros checkpoint (no '{FORMAT}' format marker)")
    if raw.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {raw.get('version')} is not supported (expected {VERSION})")
    try:
        config = Config.from_dict(raw["config"])
        joint_names = list(raw["joint_names"])
        layout = ModalityLayout.from_state_dict(len(joint_names), raw.get("modalities"))
        model = PVRNN(config.model, len(joint_names), layout.coding_extra())
        model.load_state_dict(raw["model"])
        adaptive = AdaptiveVectors(*raw["adaptive"]["mu"].shape)
        adaptive.load_state_dict(raw["adaptive"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: checkpoint contents do not match its config: {exc}") from None
    device = torch.device(device)
    return TrainedModel(
        config=config,
        model=model.to(device),
        adaptive=adaptive.to(device),
        joint_names=joint_names,
        normalizer=Normalizer.from_state_dict(raw["normalizer"]),
        sequence_names=list(raw["sequence_names"]),
        sequence_lengths=[int(n) for n in raw["sequence_lengths"]],
        data=raw["data"].to(device),
        epoch=int(raw["epoch"]),
        history=raw.get("history") or {},
        optimizer_state=raw.get("optimizer"),
        rng_state=raw.get("rng_state"),
        layout=layout,
        observed=None if raw.get("observed") is None else raw["observed"].to(device),
    )

