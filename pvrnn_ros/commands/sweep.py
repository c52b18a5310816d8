"""pvrnn-ros sweep: train and evaluate a grid (or an Optuna search) over config keys x seeds on Ray Tune."""
from __future__ import annotations

from pathlib import Path

from ._common import ConfigError, add_config_argument, fail, load_config, out_dir

HELP = "sweep config keys x seeds (train + ER eval per trial) on Ray Tune"
DESCRIPTION = (
    "Every trial trains a PV-RNN with the base config plus its overrides and evaluates error "
    "regression on held-out demonstrations. --param KEY=V1,V2 (repeatable) names a dotted config key "
    "(model.layers[0].w, model.layers[*].w for every layer, er.meta_prior_scale, er.window, "
    "model.layers[0].d, data.rate_hz, ...) and its values. Trials run in parallel on Ray Tune: a local Ray "
    "on --num-cpus cores by default, a cluster with --address. Rerunning the same command resumes: "
    "completed trials are not rerun. A failed trial is reported and the sweep goes on. Writes "
    "DIR/sweep.csv, DIR/sweep.md, DIR/sweep_error_vs_horizon.png, DIR/sweep_prior_sigma.png, "
    "DIR/sweep_reconstruction.png and DIR/trials/<id>/ (model, config, result). With --model, trials "
    "sweep er.* keys on trained checkpoints without retraining. Needs the `sweep` "
    "extra: pip install 'pvrnn_ros[sweep]'."
)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(p):
    p.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeat for a grid over several keys)")
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds, comma-separated (train.seed and er.seed)")
    add_config_argument(p)
    p.add_argument("--model", action="append", default=None, metavar="PATH",
                   help="ER-only sweep: evaluate this checkpoint (repeatable, e.g. one per training seed) "
                        "with the er.* values instead of training; --seeds then set er.seed")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="training demonstrations (default: the bundled examples)")
    p.add_argument("--heldout", metavar="PATH", default=None,
                   help="held-out demonstrations ER is scored on (default: the bundled held-out examples)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs per trial (default: train.epochs)")
    p.add_argument("--out", metavar="DIR", default="runs/sweep")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: every core)")
    p.add_argument("--search", choices=("grid", "optuna"), default="grid",
                   help="the full grid, or an Optuna search over the same values")
    p.add_argument("--samples", type=int, default=None, help="configurations an Optuna search tries")
    p.add_argument("--metric", default="mse_h5", help="what --search optuna minimises: mse_h1, mse_h5, mse_h10")
    p.add_argument("--baselines", action="store_true",
                   help="also train the converged GRU/LSTM baselines once per model rate, for the table and plots")
    p.add_argument("--baseline-max-epochs", type=int, default=None, help="ceiling on baseline epochs (default 3000)")
    p.add_argument("--baseline-restarts", type=int, default=None,
                   help="baseline initialisations per hidden size (default: the most train.restarts of the "
                        "sweep's trials at that rate)")
    p.add_argument("--rate", type=float, default=None, help="rate of CSV/NPZ files without a time column")
    p.add_argument("--topic", default=None, help="JointState topic in rosbag2 recordings")
    p.add_argument("--verbose", action="store_true", help="Ray Tune's progress table")


def run(args) -> int:
    from pvrnn_ros.core.baselines import BaselineSettings
    from pvrnn_ros.core.checkpoint import CheckpointError
    from pvrnn_ros.core.data import DataError, example_data_dir
    from pvrnn_ros.core.sweep import (SweepData, expand_grid, parse_grid, run_sweep, sweep_baselines,
                                      write_outputs)

    try:
        base = load_config(args.config)
        grid = parse_grid(args.param)
        if args.model and args.search != "grid":
            raise ConfigError("--model (an ER-only sweep) takes the grid search only")
        trials = expand_grid(base, grid, args.seeds, models=args.model)
        train_data = Path(args.data) if args.data else example_data_dir()
        heldout = Path(args.heldout) if args.heldout else example_data_dir().with_name("arm7_heldout")
        for path in (train_data, heldout):
            if not path.exists():
                raise DataError(f"{path}: no such file or directory")
        data = SweepData(str(train_data), str(heldout), args.rate, args.topic)
        out = out_dir(args.out)
        try:
            import ray  # noqa: F401
            from ray import tune  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"pvrnn-ros sweep needs Ray Tune ({exc}): pip install 'pvrnn_ros[sweep]'") from None
        print(f"{len(trials)} trials ({len(trials) // len(args.seeds)} configurations x {len(args.seeds)} seeds)"
              if args.search == "grid" else f"Optuna search: {args.samples} configurations x {len(args.seeds)} seeds")
        records = run_sweep(trials, data, out, epochs=args.epochs, address=args.address, num_cpus=args.num_cpus,
                            search=args.search, samples=args.samples, metric=args.metric, base=base, grid=grid,
                            seeds=args.seeds, verbose=args.verbose)
        if args.search == "optuna":  # the trials are what Optuna sampled
            from pvrnn_ros.core.sweep import Trial

            trials = [Trial(r["trial_id"], r["overrides"], r["seed"]) for r in records.values()
                      if set(r.get("overrides", {})) == set(grid)]
        baselines = None
        if args.baselines:
            settings = BaselineSettings()
            if args.baseline_max_epochs is not None:
                settings.max_epochs = args.baseline_max_epochs
            settings.restarts = args.baseline_restarts
            baselines = sweep_baselines(records, data, out, settings.validate())
        write_outputs(records, trials, out, baselines)
    except (ConfigError, DataError, CheckpointError, ValueError) as exc:
        return fail(str(exc))
    print((out / "sweep.md").read_text().split("\n![")[0])
    failed = sum(records.get(t.trial_id, {}).get("status") == "failed" for t in trials)
    print(f"wrote {out}/sweep.csv, sweep.md and PNGs" + (f"; {failed} trial(s) failed" if failed else ""))
    return 0
