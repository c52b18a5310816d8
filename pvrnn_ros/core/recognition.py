"""Recognition: which behaviour is being watched, read from a categorical modality (e.g. `task`)
that error regression infers while it is never observed (T-GLean's "goal understanding").

Scoring (per categorical modality, on held-out episodes with labels):
  frame accuracy        the most probable class equals the true one, over every recognised step
  accuracy after 0.5 s  the same, leaving out the first `settle_s` seconds after each switch
  switch delay          from a switch until the new class is first on top (before the next switch;
                        a switch whose class never comes on top counts as missed)
Baseline: the causal GRU classifier of `core.baselines` on the same labelled demonstrations,
trained to convergence (validation split by sequence, early stopping, hidden size chosen there).
"""
from __future__ import annotations

import time
from pathlib import Path

import dataclasses

import numpy as np
import torch
from torch import nn

from .checkpoint import TrainedModel
from .modalities import Modality, ModalityError


def true_labels(labels: list[str | None], modality: Modality, source: str) -> np.ndarray:
    """Class indices [T] (-1 where unlabelled); a class the model never saw is an error."""
    out = np.full(len(labels), -1, dtype=np.int64)
    for t, label in enumerate(labels):
        if label is None:
            continue
        if label not in modality.components:
            raise ModalityError(f"{source}: modality {modality.name!r} has class {label!r} at step {t}, which the "
                                f"model never saw in training (known classes: {', '.join(modality.components)})")
        out[t] = modality.components.index(label)
    return out


def switch_steps(truth: np.ndarray) -> list[int]:
    """Steps where the true class changes (to a labelled class)."""
    return [t for t in range(1, len(truth)) if truth[t] != truth[t - 1] and truth[t] >= 0]


def score(probabilities: np.ndarray, truth: np.ndarray, rate_hz: float, settle_s: float = 0.5) -> dict:
    """Scores of one or more concatenated episodes' rows (see module docstring). probabilities
    [T, C] (NaN rows: not recognised yet), truth [T] (-1: unlabelled)."""
    ok = np.all(np.isfinite(probabilities), axis=1) & (truth >= 0)
    top = np.where(ok, np.nan_to_num(probabilities).argmax(1), -1)
    hit = (top == truth) & ok
    settled = ok.copy()
    settle = int(round(settle_s * rate_hz))
    switches = switch_steps(truth)
    for k in switches:
        settled[k:k + settle] = False
    delays, missed = [], 0
    bounds = switches + [len(truth)]
    for k, nxt in zip(switches, bounds[1:]):
        found = np.flatnonzero(top[k:nxt] == truth[k])
        if found.size:
            delays.append(found[0] / rate_hz)
        else:
            missed += 1
    return {
        "frame_accuracy": float(hit.sum() / max(ok.sum(), 1)),
        "settled_accuracy": float(hit[settled].sum() / max(settled.sum(), 1)),
        "settle_s": settle_s,
        "steps": int(ok.sum()),
        "switches": len(switches),
        "switch_delay_mean_s": float(np.mean(delays)) if delays else None,
        "switch_delay_median_s": float(np.median(delays)) if delays else None,
        "switches_missed": missed,
    }


def confusion(probabilities: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    ok = np.all(np.isfinite(probabilities), axis=1) & (truth >= 0)
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, p in zip(truth[ok], probabilities[ok].argmax(1)):
        m[t, p] += 1
    return m


# ------------------------------------------------------------------------------------- GRU baseline
def train_gru_classifier(trained: TrainedModel, modality: Modality, settings=None, progress: bool = False):
    """The causal GRU classifier of `core.baselines`, trained to convergence on the model's own
    training data: joints in, the modality's labels out (unrecorded steps left out of the loss)."""
    from .baselines import IGNORE_LABEL, BaselineSettings, fit_gru_classifier

    J = trained.layout.n_joints
    col = trained.layout.slice(modality.name).start
    x = trained.data[..., :J].detach().cpu().float()
    labels = trained.data[..., col].detach().cpu().long()
    seen = trained.step_mask().cpu() > 0
    if trained.observed is not None:
        seen &= trained.observed[..., col].cpu() > 0
    labels = torch.where(seen, labels, torch.full_like(labels, IGNORE_LABEL))
    settings = settings or BaselineSettings(hidden_sizes=(32, 64), refit=False)
    model, info = fit_gru_classifier(x, labels, len(modality.components), settings, progress=progress)
    info["stopped"] = "early stopping" if info["epochs"] < settings.max_epochs else f"max_epochs={settings.max_epochs}"
    info["tried"] = [c["hidden"] for c in info["candidates"]]
    return model.eval(), info


# ------------------------------------------------------------------------------------- reports
def evaluate_recognition(trained: TrainedModel, episodes: list, recognised: list[dict[str, np.ndarray]],
                         out: Path, plots: bool = True, progress: bool = False, baselines=None) -> dict:
    """Score ER's recognition (ticks with every categorical modality unobserved) on resampled
    held-out `episodes` (with labels in `extra`) against the GRU classifier; writes
    recognition/<episode>.npz, metrics and PNGs. recognised[i][name]: [T, C] probabilities."""
    results = {}
    rate = trained.rate_hz
    (out / "recognition").mkdir(parents=True, exist_ok=True)
    for mod in trained.layout.modalities:
        if mod.kind != "categorical":
            continue
        labelled = [(ep, rec[mod.name]) for ep, rec in zip(episodes, recognised)
                    if mod.name in ep.extra and mod.name in rec]
        if not labelled:
            continue
        settings = None if baselines is None else dataclasses.replace(baselines, refit=False)
        if len(trained.sequence_lengths) >= 2:
            gru, gru_info = train_gru_classifier(trained, mod, settings, progress=progress)
        else:  # the classifier's validation split needs a second training sequence
            gru, gru_info = None, None
        er_p, gru_p, truth_all = [], [], []
        for ep, probs in labelled:
            truth = true_labels(ep.extra[mod.name].labels, mod, ep.source or ep.name)
            np.savez_compressed(out / "recognition" / f"{ep.name}.npz", times=np.asarray(ep.times, dtype=np.float64),
                                classes=np.array(mod.components), probabilities=probs,
                                truth=np.array([mod.components[i] if i >= 0 else "" for i in truth]),
                                modality=mod.name)
            if gru is not None:
                g = gru.predict_proba(trained.normalizer.normalize(ep.positions))
                g[~np.all(np.isfinite(probs), axis=1)] = np.nan  # the same steps for both
            else:
                g = np.full_like(probs, np.nan)
            er_p.append(probs)
            gru_p.append(g)
            truth_all.append(truth)
            if plots and len(er_p) <= 2:
                _plot_timeline(out / f"recognition_{ep.name}.png", ep.times, probs, g, truth, mod)
        er_s = score_episodes(er_p, truth_all, rate)
        gru_s = score_episodes(gru_p, truth_all, rate) if gru is not None else None
        cm = confusion(np.concatenate(er_p), np.concatenate(truth_all), len(mod.components))
        results[mod.name] = {"classes": list(mod.components), "er": er_s, "gru": gru_s, "gru_training": gru_info,
                             "confusion_er": cm.tolist()}
        if plots:
            _plot_confusion(out / f"recognition_confusion_{mod.name}.png", cm, mod.components)
    return results


def score_episodes(probs: list[np.ndarray], truths: list[np.ndarray], rate: float) -> dict:
    """Scores over several episodes: accuracies over all their steps, delays over all switches."""
    per = [score(p, t, rate) for p, t in zip(probs, truths)]
    allp, allt = np.concatenate(probs), np.concatenate(truths)
    # concatenating joins episodes at a fake switch: score accuracies on the whole, delays per episode
    total = score(allp, allt, rate)
    delays = []
    for p, t in zip(probs, truths):
        ok = np.all(np.isfinite(p), axis=1) & (t >= 0)
        top = np.where(ok, np.nan_to_num(p).argmax(1), -1)
        sw = switch_steps(t)
        for k, nxt in zip(sw, sw[1:] + [len(t)]):
            found = np.flatnonzero(top[k:nxt] == t[k])
            if found.size:
                delays.append(found[0] / rate)
    settled_hits = sum(s["settled_accuracy"] * _settled_count(p, t, rate) for s, p, t in zip(per, probs, truths))
    settled_n = sum(_settled_count(p, t, rate) for p, t in zip(probs, truths))
    total.update({
        "settled_accuracy": float(settled_hits / max(settled_n, 1)),
        "switches": sum(s["switches"] for s in per),
        "switches_missed": sum(s["switches_missed"] for s in per),
        "switch_delay_mean_s": float(np.mean(delays)) if delays else None,
        "switch_delay_median_s": float(np.median(delays)) if delays else None,
    })
    return total


def _settled_count(p: np.ndarray, t: np.ndarray, rate: float, settle_s: float = 0.5) -> int:
    ok = np.all(np.isfinite(p), axis=1) & (t >= 0)
    settle = int(round(settle_s * rate))
    for k in switch_steps(t):
        ok[k:k + settle] = False
    return int(ok.sum())


def recognition_table(results: dict) -> str:
    lines = []
    for name, r in results.items():
        g = r["gru_training"]
        lines += ["", f"Recognition of `{name}` ({len(r['classes'])} classes; ER with `{name}` never observed; "
                  f"the same steps for both):", "",
                  "| method | frame accuracy | accuracy > 0.5 s after a switch | switch delay mean / median (s) "
                  "| switches missed |", "|---|---|---|---|---|"]
        for key, label in (("er", "PV-RNN + ER"), ("gru", "GRU classifier")):
            s = r[key]
            if s is None:
                lines.append(f"| {label} | – (needs at least 2 training sequences) | | | |")
                continue
            mean = "–" if s["switch_delay_mean_s"] is None else f"{s['switch_delay_mean_s']:.2f}"
            med = "–" if s["switch_delay_median_s"] is None else f"{s['switch_delay_median_s']:.2f}"
            lines.append(f"| {label} | {s['frame_accuracy']:.3f} | {s['settled_accuracy']:.3f} | {mean} / {med} "
                         f"| {s['switches_missed']} of {s['switches']} |")
        if g is None:
            continue
        lines += ["", f"GRU classifier: hidden {g['hidden']} (chosen on validation from "
                  f"{', '.join(str(h) for h in g['tried'])}), {g['epochs']} epochs "
                  f"({g['stopped']}, best at {g['best_epoch']}), {g['seconds_all_candidates']:.0f} s to train "
                  f"(all candidate sizes)."]
    return "\n".join(lines) + "\n"


def _plot_timeline(path: Path, times, er_p, gru_p, truth, mod: Modality) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C = len(mod.components)
    fig, axes = plt.subplots(3, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [1.2, 2, 2]})
    top = np.where(np.all(np.isfinite(er_p), 1), np.nan_to_num(er_p).argmax(1), np.nan)
    gtop = np.where(np.all(np.isfinite(gru_p), 1), np.nan_to_num(gru_p).argmax(1), np.nan)
    axes[0].step(times, np.where(truth >= 0, truth, np.nan), where="post", lw=3, color="k", alpha=0.35, label="true")
    axes[0].step(times, top, where="post", lw=1.4, label="PV-RNN + ER")
    axes[0].step(times, gtop, where="post", lw=1.0, ls="--", label="GRU classifier")
    axes[0].set_yticks(range(C), mod.components)
    axes[0].legend(loc="upper right", fontsize=8)
    for ax, p, title in ((axes[1], er_p, "PV-RNN + ER: class probabilities"),
                         (axes[2], gru_p, "GRU classifier: class probabilities")):
        for c in range(C):
            ax.plot(times, p[:, c], label=mod.components[c])
        for k in switch_steps(truth):
            ax.axvline(times[k], color="k", lw=0.6, alpha=0.4)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
    axes[1].legend(loc="upper right", fontsize=7, ncol=C)
    axes[2].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(path: Path, cm: np.ndarray, classes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{rows[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("recognised (PV-RNN + ER)")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

