"""Training: full BPTT over whole sequences, Adam on the weights and all A jointly."""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import TrainedModel, load_checkpoint, save_checkpoint
from .coding import Normalizer
from .config import Config, TrainConfig
from .data import Demonstration, pad_batch, resample
from .modalities import Modality, ModalityLayout
from .model import PVRNN, AdaptiveVectors, free_energy, overshoot_reconstruction


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device = {name!r} but CUDA is not available on this machine")
    return device


def build_model(config: Config, demos: list[Demonstration], device: torch.device | str = "cpu") -> TrainedModel:
    """A freshly initialised model for these demonstrations (resampled to the model rate)."""
    if not demos:
        raise ValueError("no demonstrations to train on")
    torch.manual_seed(config.train.seed)
    rate = config.data.rate_hz
    resampled = [resample(d, rate) for d in demos]
    short = [d.source for d in resampled if len(d) < 2]
    if short:
        raise ValueError(f"demonstrations shorter than two steps at {rate} Hz: {short}")
    joint_names = resampled[0].joint_names
    normalizer = Normalizer.fit([d.positions for d in resampled], config.data.scale, config.data.margin)
    layout = fit_layout(config, resampled)
    rows, seen = [], []
    for d in resampled:
        values = {name: (series.labels if series.categorical else series.values) for name, series in d.extra.items()
                  if name in layout.names}
        try:
            extra, observed = layout.encode(values, len(d))
        except ValueError as exc:
            raise ValueError(f"{d.source}: {exc}") from None
        rows.append(np.concatenate([normalizer.normalize(d.positions), extra], axis=1))
        seen.append(np.concatenate([np.ones_like(d.positions), observed], axis=1))
    data, _ = pad_batch(rows)
    observed, _ = pad_batch(seen)
    model = PVRNN(config.model, len(joint_names), layout.coding_extra())
    adaptive = AdaptiveVectors(len(resampled), data.shape[1], model.z_total)
    device = torch.device(device)
    return TrainedModel(
        config=config,
        model=model.to(device),
        adaptive=adaptive.to(device),
        joint_names=list(joint_names),
        normalizer=normalizer,
        sequence_names=[d.name for d in resampled],
        sequence_lengths=[len(d) for d in resampled],
        data=torch.tensor(data, dtype=torch.float32, device=device),
        layout=layout,
        observed=torch.tensor(observed, dtype=torch.float32, device=device) if layout.modalities else None,
    )


def fit_layout(config: Config, demos: list[Demonstration]) -> ModalityLayout:
    """The modalities of `config.data.modalities` as these demonstrations hold them: components
    and normalisation (continuous), classes seen (categorical). A modality missing from some
    demonstrations is masked there; missing from all, or of differing widths, is an error."""
    modalities = []
    for mc in config.data.modalities:
        having = [d for d in demos if mc.name in d.extra]
        if not having:
            where = ("a segments sidecar (<episode>.segments.json) or a std_msgs/String topic"
                     if mc.kind == "categorical" else
                     f"columns '{mc.name}.<component>' (CSV / npz) or a geometry_msgs/PointStamped topic (bags)")
            raise ValueError(f"data.modalities '{mc.name}': no demonstration has it (expected {where}; "
                             f"looked in {demos[0].source or demos[0].name} and {len(demos) - 1} more)")
        if mc.kind == "categorical":
            classes = sorted({lab for d in having for lab in d.extra[mc.name].labels if lab is not None})
            modalities.append(Modality(mc.name, "categorical", classes, mc.weight))
            continue
        comps = having[0].extra[mc.name].components
        for d in having[1:]:
            if d.extra[mc.name].components != comps:
                raise ValueError(f"{d.source or d.name}: modality '{mc.name}' has components "
                                 f"{d.extra[mc.name].components}, but {having[0].source or having[0].name} has {comps}")
        norm = Normalizer.fit([d.extra[mc.name].values for d in having], config.data.scale, config.data.margin)
        modalities.append(Modality(mc.name, "continuous", list(comps), mc.weight, norm))
    return ModalityLayout(len(demos[0].joint_names), modalities, config.data.joint_weight)


def training_mask(trained: TrainedModel) -> torch.Tensor:
    """[N, T, D] mask of the reconstruction term: the modality weight c_j where dimension j was
    recorded at a valid step, else 0 (`core.modalities`)."""
    mask = trained.step_mask().unsqueeze(-1).expand_as(trained.data)
    if trained.observed is not None:
        mask = mask * trained.observed
    weights = torch.as_tensor(trained.layout.dim_weights(), dtype=trained.data.dtype, device=trained.device)
    return (mask * weights).contiguous()


@dataclass
class EpochStats:
    loss: float
    rec: float
    rec_mse: float  # mean squared error per joint and step, normalised units
    kl: list[float]  # per layer, summed over time, per sequence, unweighted


class Trainer:
    """Owns the optimiser and the noise generator; `run` advances to a target epoch count."""

    def __init__(self, trained: TrainedModel):
        self.trained = trained
        cfg = trained.config.train
        params = list(trained.model.parameters()) + list(trained.adaptive.parameters())
        # train.backend: "reference" = autograd; "cpu" = fused numba loss and gradients
        # (pvrnn_ros.kernels.cpu_train), same Adam; "auto" = cpu when numba imports and device is cpu
        self.backend = cfg.backend
        on_cpu = trained.device.type == "cpu"
        if self.backend == "auto" and cfg.overshoot_steps > 0:
            self.backend = "reference"  # the overshoot term is autograd's (the fused trainer has none)
        if self.backend == "auto":
            try:
                from pvrnn_ros.kernels import cpu_train  # noqa: F401

                self.backend = "cpu" if on_cpu else "reference"
            except ImportError:
                self.backend = "reference"
            import logging

            logging.getLogger("pvrnn_ros.train").info("train.backend auto -> %s", self.backend)
        if self.backend == "cpu" and not on_cpu:
            raise ValueError(f"train.backend = 'cpu' needs the model on the CPU, not {trained.device}")
        if self.backend == "cpu":
            from pvrnn_ros.kernels import cpu_train

            self._cpu_train = cpu_train
            self._cpu_threads = cpu_train.resolve_threads(cfg.cpu_threads)
            # the same Adam, applied by cpu_train.CpuAdam (its state stays this optimizer's; the
            # "fused" flag marks a state dict saved by this backend)
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr)
        fused = self.optimizer.defaults.get("fused")
        if trained.optimizer_state is not None:
            self.optimizer.load_state_dict(trained.optimizer_state)
            for group in self.optimizer.param_groups:  # the saved flag is the saving backend's
                if "fused" in group:
                    group["fused"] = fused
        if self.backend == "cpu":
            self._adam = self._cpu_train.CpuAdam(self.optimizer)
        self.generator = torch.Generator(device=trained.device)
        if trained.rng_state is not None:
            self.generator.set_state(trained.rng_state)
        else:
            self.generator.manual_seed(cfg.seed + 1)
        self.target = trained.model.coding.target(trained.data)
        self.step_mask = trained.step_mask()
        self.joint_mask = training_mask(trained)  # (once, not per epoch)
        # the decoded-error statistic compares values: categorical dimensions hold class indices
        self.value_dims = torch.as_tensor([k != "categorical" for k in trained.model.coding.dim_kinds],
                                          dtype=trained.data.dtype, device=trained.device)
        self.value_data = trained.data * self.value_dims
        self.stop_requested = False

    def _noisy_target(self, std: float) -> torch.Tensor:
        """The coded target, from demonstrations with fresh N(0, std^2) noise on their continuous
        dimensions (train.target_noise; std 0: the fixed target)."""
        if std <= 0:
            return self.target
        data = self.trained.data
        noise = torch.randn(data.shape, generator=self.generator, device=data.device, dtype=data.dtype)
        return self.trained.model.coding.target(data + std * noise * self.value_dims)

    def epoch(self) -> EpochStats:
        tr, cfg = self.trained, self.trained.config.train
        model, A = tr.model, tr.adaptive
        N = A.mu.shape[0]
        if cfg.batch_size and cfg.batch_size < N:
            order = torch.randperm(N, generator=self.generator, device=tr.device)
            batches = list(order.split(cfg.batch_size))
        else:
            batches = [None]
        total = rec = sq = steps = 0.0
        kl = torch.zeros(len(model.z_sizes))
        target = self._noisy_target(cfg.target_noise)
        for idx in batches:
            sel = (lambda x: x) if idx is None else (lambda x: x[idx])
            if self.backend == "cpu":  # fused kernel: loss and all gradients, then the same Adam step
                a_mu, a_ls = sel(A.mu.detach()), sel(A.logsigma.detach())
                eps = torch.randn(a_mu.shape, generator=self.generator, device=tr.device, dtype=a_mu.dtype)
                step_mask = sel(self.step_mask)
                terms, param_grads, g_mu, g_ls = self._cpu_train.model_grads(
                    model, a_mu, a_ls, eps, sel(target), sel(self.joint_mask), step_mask,
                    model.kl_w, model.kl_w1, data=sel(self.value_data), threads=self._cpu_threads)
                if idx is not None:  # as autograd through the row selection: zero outside the batch
                    full_mu, full_ls = torch.zeros_like(A.mu), torch.zeros_like(A.logsigma)
                    full_mu[idx], full_ls[idx] = g_mu, g_ls
                    g_mu, g_ls = full_mu, full_ls
                if cfg.weight_decay > 0:
                    param_grads = [(p, g + cfg.weight_decay * p.detach()) for p, g in param_grads]
                self._adam.step(param_grads + [(A.mu, g_mu), (A.logsigma, g_ls)], cfg.grad_clip)
                n = a_mu.shape[0]
                total += terms.total * n
                rec += terms.rec * n
                kl += terms.kl_by_layer * n
                sq += terms.sq_err
                steps += float(step_mask.sum())
                continue
            a_mu, a_ls = sel(A.mu), sel(A.logsigma)
            eps = torch.randn(a_mu.shape, generator=self.generator, device=tr.device, dtype=a_mu.dtype)
            overshoot = cfg.overshoot_steps > 0 and cfg.overshoot_weight > 0
            out = model.posterior_forward(a_mu, a_ls, eps, keep_h=overshoot)
            step_mask = sel(self.step_mask)
            terms = free_energy(model, out, sel(target), sel(self.joint_mask), step_mask,
                                model.kl_w, model.kl_w1)
            loss = terms.total
            if overshoot:
                loss = loss + cfg.overshoot_weight * overshoot_reconstruction(
                    model, out, sel(target), sel(self.joint_mask), step_mask, cfg.overshoot_steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.weight_decay > 0:
                with torch.no_grad():
                    for p in model.parameters():
                        if p.grad is not None:
                            p.grad.add_(p, alpha=cfg.weight_decay)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                               cfg.grad_clip)
            self.optimizer.step()
            n = a_mu.shape[0]
            total += float(terms.total.detach()) * n
            rec += float(terms.rec.detach()) * n
            kl += terms.kl_by_layer.detach().cpu() * n
            with torch.no_grad():
                values = model.coding.decode(out.raw) * self.value_dims
                err = (values - sel(self.value_data)) ** 2 * step_mask.unsqueeze(-1)
                sq += float(err.sum())
                steps += float(step_mask.sum())
        tr.epoch += 1
        return EpochStats(total / N, rec / N, sq / max(steps * tr.data.shape[2], 1), (kl / N).tolist())

    def run(self, epochs: int, out_dir: Path | None = None, progress: bool = True,
            checkpoint_every: int | None = None) -> TrainedModel:
        """Train until `trained.epoch == epochs`, checkpointing to out_dir/model.pt."""
        from tqdm.auto import tqdm

        tr = self.trained
        every = checkpoint_every or tr.config.train.checkpoint_every
        hist = tr.history
        for key in ("epoch", "loss", "rec", "rec_mse", "kl", "seconds"):
            hist.setdefault(key, [])
        hist["backend"] = self.backend
        hist["threads"] = self._cpu_threads if self.backend == "cpu" else torch.get_num_threads()
        start_epoch = tr.epoch
        bar = tqdm(total=epochs, initial=start_epoch, disable=not progress, desc="train", unit="ep",
                   dynamic_ncols=True)
        t_last = time.perf_counter()
        with _stop_on_sigint(self):
            if not progress:  # without a bar, say that training (and Ctrl-C's save-and-stop) has begun
                print(f"training: epoch {start_epoch} -> {epochs} (Ctrl-C saves and stops)", flush=True)
            while tr.epoch < epochs and not self.stop_requested:
                for group in self.optimizer.param_groups:  # both trainers' Adam read it here
                    group["lr"] = scheduled_lr(tr.config.train, tr.epoch, epochs)
                stats = self.epoch()
                now = time.perf_counter()
                hist["epoch"].append(tr.epoch)
                hist["loss"].append(stats.loss)
                hist["rec"].append(stats.rec)
                hist["rec_mse"].append(stats.rec_mse)
                hist["kl"].append(stats.kl)
                hist["seconds"].append(now - t_last)
                t_last = now
                bar.update(1)
                if tr.epoch % 10 == 0 or tr.epoch == epochs:
                    bar.set_postfix(loss=f"{stats.loss:.4g}", rec=f"{stats.rec:.4g}", mse=f"{stats.rec_mse:.2e}",
                                    kl="/".join(f"{k:.3g}" for k in stats.kl))
                if out_dir is not None and tr.epoch % every == 0 and tr.epoch < epochs:
                    self.save(out_dir)
        bar.close()
        if out_dir is not None:
            self.save(out_dir)
            if tr.epoch > start_epoch:
                plot_history(hist, Path(out_dir) / "loss.png", [f"layer {i + 1}" for i in range(len(tr.model.z_sizes))])
        return tr

    def save(self, out_dir: Path) -> Path:
        self.trained.optimizer_state = self.optimizer.state_dict()
        self.trained.rng_state = self.generator.get_state()
        return save_checkpoint(self.trained, Path(out_dir) / "model.pt")


def scheduled_lr(cfg: TrainConfig, epoch: int, total: int) -> float:
    """train.lr for the epoch that starts after `epoch` epochs of a run to `total`: train.lr, or
    with lr_schedule "cosine" a half cosine from train.lr (first epoch) to train.lr * lr_final
    (last epoch). A function of the epoch count alone: a run stopped and resumed to the same target
    follows the same curve; resumed to a later target, the curve is drawn anew over the whole run."""
    if cfg.lr_schedule == "constant" or total <= 1:
        return cfg.lr
    low = cfg.lr * cfg.lr_final
    frac = min(max(epoch, 0), total - 1) / (total - 1)
    return low + (cfg.lr - low) * 0.5 * (1.0 + math.cos(math.pi * frac))


@contextmanager
def _stop_on_sigint(trainer: Trainer):
    """First Ctrl-C: finish the current epoch, save, stop. Second: the usual KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        print("\ninterrupted: saving after this epoch (Ctrl-C again to abort without saving)", flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def train(
    config: Config,
    demos: list[Demonstration] | None,
    out_dir: str | Path,
    epochs: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> TrainedModel:
    """Train (or resume) and write out_dir/model.pt and out_dir/loss.png. With train.restarts > 1,
    `core.restarts.train_restarts` trains them and keeps the best; resuming a run whose model.pt
    exists continues that model alone."""
    out_dir = Path(out_dir)
    ckpt = out_dir / "model.pt"
    device = resolve_device(config.train.device)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    if resume and ckpt.exists():
        trained = load_checkpoint(ckpt, device)
    else:
        if demos is None:
            raise ValueError(f"nothing to resume in {out_dir} and no demonstrations given")
        if config.train.restarts > 1:
            from .restarts import train_restarts

            return train_restarts(config, demos, out_dir, epochs, progress, device, resume)
        trained = build_model(config, demos, device)
    target = trained.config.train.epochs if epochs is None else epochs
    trainer = Trainer(trained)
    return trainer.run(target, out_dir, progress)


def plot_history(hist: dict, path: Path, layer_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.asarray(hist["epoch"])
    if epochs.size == 0:
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].semilogy(epochs, hist["loss"], label="free energy (-ELBO)")
    axes[0].semilogy(epochs, hist["rec"], label="reconstruction")
    axes[0].set_title("loss per sequence")
    axes[1].semilogy(epochs, hist["rec_mse"])
    axes[1].set_title("posterior reconstruction MSE (normalised)")
    kl = np.asarray(hist["kl"])
    for i, name in enumerate(layer_names):
        axes[2].semilogy(epochs, np.maximum(kl[:, i], 1e-12), label=name)
    axes[2].set_title("KL per layer (sum over t, / z_l)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
