"""Matplotlib figures (Agg backend, PNG files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_joints(path: Path, times: np.ndarray, series: dict[str, np.ndarray], joint_names: list[str],
                title: str = "", max_joints: int = 8) -> None:
    """One panel per joint; `series` maps a label to [T, D] values on `times` (rows may be shorter)."""
    plt = _plt()
    n = min(len(joint_names), max_joints)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.5 * n + 0.6), sharex=True, squeeze=False)
    for j in range(n):
        ax = axes[j, 0]
        for label, values in series.items():
            ax.plot(times[: len(values)], values[:, j], label=label, lw=1.2)
        ax.set_ylabel(joint_names[j], fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("time [s]")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
