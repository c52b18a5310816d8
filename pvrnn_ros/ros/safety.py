"""Command safety stage: joint limits, max step per tick, hold on bad or stale input."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SafetyFilter", "limits_with_margin"]


def limits_with_margin(lo, hi, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Widen [lo, hi] by `margin` (a fraction of the span) on each side."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    span = hi - lo
    return lo - margin * span, hi + margin * span


@dataclass
class SafetyFilter:
    """`filter(target)` -> a safe command.

    - non-finite target entries hold the last command for that joint;
    - targets are clipped to [lower, upper];
    - each joint moves at most `max_step` per call (0 or inf disables);
    - `hold()` returns the last command (used when the input stream is stale).
    Before the first command, `last` must be seeded with the robot's measured position (`seed`).
    """

    lower: np.ndarray
    upper: np.ndarray
    max_step: float = 0.05
    last: np.ndarray | None = None
    clipped: int = field(default=0)
    rate_limited: int = field(default=0)

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        if self.lower.shape != self.upper.shape:
            raise ValueError(f"lower/upper shapes differ: {self.lower.shape} vs {self.upper.shape}")
        if np.any(self.upper < self.lower):
            raise ValueError("every upper limit must be >= its lower limit")

    def seed(self, position) -> None:
        p = np.asarray(position, dtype=np.float64).reshape(-1)
        if p.shape != self.lower.shape:
            raise ValueError(f"seed position has {p.shape[0]} values for {self.lower.shape[0]} joints")
        self.last = np.clip(np.where(np.isfinite(p), p, 0.5 * (self.lower + self.upper)), self.lower, self.upper)

    @property
    def ready(self) -> bool:
        return self.last is not None

    def filter(self, target) -> np.ndarray:
        if self.last is None:
            raise RuntimeError("SafetyFilter.seed(position) must be called before filter()")
        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if t.shape != self.lower.shape:
            raise ValueError(f"target has {t.shape[0]} values for {self.lower.shape[0]} joints")
        t = np.where(np.isfinite(t), t, self.last)
        c = np.clip(t, self.lower, self.upper)
        if np.any(c != t):
            self.clipped += 1
        if self.max_step and np.isfinite(self.max_step) and self.max_step > 0:
            d = np.clip(c - self.last, -self.max_step, self.max_step)
            if np.any(np.abs(c - self.last) > self.max_step):
                self.rate_limited += 1
            c = self.last + d
        self.last = c
        return c.copy()

    def hold(self) -> np.ndarray | None:
        return None if self.last is None else self.last.copy()
