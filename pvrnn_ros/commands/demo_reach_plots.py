"""PNGs of `pvrnn-ros demo --task reach`: end-effector paths in the workspace, plan free energy."""
from __future__ import annotations

from pathlib import Path

METHOD_NAMES = {"pvrnn": "PV-RNN plan", "pvrnn_online": "PV-RNN online replanning", "nearest": "nearest demo replay",
                "bc": "goal-conditioned BC"}


def plot_paths(results, region, path: Path) -> None:
    """Rows: x-y (top view) and x-z (side view); columns: methods. Goals as stars (green reached, red not)."""
    import numpy as np

    from pvrnn_ros.core.plots import _plt

    plt = _plt()
    methods = list(dict.fromkeys(r.method for r in results))
    fig, axes = plt.subplots(2, len(methods), figsize=(4.2 * len(methods), 7.5), squeeze=False)
    lo, hi = np.asarray(region.lo), np.asarray(region.hi)
    for c, m in enumerate(methods):
        for row, (a, b, name) in enumerate(((0, 1, "y"), (0, 2, "z"))):
            ax = axes[row, c]
            ax.add_patch(plt.Rectangle((lo[a], lo[b]), hi[a] - lo[a], hi[b] - lo[b], fill=False, ls="--",
                                       color="0.5", label="reach region"))
            for r in (r for r in results if r.method == m):
                color = "C2" if r.outcome.success else "C3"
                ax.plot(r.end_effector[:, a], r.end_effector[:, b], color=color, lw=0.9, alpha=0.8)
                ax.scatter([r.goal[a]], [r.goal[b]], marker="*", s=70, color=color, edgecolor="k", lw=0.4, zorder=5)
            ax.set_xlabel("x (m)")
            ax.set_ylabel(f"{name} (m)")
            ax.set_aspect("equal", adjustable="datalim")
            ax.grid(alpha=0.3)
            rs = [r for r in results if r.method == m]
            ax.set_title(f"{METHOD_NAMES.get(m, m)}: {sum(r.outcome.success for r in rs)}/{len(rs)} "
                         f"({'top' if row == 0 else 'side'} view)", fontsize=9)
    fig.suptitle("End-effector paths measured in MuJoCo (green: within tolerance at the end; stars: goals)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_free_energy(results, path: Path) -> None:
    """The chosen plan's window free energy over the Adam iterations, one line per goal."""
    from pvrnn_ros.core.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for r in results:
        losses = r.extra.get("losses")
        if losses is not None and len(losses):
            ax.semilogy(losses, color="C2" if r.outcome.success else "C3", lw=0.9, alpha=0.8)
    ax.set_xlabel("plan iteration")
    ax.set_ylabel("window free energy (chosen candidate)")
    ax.set_title("PV-RNN planning to held-out goals (green: reached in the sim)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
