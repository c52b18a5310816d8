"""Sweeps over config keys x seeds: every trial trains a PV-RNN and evaluates ER on held-out data.

    grid = parse_grid(["model.layers[*].w=0.001,0.01,0.1", "er.window=15,30"])
    trials = expand_grid(grid, seeds=[0, 1])
    run_sweep(trials, SweepData(train="demos/", heldout="heldout/"), "runs/sweep", epochs=3000)

Keys are dotted config paths (`model.layers[0].w`, `er.meta_prior_scale`, `data.rate_hz`);
`[*]` sets every layer. Values are YAML scalars or lists (`er.meta_prior=[0.001,0.002]`).
Every trial's config is validated before anything runs: a bad key or value is a `ConfigError`
naming the dotted key.

Trials run in parallel on Ray Tune (`ray[tune]`, the `sweep` extra): a local Ray by default
(`num_cpus`, no dashboard, shut down afterwards), or a cluster with `address`. Ray is imported
only inside `run_sweep`, so `pvrnn_ros.core` never needs it. Each trial writes
`DIR/trials/<id>/result.json` when it completes (or `failed.json` with the error); a rerun of the
same sweep skips completed trials, so an interrupted sweep resumes. A failed trial is reported
in the table and the sweep goes on. `search="optuna"` replaces the grid by an Optuna search over
the same values (`samples` configurations, each run for every seed, minimising `metric`).

Outputs (`write_outputs`): `sweep.csv` (one row per trial), `sweep.md` (mean ± std over seeds per
configuration, the converged baselines below), `sweep_error_vs_horizon.png`,
`sweep_reconstruction.png`, `sweep_prior_sigma.png` (prior sigma per layer against that layer's
meta-prior, beside held-out ER error: the paper's central figure).
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import re
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import Config, ConfigError

RESULT, FAILED = "result.json", "failed.json"
FAILED_SCORE = 1e9  # what an Optuna search is told for a configuration whose every seed failed
METRIC_HORIZONS = (1, 5, 10)


# ------------------------------------------------------------------------------------- grid
def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets: '0.1,[1,2],3' -> ['0.1', '[1,2]', '3']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "["
        depth -= ch == "]"
        cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """['key=v1,v2', ...] -> {key: [v1, v2]} (values parsed as YAML)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"sweep parameter {item!r} is invalid: expected KEY=V1,V2,... "
                              f"(e.g. model.layers[0].w=0.001,0.01)")
        if key in grid:
            raise ConfigError(f"sweep parameter {key} is given twice")
        try:
            grid[key] = [yaml.safe_load(v) for v in _split_values(values)]
        except yaml.YAMLError as exc:
            raise ConfigError(f"sweep parameter {key}: values {values!r} are not valid YAML: {exc}") from None
    return grid


_TOKEN = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\*)\]|\.")


def _path(key: str) -> list[str | int]:
    tokens, pos = [], 0
    while pos < len(key):
        m = _TOKEN.match(key, pos)
        if not m:
            raise ConfigError(f"config key {key!r} is invalid at {key[pos:]!r}: expected name.name[index]")
        if m.group(1):
            tokens.append(m.group(1))
        elif m.group(2):
            tokens.append("*" if m.group(2) == "*" else int(m.group(2)))
        pos = m.end()
    return tokens


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set `key` (e.g. model.layers[0].w, model.layers[*].w) in a Config.to_dict() dict, in place."""
    tokens = _path(key)
    if not tokens:
        raise ConfigError(f"config key {key!r} is empty")

    def walk(node: Any, rest: list, done: str) -> None:
        head, tail = rest[0], rest[1:]
        if head == "*" or isinstance(head, int):
            if not isinstance(node, list):
                raise ConfigError(f"config key {key}: {done or 'config'} is not a list")
            indices = range(len(node)) if head == "*" else [head]
            for i in indices:
                if i >= len(node):
                    raise ConfigError(f"config key {key}: {done} has {len(node)} entries, no index {i}")
                if tail:
                    walk(node[i], tail, f"{done}[{i}]")
                else:
                    node[i] = copy.deepcopy(value)
            return
        if not isinstance(node, dict) or head not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise ConfigError(f"unknown config key {key} ({done + '.' if done else ''}{head} does not exist; "
                              f"known keys there: {known})")
        if tail:
            walk(node[head], tail, f"{done}.{head}" if done else head)
        else:
            node[head] = copy.deepcopy(value)

    walk(raw, tokens, "")


@dataclass
class Trial:
    trial_id: str
    overrides: dict[str, Any]  # dotted key -> value
    seed: int
    config: dict = field(repr=False, default_factory=dict)  # the full validated config
    model: str | None = None  # an ER-only trial: this checkpoint, no training

    @property
    def tag(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.overrides.items()) or "base config"


def trial_config(base: Config, overrides: dict[str, Any], seed: int) -> Config:
    """The base config with the overrides applied, seeded; validated (ConfigError names the dotted key)."""
    raw = base.to_dict()
    raw["train"]["seed"] = seed
    raw["er"]["seed"] = seed
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    try:
        return Config.from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"sweep trial {overrides} (seed {seed}): {exc}") from None


def trial_id(overrides: dict[str, Any], seed: int, model: str | None = None) -> str:
    """Stable across runs (the resume key): a hash of the overrides, the seed (and the checkpoint)."""
    key = {"overrides": overrides, "seed": seed, **({"model": model} if model else {})}
    text = json.dumps(key, sort_keys=True, default=str)
    return f"{hashlib.sha1(text.encode()).hexdigest()[:10]}_s{seed}"


def make_trial(base: Config, overrides: dict[str, Any], seed: int, model: str | None = None) -> Trial:
    cfg = trial_config(base, overrides, seed)
    return Trial(trial_id(overrides, seed, model), dict(overrides), int(seed), cfg.to_dict(), model)


def expand_grid(base: Config, grid: dict[str, list[Any]], seeds: list[int],
                models: list[str] | None = None) -> list[Trial]:
    """Every combination of the grid's values, for every seed (all validated up front).

    With `models` (checkpoints), the trials are ER-only: each checkpoint's own config is the base,
    only `er.*` keys may be swept, and `seeds` set `er.seed` (the checkpoint is not retrained).
    """
    import itertools

    if not seeds:
        raise ConfigError("a sweep needs at least one seed")
    keys = list(grid)
    combos = list(itertools.product(*(grid[k] for k in keys))) if keys else [()]
    if not models:
        return [make_trial(base, dict(zip(keys, values)), s) for values in combos for s in seeds]
    not_er = [k for k in keys if not k.startswith("er.")]
    if not_er:
        raise ConfigError(f"sweep parameter {not_er[0]} needs training: a sweep over checkpoints (--model) "
                          "takes er.* keys only")
    from .checkpoint import load_checkpoint

    trials = []
    for path in models:
        resolved = str(Path(path).resolve())
        trained_config = load_checkpoint(resolved).config
        for values in combos:
            for s in seeds:
                trials.append(make_trial(trained_config, dict(zip(keys, values)), s, resolved))
    return trials


# ------------------------------------------------------------------------------------- one trial
@dataclass
class SweepData:
    train: str  # demonstrations to train on
    heldout: str  # demonstrations ER is evaluated on
    rate: float | None = None  # rate of CSV/NPZ files without a time column
    topic: str | None = None  # JointState topic in rosbag2 recordings


def _write_json(path: Path, obj: dict) -> None:
    """Atomic: a trial killed mid-write never leaves a half result that would count as completed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
    os.replace(tmp, path)


def run_trial(spec: dict) -> dict:
    """Train and evaluate one trial; write its result.json (or failed.json) and return the record.

    `spec`: trial_id, overrides, seed, config (dict), data (SweepData fields), out (sweep dir),
    epochs (None = train.epochs). Never raises for a trial's own failure: that is the record.
    """
    import torch

    out = Path(spec["out"]) / "trials" / spec["trial_id"]
    out.mkdir(parents=True, exist_ok=True)
    record = {"trial_id": spec["trial_id"], "overrides": spec["overrides"], "seed": spec["seed"]}
    (out / FAILED).unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        from .data import load_demonstrations
        from .evaluate import evaluate
        from .train import train

        from .checkpoint import load_checkpoint

        torch.set_num_threads(1)  # one Ray CPU per trial
        cfg = Config.from_dict(spec["config"])
        data = SweepData(**spec["data"])
        cfg.save(out / "config.yaml")
        if spec.get("model"):  # ER-only: the checkpoint as trained, with this trial's ER settings
            trained = load_checkpoint(spec["model"])
            trained.config.er = cfg.er
            record["model"] = spec["model"]
        else:
            demos = load_demonstrations(data.train, rate_hz=data.rate, topic=data.topic,
                                        modalities=cfg.data.modalities)
            epochs = cfg.train.epochs if spec.get("epochs") is None else int(spec["epochs"])
            trained = train(cfg, demos, out, epochs, progress=False)  # train.restarts included
        train_s = float(sum(trained.history.get("seconds", [])))
        if trained.history.get("restarts"):  # train.restarts: every restart's training is the cost
            train_s = trained.history["restarts"]["train_seconds"]
        with torch.no_grad():
            model, A = trained.model, trained.adaptive
            fwd = model.posterior_forward(A.mu, A.logsigma, None)
            mask = trained.step_mask()
            err = (model.coding.decode(fwd.raw) - trained.data) ** 2 * mask.unsqueeze(-1)
            posterior_mse = float(err.sum() / (mask.sum() * trained.data.shape[2]))
            prior_sigma = model.prior_sigma_by_layer(fwd, mask)
        held = load_demonstrations(data.heldout, rate_hz=data.rate, joint_names=trained.joint_names,
                                   topic=data.topic, modalities=trained.config.data.modalities)
        metrics = evaluate(trained, held, out / "eval", progress=False, methods=("er",), plots=False)
        mse = metrics["methods"]["er"]["mse_by_horizon"]
        record.update({
            "status": "ok",
            "mse_by_horizon": mse,
            **{f"mse_h{h}": mse[h - 1] for h in METRIC_HORIZONS if h <= len(mse)},
            "posterior_mse": posterior_mse,
            "prior_sigma_per_layer": prior_sigma,
            "kl_per_layer": trained.history["kl"][-1] if trained.history.get("kl") else None,
            "layer_w": [layer.w for layer in cfg.model.layers],
            "rate_hz": cfg.data.rate_hz,
            "horizon": cfg.er.horizon,
            "epochs": trained.epoch,
            "train_restarts": trained.config.train.restarts,
            "train_seconds": train_s,
            "er_tick_ms_median": metrics["er_tick_ms"]["median"],
            "seconds": time.perf_counter() - started,
        })
        _write_json(out / RESULT, record)
    except Exception as exc:  # the trial's failure is its result; the sweep goes on
        record.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc(), "seconds": time.perf_counter() - started})
        _write_json(out / FAILED, record)
    return record


# ------------------------------------------------------------------------------------- ledger
def load_records(out: str | Path) -> dict[str, dict]:
    """Every trial's record on disk: completed ones from result.json, failed ones from failed.json."""
    records = {}
    for d in sorted((Path(out) / "trials").glob("*")):
        for name in (RESULT, FAILED):
            if (d / name).exists():
                records[d.name] = json.loads((d / name).read_text())
                break
    return records


def completed_ids(out: str | Path) -> set[str]:
    return {d.name for d in (Path(out) / "trials").glob("*") if (d / RESULT).exists()}


# ------------------------------------------------------------------------------------- Ray
def _spec(trial: Trial, data: SweepData, out: Path, epochs: int | None) -> dict:
    return {"trial_id": trial.trial_id, "overrides": trial.overrides, "seed": trial.seed, "config": trial.config,
            "data": dict(data.__dict__), "out": str(out), "epochs": epochs, "model": trial.model}


def _tune_trainable(config: dict) -> dict:
    """The Ray Tune function trainable: one trial (grid), or one sampled point for every seed (Optuna)."""
    specs = config["specs"] if "specs" in config else [config["spec"]]
    records = []
    for s in specs:  # a point Optuna samples again is read back, not rerun
        done = Path(s["out"]) / "trials" / s["trial_id"] / RESULT
        records.append(json.loads(done.read_text()) if done.exists() else run_trial(s))
    ok = [r for r in records if r["status"] == "ok"]
    metric = config.get("_metric", "mse_h5")
    result = {"failed": len(records) - len(ok)}
    if ok:
        result[metric] = float(np.mean([r[metric] for r in ok]))
    elif "_metric" in config:  # a search needs a value: the worst possible, never shown in the tables
        result[metric] = FAILED_SCORE
    return result


def _trial_dirname(trial) -> str:
    spec = trial.config.get("spec")
    return f"{spec['trial_id']}_{trial.trial_id}" if spec else f"sample_{trial.trial_id}"


def _start_ray(address: str | None, num_cpus: int | None):
    import ray

    if address:
        ray.init(address=address, log_to_driver=False)
        return ray, None
    # a short private temp dir: the Unix socket paths inside must stay under the OS limit, and its
    # name lets a caller check that no Ray process is left behind
    temp_dir = tempfile.mkdtemp(prefix="pvrnn_ray_", dir="/tmp")
    ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_dir, configure_logging=False)
    return ray, temp_dir


def run_sweep(trials: list[Trial], data: SweepData, out_dir: str | Path, *, epochs: int | None = None,
              address: str | None = None, num_cpus: int | None = None, search: str = "grid",
              samples: int | None = None, metric: str = "mse_h5", base: Config | None = None,
              grid: dict[str, list] | None = None, seeds: list[int] | None = None,
              verbose: bool = False) -> dict[str, dict]:
    """Run the trials not completed yet on Ray Tune; return every record on disk (see module docstring)."""
    out = Path(out_dir).resolve()
    (out / "trials").mkdir(parents=True, exist_ok=True)
    if search not in ("grid", "optuna"):
        raise ConfigError(f"search = {search!r} is invalid: expected 'grid' or 'optuna'")
    if metric not in {f"mse_h{h}" for h in METRIC_HORIZONS}:
        raise ConfigError(f"metric = {metric!r} is invalid: expected one of "
                          f"{', '.join(f'mse_h{h}' for h in METRIC_HORIZONS)}")
    data = SweepData(str(Path(data.train).resolve()), str(Path(data.heldout).resolve()), data.rate, data.topic)
    done = completed_ids(out)
    if search == "grid":
        pending = [t for t in trials if t.trial_id not in done]
        if not pending:
            return load_records(out)
        points = [_spec(t, data, out, epochs) for t in pending]
    else:
        if base is None or grid is None or not seeds:
            raise ConfigError("search = 'optuna' needs the base config, the grid and the seeds")
        if not samples or samples < 1:
            raise ConfigError(f"samples = {samples!r} is invalid: an Optuna search needs samples >= 1")
    ray, temp_dir = _start_ray(address, num_cpus)
    if temp_dir is not None:  # where this sweep's local Ray lived (a test checks nothing outlives it)
        _write_json(out / "ray_local.json", {"temp_dir": temp_dir, "num_cpus": num_cpus or os.cpu_count()})
    try:
        from ray import tune

        run_config = tune.RunConfig(storage_path=str(out / "ray"), name=f"tune_{int(time.time())}",
                                    verbose=1 if verbose else 0,
                                    failure_config=tune.FailureConfig(max_failures=0))
        trainable = tune.with_resources(_tune_trainable, {"cpu": 1})
        if search == "grid":
            param_space = {"spec": tune.grid_search(points)}
            tuner = tune.Tuner(trainable, param_space=param_space, run_config=run_config,
                               tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname))
        else:
            tuner = _optuna_tuner(tune, trainable, run_config, base, grid, seeds, samples, metric, data, out,
                                  epochs, done)
        if tuner is not None:
            results = tuner.fit()
            for res in results:
                if res.error is not None:  # Ray itself failed the trial (a crashed worker, ...)
                    spec = res.config.get("spec")
                    for s in ([spec] if spec else res.config.get("specs", [])):
                        path = out / "trials" / s["trial_id"]
                        path.mkdir(parents=True, exist_ok=True)
                        if not (path / RESULT).exists():
                            _write_json(path / FAILED, {"trial_id": s["trial_id"], "overrides": s["overrides"],
                                                        "seed": s["seed"], "status": "failed",
                                                        "error": f"Ray: {res.error}"})
    finally:
        ray.shutdown()
        if temp_dir is not None:
            import shutil

            shutil.rmtree(temp_dir, ignore_errors=True)
    return load_records(out)


def _optuna_tuner(tune, trainable, run_config, base, grid, seeds, samples, metric, data, out, epochs, done):
    """An Optuna search over the grid's values; points already run for every seed are told to it, not rerun."""
    from ray.tune.search.optuna import OptunaSearch

    keys = list(grid)
    records = load_records(out)
    evaluated, rewards = [], []
    by_point: dict[str, list[dict]] = {}
    for r in records.values():
        if r.get("status") == "ok" and set(r["overrides"]) == set(keys):
            by_point.setdefault(json.dumps(r["overrides"], sort_keys=True, default=str), []).append(r)
    for text, rs in by_point.items():
        if {r["seed"] for r in rs} >= set(seeds):
            ov = json.loads(text)
            evaluated.append({f"p{i}": grid[k].index(ov[k]) for i, k in enumerate(keys) if ov[k] in grid[k]})
            rewards.append(float(np.mean([r[metric] for r in rs])))
    evaluated = [e for e in evaluated if len(e) == len(keys)]
    remaining = samples - len(evaluated)
    if remaining <= 0:
        return None
    # Optuna samples indices into each key's values; the trainable turns them into trial specs
    space = {f"p{i}": tune.choice(list(range(len(grid[k])))) for i, k in enumerate(keys)}
    searcher = OptunaSearch(metric=metric, mode="min", points_to_evaluate=evaluated or None,
                            evaluated_rewards=rewards or None, seed=seeds[0])

    def sampled(config: dict) -> dict:
        overrides = {k: grid[k][config[f"p{i}"]] for i, k in enumerate(keys)}
        specs = [_spec(make_trial(base, overrides, s), data, out, epochs) for s in seeds]
        return _tune_trainable({"specs": specs, "_metric": metric})

    tuner = tune.Tuner(tune.with_resources(sampled, {"cpu": 1}), param_space=space,
                       tune_config=tune.TuneConfig(search_alg=searcher, num_samples=remaining,
                                                   trial_dirname_creator=_trial_dirname),
                       run_config=run_config)
    return tuner


# ------------------------------------------------------------------------------------- baselines
def sweep_baselines(records: dict[str, dict], data: SweepData, out_dir: str | Path, settings=None,
                    progress: bool = False) -> dict[str, dict]:
    """The converged GRU / LSTM (and hold) once per model rate, on the trials' data and held-out steps.

    Trained on the data of the first completed trial at that rate (the baselines depend only on the
    demonstrations and the rate); cached in DIR/baselines_<rate>Hz.json, so a resumed sweep reuses them.
    """
    from .baselines import BaselineSettings
    from .checkpoint import load_checkpoint
    from .data import load_demonstrations
    from .evaluate import evaluate

    out = Path(out_dir)
    by_rate: dict[float, dict] = {}
    for r in records.values():
        if r.get("status") == "ok":
            by_rate.setdefault(float(r["rate_hz"]), r)
    found = {}
    for rate, r in sorted(by_rate.items()):
        path = out / f"baselines_{rate:g}Hz.json"
        if path.exists():
            found[f"{rate:g}"] = json.loads(path.read_text())
            continue
        trained = load_checkpoint(r.get("model") or out / "trials" / r["trial_id"] / "model.pt")
        rate_settings = settings or BaselineSettings()
        if rate_settings.restarts is None:  # as many tries as the most restarted PV-RNN at this rate
            rate_settings = replace(rate_settings, restarts=max(_train_restarts(x, out) for x in records.values()
                                                               if x.get("status") == "ok" and float(x["rate_hz"]) == rate))
        held = load_demonstrations(data.heldout, rate_hz=data.rate, joint_names=trained.joint_names,
                                   topic=data.topic, modalities=trained.config.data.modalities)
        m = evaluate(trained, held, out / f"baselines_{rate:g}Hz", progress=progress, baselines=rate_settings,
                     methods=("hold", "gru", "lstm"), plots=False)
        entry = {"rate_hz": rate, "methods": m["methods"], "training": m["training"]}
        _write_json(path, entry)
        found[f"{rate:g}"] = entry
    return found


def _train_restarts(record: dict, out: Path) -> int:
    """A completed trial's train.restarts: from its record, or (records written before the field)
    from the trial's config.yaml."""
    if "train_restarts" in record:
        return int(record["train_restarts"])
    path = out / "trials" / record["trial_id"] / "config.yaml"
    return Config.load(path).train.restarts if path.exists() else 1


# ------------------------------------------------------------------------------------- outputs
def _short(text: Any, limit: int = 300) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + " ..."


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def write_outputs(records: dict[str, dict], trials: list[Trial], out_dir: str | Path,
                  baselines: dict[str, dict] | None = None) -> dict[str, Path]:
    """sweep.csv, sweep.md and the three PNGs for the trials of this sweep (records of others ignored)."""
    out = Path(out_dir)
    rows = [records[t.trial_id] if t.trial_id in records else
            {"trial_id": t.trial_id, "overrides": t.overrides, "seed": t.seed, "status": "not run"}
            for t in trials]
    keys = list(trials[0].overrides) if trials else []
    hs = [h for h in METRIC_HORIZONS]
    n_layers = max((len(r.get("prior_sigma_per_layer") or []) for r in rows), default=0)
    header = (["trial_id", *keys, "seed", "status"] + [f"mse_h{h}" for h in hs] + ["posterior_mse"]
              + [f"prior_sigma_l{i + 1}" for i in range(n_layers)] + ["epochs", "train_seconds", "error"])
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            ov = r.get("overrides", {})
            sig = r.get("prior_sigma_per_layer") or []
            w.writerow([r["trial_id"], *[json.dumps(ov.get(k)) for k in keys], r["seed"], r["status"]]
                       + [r.get(f"mse_h{h}", "") for h in hs] + [r.get("posterior_mse", "")]
                       + [sig[i] if i < len(sig) else "" for i in range(n_layers)]
                       + [r.get("epochs", ""), r.get("train_seconds", ""), r.get("error", "")])
    # mean +- std over seeds, one line per configuration
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r.get("overrides", {}), sort_keys=True, default=str), []).append(r)
    lines = ["# Sweep", "", f"{len(rows)} trials: {sum(r['status'] == 'ok' for r in rows)} completed, "
             f"{sum(r['status'] == 'failed' for r in rows)} failed, {sum(r['status'] == 'not run' for r in rows)} "
             "not run. ER MSE (rad², mean over joints) on the held-out demonstrations, mean ± std over seeds.", "",
             "| " + " | ".join(keys + ["seeds"] + [f"ER h={h}" for h in hs] + ["posterior MSE"]
                               + [f"prior σ l{i + 1}" for i in range(n_layers)]) + " |",
             "|" + "---|" * (len(keys) + 2 + len(hs) + n_layers)]

    def stat(rs, key, index=None):
        vals = [r[key] if index is None else r[key][index] for r in rs if r.get(key) is not None]
        if not vals:
            return "–"
        return f"{np.mean(vals):.3g} ± {np.std(vals):.2g}" if len(vals) > 1 else f"{vals[0]:.3g}"

    for text, rs in groups.items():
        ov = json.loads(text)
        ok = [r for r in rs if r["status"] == "ok"]
        cells = [_fmt(ov.get(k)) for k in keys] + [f"{len(ok)}/{len(rs)}"]
        cells += [stat(ok, f"mse_h{h}") for h in hs] + [stat(ok, "posterior_mse")]
        cells += [stat(ok, "prior_sigma_per_layer", i) for i in range(n_layers)]
        lines.append("| " + " | ".join(cells) + " |")
    for rate, b in (baselines or {}).items():
        for m, v in b["methods"].items():
            mse = v["mse_by_horizon"]
            label = f"{v['label']} ({rate} Hz)"
            lines.append("| " + " | ".join([label] + [""] * len(keys) + [_fmt(mse[h - 1]) if h <= len(mse) else "–"
                                                                         for h in hs] + [""] * (1 + n_layers)) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed trials (the whole error in trials/<id>/failed.json):", ""]
        lines += [f"- `{r['trial_id']}` ({r.get('overrides')}, seed {r['seed']}): {_short(r.get('error'))}"
                  for r in failed]
    if baselines:
        lines += ["", "Baselines: trained once per rate to convergence (early stopping on a validation split "
                  "of the training episodes); training:"]
        for rate, b in baselines.items():
            for kind, info in b["training"].items():
                if kind != "pvrnn":
                    lines.append(f"- {rate} Hz {kind.upper()}: hidden {info['hidden']}, {info['epochs']} epochs "
                                 f"(best {info['best_epoch']}), {info['seconds_all_candidates']:.0f} s with every "
                                 "candidate size"
                                 + (f" and {info['restarts']} initialisations each" if info.get("restarts", 1) > 1 else ""))
    lines += ["", "![error vs horizon](sweep_error_vs_horizon.png)", "",
              "![prior sigma vs meta-prior](sweep_prior_sigma.png)", "",
              "![reconstruction](sweep_reconstruction.png)", ""]
    (out / "sweep.md").write_text("\n".join(lines))
    paths = {"csv": out / "sweep.csv", "md": out / "sweep.md"}
    ok_rows = [r for r in rows if r["status"] == "ok"]
    if ok_rows:
        paths.update(_plots(out, groups, ok_rows, keys, baselines or {}))
    return paths


def _plots(out: Path, groups: dict[str, list[dict]], ok_rows: list[dict], keys: list[str],
           baselines: dict[str, dict]) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    # legends name only the keys whose value differs between configurations
    configs = [json.loads(text) for text in groups]
    varying = [k for k in keys if len({json.dumps(c.get(k), default=str) for c in configs}) > 1]

    def config_label(text: str) -> str:
        ov = json.loads(text)
        return ", ".join(f"{k}={ov.get(k)}" for k in varying) or "base"

    # prediction error per horizon: one curve per configuration (mean over seeds), baselines dashed
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for text, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if not ok:
            continue
        curve = np.mean([r["mse_by_horizon"] for r in ok], 0)
        ax.plot(np.arange(1, len(curve) + 1), curve, marker="o", ms=3, label=f"ER {config_label(text)}")
    for rate, b in baselines.items():
        for m, v in b["methods"].items():
            ax.plot(np.arange(1, len(v["mse_by_horizon"]) + 1), v["mse_by_horizon"], ls="--",
                    label=f"{v['label']} ({rate} Hz)")
    ax.set_yscale("log")
    ax.set_xlabel("prediction horizon [steps]")
    ax.set_ylabel("held-out MSE [rad²]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("prediction error per horizon (mean over seeds)")
    fig.tight_layout()
    paths["error_vs_horizon"] = out / "sweep_error_vs_horizon.png"
    fig.savefig(paths["error_vs_horizon"], dpi=110)
    plt.close(fig)

    # prior sigma per layer against that layer's meta-prior, beside ER error (the paper's figure)
    n_layers = len(ok_rows[0]["prior_sigma_per_layer"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for i in range(n_layers):
        w = [r["layer_w"][i] for r in ok_rows]
        s = [r["prior_sigma_per_layer"][i] for r in ok_rows]
        axes[0].scatter(w, s, label=f"layer {i + 1}", s=18)
        wu = np.unique(w)
        axes[0].plot(wu, [np.mean([si for wi, si in zip(w, s) if wi == x]) for x in wu], lw=1)
    axes[0].set_ylabel("mean prior σ (training sequences)")
    w1 = np.array([r["layer_w"][0] for r in ok_rows])
    for h in (1, 5, 10):
        key = f"mse_h{h}"
        if all(key in r for r in ok_rows):
            y = np.array([r[key] for r in ok_rows])
            axes[1].scatter(w1, y, s=18, label=f"ER MSE h={h}")
            wu = np.unique(w1)
            axes[1].plot(wu, [y[w1 == x].mean() for x in wu], lw=1)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("held-out ER MSE [rad²]")
    for ax, xl in zip(axes, ("meta-prior w of that layer", "meta-prior w of layer 1")):
        if all(x > 0 for r in ok_rows for x in r["layer_w"]):
            ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle("prior σ per layer and held-out ER error vs the meta-prior w "
                 "(the paper: high w -> σ -> 0, deterministic; low w -> random)")
    fig.tight_layout()
    paths["prior_sigma"] = out / "sweep_prior_sigma.png"
    fig.savefig(paths["prior_sigma"], dpi=110)
    plt.close(fig)

    # reconstruction (training posterior) against held-out one-step ER error, per trial
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for text, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok" and "mse_h1" in r]
        if ok:
            ax.scatter([r["posterior_mse"] for r in ok], [r["mse_h1"] for r in ok], label=config_label(text), s=24)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("posterior reconstruction MSE on the training data (normalised)")
    ax.set_ylabel("held-out ER MSE h=1 [rad²]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("reconstruction vs generalisation, per trial")
    fig.tight_layout()
    paths["reconstruction"] = out / "sweep_reconstruction.png"
    fig.savefig(paths["reconstruction"], dpi=110)
    plt.close(fig)
    return paths
