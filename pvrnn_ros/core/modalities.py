"""Modalities: the named output groups a model learns beside the joints.

A step's data vector is the joints followed by each extra modality in config order:
  continuous (e.g. `end_effector` with components x, y, z): one dimension per component,
    min/max normalised like the joints, tanh coding;
  categorical (e.g. `task`, read from `<episode>.segments.json` sidecars or a std_msgs/String
    topic): one dimension holding the class index, a softmax over the classes seen in training.

The reconstruction term weights each modality and normalises it by its size (as GLean does):
  rec_t = sum_m weight_m / D_m * sum_{j in m} e_j,
which the kernels see as a per-dimension mask value c_j = weight_m * D / D_m on observed
dimensions (they divide by D), so a joints-only model keeps c_j = 1 and its old loss.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .coding import Normalizer


class ModalityError(ValueError):
    """Modality data are missing, of the wrong width, or hold a class the model never saw."""


@dataclass
class Modality:
    name: str
    kind: str  # "continuous" | "categorical"
    components: list[str]  # continuous: component names (x, y, z); categorical: class names
    weight: float = 1.0
    normalizer: Normalizer | None = None  # continuous only

    @property
    def width(self) -> int:
        """Data dimensions: one per component, or one class index."""
        return len(self.components) if self.kind == "continuous" else 1

    def state_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "components": list(self.components),
                "weight": float(self.weight),
                "normalizer": None if self.normalizer is None else self.normalizer.state_dict()}

    @classmethod
    def from_state_dict(cls, s: dict) -> "Modality":
        norm = s.get("normalizer")
        return cls(s["name"], s["kind"], list(s["components"]), float(s.get("weight", 1.0)),
                   None if norm is None else Normalizer.from_state_dict(norm))


@dataclass
class ModalityLayout:
    """Where each modality sits in the data vector, how it is coded and weighted."""

    n_joints: int
    modalities: list[Modality] = field(default_factory=list)
    joint_weight: float = 1.0

    @property
    def n_dims(self) -> int:
        return self.n_joints + sum(m.width for m in self.modalities)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modalities]

    def get(self, name: str) -> Modality:
        for m in self.modalities:
            if m.name == name:
                return m
        raise ModalityError(f"the model has no modality {name!r} (it has joints"
                            + "".join(f", {n}" for n in self.names) + ")")

    def slice(self, name: str) -> slice:
        if name == "joints":
            return slice(0, self.n_joints)
        start = self.n_joints
        for m in self.modalities:
            if m.name == name:
                return slice(start, start + m.width)
            start += m.width
        self.get(name)  # raises with the list of names
        raise AssertionError  # unreachable

    def coding_extra(self) -> list[tuple[str, int]]:
        """OutputCoding's `extra` argument: the coding of every dimension after the joints."""
        out: list[tuple[str, int]] = []
        for m in self.modalities:
            if m.kind == "continuous":
                out += [("tanh", 1)] * m.width
            else:
                out.append(("categorical", len(m.components)))
        return out

    def dim_weights(self) -> np.ndarray:
        """c_j [D]: the mask value of an observed dimension (module docstring)."""
        D = self.n_dims
        w = np.full(D, self.joint_weight * D / max(self.n_joints, 1))
        for m in self.modalities:
            w[self.slice(m.name)] = m.weight * D / m.width
        return w

    def dim_names(self, joint_names: list[str]) -> list[str]:
        names = list(joint_names)
        for m in self.modalities:
            names += [f"{m.name}.{c}" for c in m.components] if m.kind == "continuous" else [m.name]
        return names

    def encode(self, values: dict[str, object], T: int) -> tuple[np.ndarray, np.ndarray]:
        """The extra modalities of T steps, normalised: ([T, D - n_joints] values, [T, ...] 1 where
        observed). `values[name]`: continuous [T, width] raw (NaN = unobserved), categorical a list
        of T class names (None = unobserved); a modality absent from `values` is unobserved."""
        cols, obs = [], []
        for m in self.modalities:
            v = values.get(m.name)
            if m.kind == "continuous":
                if v is None:
                    arr = np.full((T, m.width), np.nan)
                else:
                    arr = np.asarray(v, dtype=np.float64).reshape(T, -1)
                    if arr.shape[1] != m.width:
                        raise ModalityError(f"modality {m.name!r} has {arr.shape[1]} values per step, expected "
                                            f"{m.width} ({', '.join(m.components)})")
                seen = np.isfinite(arr)
                cols.append(np.where(seen, m.normalizer.normalize(np.where(seen, arr, 0.0)), 0.0))
                obs.append(seen.astype(np.float64))
            else:
                labels = [None] * T if v is None else list(v)
                if len(labels) != T:
                    raise ModalityError(f"modality {m.name!r} has {len(labels)} labels, expected {T}")
                idx = np.zeros((T, 1))
                seen = np.zeros((T, 1))
                for t, label in enumerate(labels):
                    if label is None:
                        continue
                    if label not in m.components:
                        raise ModalityError(f"modality {m.name!r}: class {label!r} was never seen in training "
                                            f"(known classes: {', '.join(m.components)})")
                    idx[t, 0] = m.components.index(label)
                    seen[t, 0] = 1.0
                cols.append(idx)
                obs.append(seen)
        if not cols:
            return np.zeros((T, 0)), np.zeros((T, 0))
        return np.concatenate(cols, axis=1), np.concatenate(obs, axis=1)

    def state_dict(self) -> dict:
        return {"joint_weight": float(self.joint_weight), "modalities": [m.state_dict() for m in self.modalities]}

    @classmethod
    def from_state_dict(cls, n_joints: int, s: dict | None) -> "ModalityLayout":
        """`s` None: a checkpoint from before modalities existed (joints only)."""
        if not s:
            return cls(n_joints)
        return cls(n_joints, [Modality.from_state_dict(m) for m in s.get("modalities", [])],
                   float(s.get("joint_weight", 1.0)))
