"""pvrnn-ros eval: error regression over held-out demonstrations, against baselines."""
from __future__ import annotations

from pathlib import Path

from ._common import ConfigError, fail, out_dir, show_progress

HELP = "run error regression over held-out demonstrations against baselines"
DESCRIPTION = (
    "Feed held-out demonstrations to error regression tick by tick at the model rate and compare its "
    "predictions, on exactly the same steps, with the same PV-RNN without ER, zero-order hold, "
    "constant velocity, and a GRU and an LSTM trained on the same data to convergence (validation split "
    "by episode, early stopping, hidden size chosen on validation). Writes "
    "DIR/predictions/<episode>.npz, DIR/metrics.json, DIR/metrics.md and PNGs. Give several "
    "comma-separated values to --window/--iterations/--lr to sweep them into one table (DIR/sweep.md)."
)


def _values(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None

    return parse


def add_arguments(p):
    p.add_argument("--model", required=True, metavar="PATH", help="checkpoint from `pvrnn-ros train`")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="held-out demonstrations (default: the bundled held-out examples)")
    p.add_argument("--out", metavar="DIR", default="runs/eval")
    p.add_argument("--window", type=_values(int), default=None, help="W (comma-separated to sweep)")
    p.add_argument("--iterations", type=_values(int), default=None, help="K (comma-separated to sweep)")
    p.add_argument("--lr", type=_values(float), default=None, help="ER learning rate (comma-separated to sweep)")
    p.add_argument("--horizon", type=int, default=None, help="P prediction steps")
    p.add_argument("--samples", type=int, default=None, help="prior samples for the prediction spread")
    p.add_argument("--backend", default=None, help="ER backend: auto, reference, cpu, triton")
    p.add_argument("--baseline-hidden", type=_values(int), default=None,
                   help="GRU/LSTM hidden sizes to choose from on validation (default 32,64,128)")
    p.add_argument("--baseline-max-epochs", type=int, default=None,
                   help="ceiling on GRU/LSTM epochs; early stopping normally ends first (default 3000)")
    p.add_argument("--baseline-patience", type=int, default=None,
                   help="epochs without a better validation loss before a baseline stops (default 100)")
    p.add_argument("--baseline-restarts", type=int, default=None,
                   help="GRU/LSTM initialisations per hidden size, the lowest validation loss kept "
                        "(default: the model's train.restarts, so both get as many tries)")
    p.add_argument("--no-gru", action="store_true", help="skip the GRU baseline")
    p.add_argument("--no-lstm", action="store_true", help="skip the LSTM baseline")
    p.add_argument("--rate", type=float, default=None, help="rate of CSV/NPZ files without time")
    p.add_argument("--topic", default=None, help="JointState topic in rosbag2 recordings")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (never shown when stderr "
                   "is not a terminal)")


def run(args) -> int:
    import copy

    from pvrnn_ros.core.baselines import BaselineSettings
    from pvrnn_ros.core.checkpoint import CheckpointError, load_checkpoint
    from pvrnn_ros.core.data import DataError, example_data_dir, load_demonstrations
    from pvrnn_ros.core.evaluate import evaluate, sweep

    import torch

    try:
        trained = load_checkpoint(args.model)
        # these tiny per-step ops run fastest on one thread; several threads spin against each other
        torch.set_num_threads(trained.config.train.threads or 1)
        data = Path(args.data) if args.data else example_data_dir().with_name("arm7_heldout")
        demos = load_demonstrations(data, rate_hz=args.rate, joint_names=trained.joint_names, topic=args.topic,
                                    modalities=trained.config.data.modalities)
        cfg = copy.deepcopy(trained.config.er)
        for key in ("horizon", "samples", "backend"):
            if getattr(args, key) is not None:
                setattr(cfg, key, getattr(args, key))
        grid = {k: getattr(args, k) for k in ("window", "iterations", "lr") if getattr(args, k)}
        for k, v in grid.items():
            setattr(cfg, k, v[0])
        cfg.validate("er", n_layers=len(trained.model.z_sizes))
        out = out_dir(args.out)
        print(f"{len(demos)} held-out demonstrations from {data}")
        if any(len(v) > 1 for v in grid.values()):
            sweep(trained, demos, out, grid, cfg, progress=show_progress(args.no_progress))
            print((out / "sweep.md").read_text())
            return 0
        methods = (("er", "no_er", "hold", "const_velocity") + (() if args.no_gru else ("gru",))
                   + (() if args.no_lstm else ("lstm",)))
        baselines = BaselineSettings()
        if args.baseline_hidden:
            baselines.hidden_sizes = tuple(args.baseline_hidden)
        if args.baseline_max_epochs is not None:
            baselines.max_epochs = args.baseline_max_epochs
        if args.baseline_patience is not None:
            baselines.patience = args.baseline_patience
        baselines.restarts = args.baseline_restarts
        evaluate(trained, demos, out, cfg, progress=show_progress(args.no_progress), baselines=baselines.validate(),
                 methods=methods)
    except (CheckpointError, DataError, ConfigError, ValueError) as exc:
        return fail(str(exc))
    print((out / "metrics.md").read_text())
    print(f"wrote {out}/metrics.json, metrics.md, predictions/ and PNGs")
    return 0
