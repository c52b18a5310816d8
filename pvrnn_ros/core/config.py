"""Configuration dataclasses, loaded from YAML with strict checking.

One `Config` holds everything a run needs; the model takes `Config.model` whole. Unknown
keys and invalid values raise `ConfigError` naming the dotted key and the bad value.
"""
from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key is unknown or its value is invalid."""


@dataclass
class LayerConfig:
    """One PV-RNN layer. Layers are listed fastest first (layer 1 is nearest the output)."""

    d: int = 40  # deterministic (MTRNN) units
    z: int = 4  # stochastic units
    tau: float = 2.0  # time constant; grows with height
    w: float = 0.01  # meta-prior: weight of KL for t >= 2
    w1: float = 1.0  # weight of KL against the unit-Gaussian prior at t = 1

    def validate(self, key: str) -> None:
        _require(self.d >= 1, f"{key}.d", self.d, "an integer >= 1")
        _require(self.z >= 1, f"{key}.z", self.z, "an integer >= 1")
        _require(self.tau >= 1.0, f"{key}.tau", self.tau, "a time constant >= 1")
        _require(self.w >= 0 and math.isfinite(self.w), f"{key}.w", self.w, "a finite meta-prior >= 0")
        _require(self.w1 >= 0 and math.isfinite(self.w1), f"{key}.w1", self.w1, "a finite weight >= 0")


def _default_layers() -> list[LayerConfig]:
    return [LayerConfig(d=48, z=4, tau=2.0, w=0.005), LayerConfig(d=24, z=2, tau=8.0, w=0.005)]


@dataclass
class ModelConfig:
    layers: list[LayerConfig] = field(default_factory=_default_layers)
    bottom_up: bool = False  # add W_bot d^{l-1}_{t-1} to each layer above the first
    posterior: str = "A"  # "A": mu_q = tanh(A); "d+A": mu_q = tanh(W d_{t-1} + b + A)
    output: str = "tanh"  # "tanh" or "softmax" (per-joint Gaussian-kernel coding)
    softmax_bins: list[int] | int = 11  # reference points per joint (an int applies to all joints)
    softmax_sigma: float = 1.0  # Gaussian kernel width of the softmax coding, in bin spacings
    logsigma_min: float = -8.0  # clamp of every log sigma (prior and posterior): no exp overflow
    logsigma_max: float = 4.0

    def validate(self, key: str = "model") -> None:
        _require(len(self.layers) >= 1, f"{key}.layers", self.layers, "at least one layer")
        for i, layer in enumerate(self.layers):
            layer.validate(f"{key}.layers[{i}]")
        _require(self.posterior in ("A", "d+A"), f"{key}.posterior", self.posterior, "'A' or 'd+A'")
        _require(self.output in ("tanh", "softmax"), f"{key}.output", self.output, "'tanh' or 'softmax'")
        bins = self.softmax_bins if isinstance(self.softmax_bins, list) else [self.softmax_bins]
        for b in bins:
            _require(isinstance(b, int) and b >= 2, f"{key}.softmax_bins", self.softmax_bins,
                     "an integer >= 2 or a list of them (one per joint)")
        _require(self.softmax_sigma > 0, f"{key}.softmax_sigma", self.softmax_sigma, "a width > 0")
        _require(self.logsigma_min < self.logsigma_max, f"{key}.logsigma_min", self.logsigma_min,
                 f"less than logsigma_max ({self.logsigma_max})")


MODALITY_SOURCES = ("columns", "segments")


@dataclass
class ModalityConfig:
    """One output group learned beside the joints (see `core.modalities`).

    source "columns": continuous, from CSV columns / npz arrays `<name>.<component>` or, in a
      rosbag2 recording, a geometry_msgs/PointStamped topic (components x, y, z);
    source "segments": categorical, the primitive active at each step, from the
      `<episode>.segments.json` sidecar or, in a bag, a std_msgs/String topic.
    """

    name: str = ""
    source: str = "columns"
    weight: float = 1.0  # weight of this modality's reconstruction term (each normalised by its size)
    topic: str | None = None  # bags: the topic to read; None = the topic named `<name>` (continuous)
    # or `primitive` / `<name>` (categorical) in the joint states' namespace

    @property
    def kind(self) -> str:
        return "categorical" if self.source == "segments" else "continuous"

    def validate(self, key: str) -> None:
        _require(bool(self.name) and self.name.replace("_", "").isalnum(), f"{key}.name", self.name,
                 "a name of letters, digits and underscores")
        _require(self.name != "joints", f"{key}.name", self.name, "a name other than 'joints' (always present)")
        _require(self.source in MODALITY_SOURCES, f"{key}.source", self.source, "'columns' or 'segments'")
        _require(self.weight >= 0 and math.isfinite(self.weight), f"{key}.weight", self.weight,
                 "a finite weight >= 0")


@dataclass
class DataConfig:
    rate_hz: float = 10.0  # model rate: demonstrations are resampled to it
    scale: float = 0.8  # per-joint min/max maps to [-scale, scale]
    margin: float = 0.0  # widen each joint's range by this fraction before scaling
    modalities: list[ModalityConfig] = field(default_factory=list)  # learned beside the joints
    joint_weight: float = 1.0  # weight of the joints' reconstruction term when modalities are present
    # joints to learn, by name; None = every revolute joint (prismatic ones only when listed here)
    joints: list[str] | None = None

    def validate(self, key: str = "data") -> None:
        _require(self.rate_hz > 0 and math.isfinite(self.rate_hz), f"{key}.rate_hz", self.rate_hz, "a rate > 0 Hz")
        _require(0 < self.scale < 1, f"{key}.scale", self.scale, "a value in (0, 1)")
        _require(self.margin >= 0, f"{key}.margin", self.margin, "a fraction >= 0")
        _require(self.joint_weight >= 0 and math.isfinite(self.joint_weight), f"{key}.joint_weight",
                 self.joint_weight, "a finite weight >= 0")
        seen = set()
        for i, m in enumerate(self.modalities):
            m.validate(f"{key}.modalities[{i}]")
            _require(m.name not in seen, f"{key}.modalities[{i}].name", m.name, "a name used once")
            seen.add(m.name)
        _validate_joint_list(self.joints, f"{key}.joints")


def _validate_joint_list(joints: list[str] | None, key: str) -> None:
    """`data.joints`: None, or a non-empty list of distinct, non-empty joint names."""
    if joints is None:
        return
    _require(len(joints) > 0, key, joints, "a non-empty list of joint names, or null for every revolute joint")
    for i, name in enumerate(joints):
        _require(isinstance(name, str) and name.strip() != "", f"{key}[{i}]", name, "a joint name")
    dup = sorted({j for j in joints if joints.count(j) > 1})
    _require(not dup, key, joints, f"distinct joint names (repeated: {dup})")


@dataclass
class TrainConfig:
    epochs: int = 3000
    lr: float = 1e-3
    batch_size: int = 0  # sequences per batch; 0 = all sequences in one batch
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    grad_clip: float = 0.0  # 0 disables
    threads: int = 1  # torch intra-op threads (1 is fastest for these small matrices); 0 = torch's default
    backend: str = "auto"  # "auto" (cpu if numba imports and device is cpu), "reference" (autograd), "cpu"
    cpu_threads: int = 0  # threads of the "cpu" backend, each runs its share of the sequences; 0 = one per core
    # std of Gaussian noise added to the normalised demonstrations, drawn afresh every epoch (a
    # regulariser: the posterior cannot fit noise that changes, so more is left to the prior)
    target_noise: float = 0.0
    # prior overshooting: from every posterior state the prior is also rolled 1..overshoot_steps
    # steps ahead and its outputs reconstruct the demonstration there, weighted overshoot_weight
    # (averaged over the steps ahead). It trains the path ER predicts with (the prior's rollout
    # from the window's last posterior state); 0 steps = the plain free energy. Autograd only.
    overshoot_steps: int = 0
    overshoot_weight: float = 1.0
    # L2 penalty on the network's weights and biases (not A): wd * p is added to each of their
    # gradients, as torch.optim.Adam's (coupled) weight_decay but before train.grad_clip
    weight_decay: float = 0.0
    # learning rate over the epochs: "constant" (train.lr throughout), or "cosine" from train.lr at
    # the first epoch down to train.lr * lr_final at the last epoch of the run's target
    lr_schedule: str = "constant"
    lr_final: float = 0.1
    # random restarts: train this many models, from train.seed, train.seed + 1, ..., and keep the
    # one whose ER predicts its own training demonstrations best (core/restarts.py); 1 = one model
    restarts: int = 1

    def validate(self, key: str = "train") -> None:
        _require(self.epochs >= 0, f"{key}.epochs", self.epochs, "an integer >= 0")
        _require(self.lr > 0, f"{key}.lr", self.lr, "a learning rate > 0")
        _require(self.batch_size >= 0, f"{key}.batch_size", self.batch_size, "an integer >= 0")
        _require(self.checkpoint_every >= 1, f"{key}.checkpoint_every", self.checkpoint_every, "an integer >= 1")
        _require(self.grad_clip >= 0, f"{key}.grad_clip", self.grad_clip, "a value >= 0")
        _require(self.threads >= 0, f"{key}.threads", self.threads, "an integer >= 0")
        _require(self.cpu_threads >= 0, f"{key}.cpu_threads", self.cpu_threads, "an integer >= 0")
        _require(self.target_noise >= 0 and math.isfinite(self.target_noise), f"{key}.target_noise",
                 self.target_noise, "a finite std >= 0 (normalised units)")
        _require(self.backend in ("auto", "reference", "cpu"), f"{key}.backend", self.backend,
                 "one of auto, reference, cpu")
        _require(isinstance(self.overshoot_steps, int) and self.overshoot_steps >= 0, f"{key}.overshoot_steps",
                 self.overshoot_steps, "an integer >= 0 (steps ahead; 0 = off)")
        _require(self.overshoot_weight >= 0 and math.isfinite(self.overshoot_weight), f"{key}.overshoot_weight",
                 self.overshoot_weight, "a finite weight >= 0")
        _require(self.weight_decay >= 0 and math.isfinite(self.weight_decay), f"{key}.weight_decay",
                 self.weight_decay, "a finite L2 coefficient >= 0")
        _require(self.lr_schedule in ("constant", "cosine"), f"{key}.lr_schedule", self.lr_schedule,
                 "'constant' or 'cosine'")
        _require(isinstance(self.restarts, int) and self.restarts >= 1, f"{key}.restarts", self.restarts,
                 "an integer >= 1 (models trained from consecutive seeds; the best ER predictor is kept)")
        _require(0.0 <= self.lr_final <= 1.0, f"{key}.lr_final", self.lr_final,
                 "a fraction of train.lr in [0, 1] (the cosine schedule's last learning rate)")
        _require(not (self.overshoot_steps > 0 and self.backend == "cpu"), f"{key}.backend", self.backend,
                 "reference or auto when train.overshoot_steps > 0 (the fused cpu trainer has no overshoot term)")


@dataclass
class ERConfig:
    """Online error regression (DESIGN.md section 3)."""

    window: int = 15  # W: observations kept
    iterations: int = 15  # K: Adam steps on the window's A per tick
    first_iterations: int = 50  # K for the very first tick (nothing carried yet)
    lr: float = 0.1
    meta_prior: list[float] | None = None  # ER-time w per layer; None = training w x meta_prior_scale
    meta_prior_scale: float = 0.2  # ER-time w as a fraction of the training w (when meta_prior is None)
    adam_reset: bool = False  # True: fresh Adam moments every tick; False: persistent, slid with A
    keep_best: bool = False  # keep the iterate with the lowest loss instead of the last
    # several hypotheses per tick: the carried A plus hypotheses-1 copies perturbed by N(0, spread^2)
    # on A's mean part, regressed together (one batched backend call); the lowest free energy wins
    # and is carried. Escapes a fit stuck on the last primitive after a switch; costs ~B x compute
    hypotheses: int = 1
    hypothesis_spread: float = 1.0
    growing_window: bool = True  # at start-up, regress on the observations so far (< W)
    horizon: int = 10  # P: prior steps predicted after the window
    samples: int = 16  # prior rollouts: prediction = their mean, spread = their std; 0 = the mean path only
    slide_init: str = "prior"  # new slot A from the prior's pre-activations ("prior") or "copy"
    sample_posterior: bool = False  # z = mu_q + sigma_q*eps in ER (True) or z = mu_q (False)
    # recognition reads a categorical modality this many steps before the newest: the newest step is
    # held by one observation only, so ER guesses ahead there (it names the next primitive early)
    recognition_lag: int = 1
    # residual correction of the joint prediction (an output-disturbance estimate, as in offset-free
    # MPC): the newest step's residual r = observed - reconstructed, and its change from the step
    # before, v, are added to the predicted step h as decay^h * (r + residual_velocity * h * v).
    # 0 = off (the model's prediction as it is). The regression itself is unchanged. 0.9 / 0.5
    # lowered the held-out error at every horizon on every seed and config measured (docs/results.md)
    residual_decay: float = 0.9
    residual_velocity: float = 0.5
    # a forgetting factor, as in recursive least squares: in the window's free energy a step `age`
    # steps older than the newest weighs forgetting^age in the reconstruction (the KL is unweighted),
    # so the fit, and the state the prediction rolls on from, follow the newest steps. 1 = every step
    # weighs the same (the model's ER as published)
    forgetting: float = 1.0
    backend: str = "auto"  # "auto", "reference", "cpu", "triton"
    seed: int = 0

    def validate(self, key: str = "er", n_layers: int | None = None) -> None:
        _require(self.window >= 1, f"{key}.window", self.window, "an integer >= 1")
        _require(self.iterations >= 0, f"{key}.iterations", self.iterations, "an integer >= 0")
        _require(self.first_iterations >= 0, f"{key}.first_iterations", self.first_iterations, "an integer >= 0")
        _require(self.lr > 0, f"{key}.lr", self.lr, "a learning rate > 0")
        _require(self.horizon >= 1, f"{key}.horizon", self.horizon, "an integer >= 1")
        _require(self.meta_prior_scale >= 0 and math.isfinite(self.meta_prior_scale), f"{key}.meta_prior_scale",
                 self.meta_prior_scale, "a finite factor >= 0")
        _require(isinstance(self.hypotheses, int) and self.hypotheses >= 1, f"{key}.hypotheses", self.hypotheses,
                 "an integer >= 1")
        _require(self.hypothesis_spread >= 0 and math.isfinite(self.hypothesis_spread), f"{key}.hypothesis_spread",
                 self.hypothesis_spread, "a finite std >= 0")
        _require(self.samples >= 0, f"{key}.samples", self.samples, "an integer >= 0")
        _require(self.recognition_lag >= 0, f"{key}.recognition_lag", self.recognition_lag, "an integer >= 0")
        _require(0.0 <= self.residual_decay <= 1.0, f"{key}.residual_decay", self.residual_decay,
                 "a factor per step in [0, 1] (0 = no residual correction)")
        _require(self.residual_velocity >= 0 and math.isfinite(self.residual_velocity), f"{key}.residual_velocity",
                 self.residual_velocity, "a finite gain >= 0")
        _require(0.0 < self.forgetting <= 1.0, f"{key}.forgetting", self.forgetting,
                 "a weight per step of age in (0, 1] (1 = every window step weighs the same)")
        _require(self.slide_init in ("prior", "copy"), f"{key}.slide_init", self.slide_init, "'prior' or 'copy'")
        _require(self.backend in ("auto", "reference", "cpu", "triton"), f"{key}.backend", self.backend,
                 "one of auto, reference, cpu, triton")
        if self.meta_prior is not None:
            for w in self.meta_prior:
                _require(w >= 0 and math.isfinite(w), f"{key}.meta_prior", self.meta_prior, "finite values >= 0")
            if n_layers is not None:
                _require(len(self.meta_prior) == n_layers, f"{key}.meta_prior", self.meta_prior,
                         f"one value per layer ({n_layers})")


@dataclass
class PlanConfig:
    """Goal-directed planning by free-energy minimisation over A (`core.plan`)."""

    horizon: int = 30  # H: steps planned past the last observation
    iterations: int = 300  # Adam steps on the window's A per plan call
    lr: float = 0.1
    candidates: int = 8  # B plans per call, from different initial A; the lowest goal free energy wins
    init_spread: float = 0.5  # std of the random initial A of candidates 2..B (candidate 1 starts at 0)
    meta_prior: list[float] | None = None  # plan-time w per layer; None = the training w
    goal_weight: float = 100.0  # weight of the goal error relative to the evidence (observed past)
    backend: str = "auto"  # "auto", "reference", "cpu", "triton"
    seed: int = 0

    def validate(self, key: str = "plan", n_layers: int | None = None) -> None:
        _require(self.horizon >= 1, f"{key}.horizon", self.horizon, "an integer >= 1")
        _require(self.iterations >= 0, f"{key}.iterations", self.iterations, "an integer >= 0")
        _require(self.lr > 0 and math.isfinite(self.lr), f"{key}.lr", self.lr, "a learning rate > 0")
        _require(self.candidates >= 1, f"{key}.candidates", self.candidates, "an integer >= 1")
        _require(self.init_spread >= 0 and math.isfinite(self.init_spread), f"{key}.init_spread",
                 self.init_spread, "a finite std >= 0")
        _require(self.goal_weight > 0 and math.isfinite(self.goal_weight), f"{key}.goal_weight",
                 self.goal_weight, "a finite weight > 0")
        _require(self.backend in ("auto", "reference", "cpu", "triton"), f"{key}.backend", self.backend,
                 "one of auto, reference, cpu, triton")
        if self.meta_prior is not None:
            for w in self.meta_prior:
                _require(w >= 0 and math.isfinite(w), f"{key}.meta_prior", self.meta_prior, "finite values >= 0")
            if n_layers is not None:
                _require(len(self.meta_prior) == n_layers, f"{key}.meta_prior", self.meta_prior,
                         f"one value per layer ({n_layers})")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    er: ERConfig = field(default_factory=ERConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)

    def validate(self) -> "Config":
        self.model.validate("model")
        self.data.validate("data")
        self.train.validate("train")
        self.er.validate("er", n_layers=len(self.model.layers))
        self.plan.validate("plan", n_layers=len(self.model.layers))
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "Config":
        return _build(cls, raw or {}, "").validate()

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level, got {type(raw).__name__}")
        try:
            return cls.from_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: expected {expected}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from `raw`, rejecting unknown keys and wrong types by dotted name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} = {raw!r} is invalid: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s} (known keys: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, key)
    return cls(**kwargs)


_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for option in args:
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if errors else f"{key} = {value!r} is invalid")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r} is invalid: expected a list")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} is invalid: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} is invalid: expected an integer")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 (PyYAML) reads 1e-4 as a string; YAML 1.2 and people read a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} = {value!r} is invalid: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r} is invalid: expected a string")
        return value
    return value
