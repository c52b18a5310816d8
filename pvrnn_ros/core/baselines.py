"""Learned baselines trained to convergence: GRU / LSTM next-steps predictors and a GRU classifier.

An honest baseline is trained until its validation loss stops improving, not for a wall-clock
budget. Everything here is pure PyTorch (no rclpy, mujoco, triton or ray).

The generic early-stopping trainer
----------------------------------
    state, report = train_early_stopping(model, train_data, val_data, loss_fn,
                                         patience=100, max_epochs=3000, lr=3e-3)

`loss_fn(model, data) -> scalar tensor` is called with `train_data` (then Adam steps) and, under
`torch.no_grad()` in eval mode, with `val_data` every epoch; `train_data`/`val_data` are whatever
`loss_fn` expects (tensors, tuples, dicts). Training stops after `patience` epochs without a
validation loss lower than the best by more than `min_delta` (relative), or at `max_epochs`. The
model is left holding the best weights; `state` is a copy of them, and `report` an
`EarlyStoppingReport` (epochs run, best epoch, best validation loss, train loss at the best epoch,
seconds, whether it stopped early, the validation curve).

Predictors (what `pvrnn-ros eval` compares ER with)
---------------------------------------------------
    fitted = fit_predictor("gru", sequences, lengths, horizon, BaselineSettings())
    fitted.predict(obs_norm)            # [T, D] normalised -> [T, P, D]: predicted[t, h-1] ~ x[t+h]

`sequences` is [N, T, D] (normalised, zero-padded), `lengths` the valid steps of each. The
episodes are split by episode into training and validation (`val_fraction`, at least one each;
a single episode is split by time instead),
one model per hidden size in `hidden_sizes` is trained with early stopping, and the size with the
lowest validation loss wins. With `refit` (default) that size is then retrained on every episode
for its best epoch count, so the baseline sees the same data as the PV-RNN. `fitted.info` reports
the choice, every candidate's validation loss, epochs and seconds, the refit, and the totals
(`seconds`: the chosen size's early-stopped run plus its refit; `seconds_all_candidates`).

Recognition baseline
--------------------
    clf, report = fit_gru_classifier(inputs, labels, n_classes, settings=BaselineSettings())
    clf.predict_proba(sequence)         # [T, D] -> [T, C], causal: row t sees steps <= t only

`labels` is [N, T] integer class per step, -1 (`IGNORE_LABEL`) where unknown or padded: those
steps count in neither loss (`masked_cross_entropy`). The split, early stopping and hidden-size
choice are the predictors'.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

IGNORE_LABEL = -1


# ------------------------------------------------------------------------------------- settings
@dataclass
class BaselineSettings:
    """How the learned baselines are trained. Tests shrink `max_epochs` and `hidden_sizes`."""

    hidden_sizes: tuple[int, ...] = (32, 64, 128)  # candidates, chosen on validation loss
    max_epochs: int = 3000  # a ceiling, not a budget: early stopping normally ends training first
    patience: int = 100  # epochs without a better validation loss before stopping
    min_delta: float = 1e-3  # relative improvement that counts as better
    lr: float = 3e-3
    val_fraction: float = 0.25  # of the episodes, held out for validation (at least one)
    refit: bool = True  # then retrain the chosen size on every episode for the best epoch count
    seed: int = 0
    # initialisations per hidden size (torch seeds seed, seed + 1, ...; the validation episodes stay
    # those of `seed`), the lowest validation loss wins: what train.restarts gives the PV-RNN.
    # None: as many as the PV-RNN compared with had (`evaluate`), else 1
    restarts: int | None = None

    def validate(self) -> "BaselineSettings":
        if not self.hidden_sizes or any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise ValueError(f"baseline hidden_sizes = {self.hidden_sizes!r} is invalid: expected integers >= 1")
        if self.max_epochs < 1:
            raise ValueError(f"baseline max_epochs = {self.max_epochs!r} is invalid: expected an integer >= 1")
        if self.patience < 1:
            raise ValueError(f"baseline patience = {self.patience!r} is invalid: expected an integer >= 1")
        if not (0 <= self.min_delta < 1):
            raise ValueError(f"baseline min_delta = {self.min_delta!r} is invalid: expected a fraction in [0, 1)")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"baseline lr = {self.lr!r} is invalid: expected a learning rate > 0")
        if not (0 < self.val_fraction < 1):
            raise ValueError(f"baseline val_fraction = {self.val_fraction!r} is invalid: expected a value in (0, 1)")
        if self.restarts is not None and (not isinstance(self.restarts, int) or self.restarts < 1):
            raise ValueError(f"baseline restarts = {self.restarts!r} is invalid: expected an integer >= 1 or None")
        return self


# ------------------------------------------------------------------------------------- trainer
@dataclass
class EarlyStoppingReport:
    epochs: int  # epochs run
    best_epoch: int  # 1-based epoch whose weights were kept
    best_val_loss: float
    train_loss_at_best: float
    seconds: float
    stopped_early: bool  # False: reached max_epochs while still improving
    val_curve: list[float] = field(default_factory=list)

    def as_dict(self, curve: bool = False) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "val_curve"}
        if curve:
            out["val_curve"] = list(self.val_curve)
        return out


def train_early_stopping(
    model: nn.Module,
    train_data: Any,
    val_data: Any,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    *,
    patience: int = 100,
    max_epochs: int = 3000,
    lr: float = 3e-3,
    min_delta: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    progress: bool = False,
    desc: str = "baseline",
) -> tuple[dict[str, torch.Tensor], EarlyStoppingReport]:
    """Adam on `loss_fn(model, train_data)`, keeping the weights of the best validation loss."""
    from tqdm.auto import tqdm

    if patience < 1 or max_epochs < 1:
        raise ValueError(f"patience = {patience!r} and max_epochs = {max_epochs!r}: expected integers >= 1")
    opt = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    best_state = copy.deepcopy(model.state_dict())
    best_val, best_epoch, train_at_best = math.inf, 0, math.nan
    curve: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=max_epochs, desc=desc, unit="ep", disable=not progress, leave=False)
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        loss = loss_fn(model, train_data)
        if not torch.isfinite(loss):
            raise ValueError(f"{desc}: training loss became {float(loss)} at epoch {epoch} (lower the lr?)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = float(loss_fn(model, val_data))
        curve.append(val)
        if val < best_val * (1 - min_delta) or best_epoch == 0:
            best_val, best_epoch, train_at_best = val, epoch, float(loss.detach())
            best_state = copy.deepcopy(model.state_dict())
        bar.update(1)
        if epoch % 20 == 0:
            bar.set_postfix(train=f"{float(loss.detach()):.3g}", val=f"{val:.3g}", best=best_epoch)
        if epoch - best_epoch >= patience:
            break
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    report = EarlyStoppingReport(epochs=epoch, best_epoch=best_epoch, best_val_loss=best_val,
                                 train_loss_at_best=train_at_best, seconds=time.perf_counter() - start,
                                 stopped_early=epoch - best_epoch >= patience, val_curve=curve)
    return best_state, report


def train_epochs(model: nn.Module, data: Any, loss_fn: Callable[[nn.Module, Any], torch.Tensor], epochs: int,
                 lr: float = 3e-3) -> tuple[float, float]:
    """Plain Adam for a fixed number of epochs (the refit on all data) -> (final loss, seconds)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    loss = torch.tensor(math.nan)
    model.train()
    for _ in range(epochs):
        loss = loss_fn(model, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach()), time.perf_counter() - start


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Episode indices for training and validation (by episode, never by step; at least one each)."""
    if n < 2:
        raise ValueError(f"a validation split needs at least 2 training episodes, got {n}")
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def _split_single(data: torch.Tensor, length: int, val_fraction: float, horizon: int):
    """One [1, T, D] episode -> two pieces [2, T', D] (start, end) so the episode split applies."""
    cut = int(round(length * (1 - val_fraction)))
    if cut < horizon + 2 or length - cut < horizon + 2:
        raise ValueError(f"a single training episode of {length} steps is too short to hold out "
                         f"{val_fraction:.0%} of it for validation at horizon {horizon}")
    pieces = [data[0, :cut], data[0, cut:length]]
    out = torch.zeros(2, max(cut, length - cut), data.shape[2])
    for i, piece in enumerate(pieces):
        out[i, :len(piece)] = piece
    return out, torch.tensor([cut, length - cut])


# ------------------------------------------------------------------------------------- predictors
class RecurrentPredictor(nn.Module):
    """Reads normalised joint vectors, predicts the next P of them from its hidden state (GRU or LSTM)."""

    def __init__(self, kind: str, n_joints: int, hidden: int, horizon: int):
        super().__init__()
        cells = {"gru": nn.GRU, "lstm": nn.LSTM}
        if kind not in cells:
            raise ValueError(f"predictor kind = {kind!r} is invalid: expected one of {', '.join(cells)}")
        self.kind, self.hidden, self.horizon, self.n_joints = kind, hidden, horizon, n_joints
        self.rnn = cells[kind](n_joints, hidden, batch_first=True)
        self.head = nn.Linear(hidden, horizon * n_joints)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> [B, T, P, D]
        hidden, _ = self.rnn(x)
        return torch.tanh(self.head(hidden)).view(x.shape[0], x.shape[1], self.horizon, self.n_joints)


def horizon_targets(data: torch.Tensor, lengths: torch.Tensor, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """targets[n, t, h-1] = data[n, t + h] and where that step exists ([N, T, P, D], [N, T, P])."""
    T = data.shape[1]
    idx = torch.arange(T)[:, None] + torch.arange(1, horizon + 1)[None]  # [T, P]
    valid = (idx[None] < lengths[:, None, None]).float()
    return data[:, idx.clamp(max=T - 1)], valid


def _predictor_loss(model: RecurrentPredictor, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, targets, valid = batch
    err = ((model(x) - targets) ** 2).mean(-1)  # [N, T, P]
    return (err * valid).sum() / valid.sum().clamp_min(1)


@dataclass
class FittedPredictor:
    model: RecurrentPredictor
    info: dict[str, Any]

    @torch.no_grad()
    def predict(self, obs_norm: np.ndarray) -> np.ndarray:
        """[T, D] normalised observations -> [T, P, D] normalised predictions (causal)."""
        x = torch.as_tensor(np.asarray(obs_norm), dtype=torch.float32)[None]
        return self.model(x)[0].double().numpy()


def fit_predictor(kind: str, sequences: torch.Tensor, lengths: list[int] | torch.Tensor, horizon: int,
                  settings: BaselineSettings | None = None, progress: bool = False) -> FittedPredictor:
    """Train one `kind` predictor per candidate hidden size with early stopping; keep the best on validation."""
    settings = (settings or BaselineSettings()).validate()
    data = torch.as_tensor(sequences, dtype=torch.float32).detach().cpu()
    lengths = torch.as_tensor(lengths)
    split = "by episode"
    if data.shape[0] == 1:  # one demonstration: its last val_fraction of steps is the validation piece
        data, lengths = _split_single(data, int(lengths[0]), settings.val_fraction, horizon)
        split = "by time (a single training episode)"
    N, T, D = data.shape
    train_idx, val_idx = split_episodes(N, settings.val_fraction, settings.seed)
    if split != "by episode":
        train_idx, val_idx = [0], [1]
    targets, valid = horizon_targets(data, lengths, horizon)
    batch = lambda idx: (data[idx], targets[idx], valid[idx])  # noqa: E731
    started = time.perf_counter()
    candidates, best = [], None
    for hidden in settings.hidden_sizes:
        for init_seed in range(settings.seed, settings.seed + (settings.restarts or 1)):
            torch.manual_seed(init_seed)
            model = RecurrentPredictor(kind, D, hidden, horizon)
            _, report = train_early_stopping(model, batch(train_idx), batch(val_idx), _predictor_loss,
                                             patience=settings.patience, max_epochs=settings.max_epochs,
                                             lr=settings.lr, min_delta=settings.min_delta, progress=progress,
                                             desc=f"{kind.upper()} {hidden}")
            row = {"hidden": hidden, "init_seed": init_seed, "weights": sum(p.numel() for p in model.parameters()),
                   **report.as_dict()}
            candidates.append(row)
            if best is None or report.best_val_loss < best[1]["best_val_loss"]:
                best = (model, row)
    model, row = best
    refit = None
    if settings.refit:  # the validation episodes are training data too: the PV-RNN sees all of them
        torch.manual_seed(row["init_seed"])
        model = RecurrentPredictor(kind, D, row["hidden"], horizon)
        all_idx = list(range(N))
        final, secs = train_epochs(model, batch(all_idx), _predictor_loss, row["best_epoch"], settings.lr)
        refit = {"epochs": row["best_epoch"], "seconds": secs, "final_train_mse": final}
    info = {"kind": kind, "hidden": row["hidden"], "init_seed": row["init_seed"], "restarts": settings.restarts or 1,
            "weights": row["weights"], "epochs": row["epochs"],
            "best_epoch": row["best_epoch"], "best_val_mse": row["best_val_loss"], "refit": refit,
            "seconds": row["seconds"] + (refit["seconds"] if refit else 0.0),
            "seconds_all_candidates": time.perf_counter() - started,
            "train_episodes": len(train_idx), "val_episodes": len(val_idx), "split": split,
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
            "candidates": candidates}
    return FittedPredictor(model, info)


# ------------------------------------------------------------------------------------- classifier
class GRUClassifier(nn.Module):
    """A causal GRU that labels every step of a sequence with one of `n_classes` classes."""

    def __init__(self, n_inputs: int, n_classes: int, hidden: int = 64):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes = {n_classes!r} is invalid: expected at least 2 classes")
        self.n_inputs, self.n_classes, self.hidden = n_inputs, n_classes, hidden
        self.rnn = nn.GRU(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, D] -> logits [B, T, C]
        hidden, _ = self.rnn(x)
        return self.head(hidden)

    @torch.no_grad()
    def predict_proba(self, sequence: np.ndarray | torch.Tensor) -> np.ndarray:
        """[T, D] -> [T, C] class probabilities; row t depends on steps 0..t only."""
        x = torch.as_tensor(np.asarray(sequence), dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"sequence has shape {tuple(x.shape)}, expected [T, {self.n_inputs}]")
        self.eval()
        return torch.softmax(self(x[None])[0], -1).double().numpy()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the steps whose label is not IGNORE_LABEL (logits [N, T, C], labels [N, T])."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1).long(),
                           ignore_index=IGNORE_LABEL)


def _classifier_loss(model: GRUClassifier, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, labels = batch
    return masked_cross_entropy(model(x), labels)


def fit_gru_classifier(inputs: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, n_classes: int,
                       settings: BaselineSettings | None = None,
                       progress: bool = False) -> tuple[GRUClassifier, dict[str, Any]]:
    """inputs [N, T, D] (normalised, padded), labels [N, T] (IGNORE_LABEL where unknown) -> best classifier."""
    settings = (settings or BaselineSettings()).validate()
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if x.ndim != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"inputs {tuple(x.shape)} and labels {tuple(y.shape)}: expected [N, T, D] and [N, T]")
    bad = y[(y != IGNORE_LABEL) & ((y < 0) | (y >= n_classes))]
    if bad.numel():
        raise ValueError(f"label {int(bad[0])} is invalid: expected 0..{n_classes - 1} or {IGNORE_LABEL} (unknown)")
    train_idx, val_idx = split_episodes(x.shape[0], settings.val_fraction, settings.seed)
    for name, idx in (("training", train_idx), ("validation", val_idx)):
        if not bool((y[idx] != IGNORE_LABEL).any()):
            raise ValueError(f"the {name} episodes {idx} have no labelled step")
    started = time.perf_counter()
    best, candidates = None, []
    for hidden in settings.hidden_sizes:
        torch.manual_seed(settings.seed)
        model = GRUClassifier(x.shape[2], n_classes, hidden)
        _, report = train_early_stopping(model, (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]),
                                         _classifier_loss, patience=settings.patience,
                                         max_epochs=settings.max_epochs, lr=settings.lr,
                                         min_delta=settings.min_delta, progress=progress,
                                         desc=f"GRU classifier {hidden}")
        row = {"hidden": hidden, **report.as_dict()}
        candidates.append(row)
        if best is None or report.best_val_loss < best[1]["best_val_loss"]:
            best = (model, row)
    model, row = best
    return model, {"hidden": row["hidden"], "epochs": row["epochs"], "best_epoch": row["best_epoch"],
                   "best_val_cross_entropy": row["best_val_loss"], "seconds": row["seconds"],
                   "seconds_all_candidates": time.perf_counter() - started, "candidates": candidates}


# ------------------------------------------------------------------------------------- simple ones
def hold_predictions(obs: np.ndarray, horizon: int) -> np.ndarray:
    """Zero-order hold: x[t+h] = x[t]."""
    return np.repeat(obs[:, None, :], horizon, axis=1)


def const_velocity_predictions(obs: np.ndarray, horizon: int) -> np.ndarray:
    """x[t+h] = x[t] + h (x[t] - x[t-1])."""
    T, D = obs.shape
    vel = np.vstack([np.full((1, D), np.nan), np.diff(obs, axis=0)])
    h = np.arange(1, horizon + 1)[None, :, None]
    return obs[:, None, :] + h * vel[:, None, :]
