"""pvrnn-ros train: full-BPTT training on demonstrations, with checkpoints, curves and a report."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ._common import ConfigError, add_config_argument, fail, load_config, out_dir, show_progress

HELP = "train a PV-RNN on demonstrations (CSV, NPZ or rosbag2)"
DESCRIPTION = (
    "Train a PV-RNN by full BPTT with Adam on the weights and every sequence's adaptive vectors A. "
    "Writes DIR/model.pt (checkpoints every train.checkpoint_every epochs and at the end), "
    "DIR/loss.png and DIR/report.md. Ctrl-C saves before stopping; --resume continues exactly."
)


def add_arguments(p):
    p.add_argument("--data", metavar="PATH", default=None,
                   help="a demonstration file, rosbag2 directory, or a directory of them "
                        "(default: the bundled example demonstrations)")
    add_config_argument(p)
    p.add_argument("--out", metavar="DIR", default="runs/train", help="output directory")
    p.add_argument("--epochs", type=int, default=None, help="total epochs (default: train.epochs in the config)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/model.pt (with train.restarts > 1 "
                   "before one was chosen: reuse the finished restarts in DIR/restarts/ and continue the stopped one)")
    p.add_argument("--rate", type=float, default=None,
                   help="sample rate (Hz) of CSV/NPZ files without a time column")
    p.add_argument("--topic", default=None, help="JointState topic to read from rosbag2 recordings (needed when a "
                   "bag holds several robots, e.g. /teacher/joint_states)")
    p.add_argument("--joints", default=None, metavar="A,B,...",
                   help="joints to learn, comma-separated (overrides data.joints); default: every revolute "
                        "joint of the data's robot description, prismatic joints only when named here")
    p.add_argument("--device", default=None, help="override train.device (cpu, cuda, auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (never shown when stderr is not "
                   "a terminal)")


def run(args) -> int:
    from pvrnn_ros.core.data import DataError, example_data_dir, joint_types_under, load_demonstrations, select_joints
    from pvrnn_ros.core.checkpoint import CheckpointError
    from pvrnn_ros.core.train import train

    try:
        config = load_config(args.config)
        if args.device:
            config.train.device = args.device
        out = out_dir(args.out)
        resuming = args.resume and (out / "model.pt").exists()
        if args.joints is not None:
            config.data.joints = [j.strip() for j in args.joints.split(",") if j.strip()] or None
            config.data.validate("data")
        demos = None
        units = _saved_units(out) if resuming else None
        if not resuming:
            data = Path(args.data) if args.data else example_data_dir()
            demos = load_demonstrations(data, rate_hz=args.rate, topic=args.topic,
                                        modalities=config.data.modalities)
            chosen = select_joints(demos[0].joint_names, config.data.joints, joint_types_under(data, args.topic))
            demos = [d.select(chosen.names) for d in demos]
            for note in chosen.notes:
                print(f"note: {note}")
            units = dict(zip(chosen.names, chosen.units))
            (out / "joints.json").write_text(json.dumps({"joints": chosen.names, "units": chosen.units}, indent=1))
            print(f"{len(demos)} demonstrations from {data}, joints: "
                  + ", ".join(f"{n} [{u}]" for n, u in units.items()))
            _suggest_imitation(data, args.topic, out, config.data.rate_hz)
        elif args.config:
            print("--resume: the checkpoint's own config is used; --config is ignored")
        t0 = time.perf_counter()
        trained = train(config, demos, out, epochs=args.epochs, resume=args.resume,
                        progress=show_progress(args.no_progress))
        wall = time.perf_counter() - t0
    except (ConfigError, DataError, CheckpointError, ValueError) as exc:
        return fail(str(exc))
    report = write_report(trained, out, wall, units)
    print(f"model: {out / 'model.pt'}   report: {out / 'report.md'}")
    print(f"posterior reconstruction MSE {report['posterior_mse']:.3g} (normalised), "
          f"{report['epochs_per_s']:.1f} epochs/s, {report['sequence_steps_per_s']:.0f} sequence-steps/s")
    return 0


def _suggest_imitation(data: Path, topic: str | None, out: Path, model_rate: float) -> None:
    """For recordings that hold the robot's commands next to its joint states (record_demos does):
    print the er_node lead / max_step measured on them, and keep them in DIR/imitation.json."""
    from pvrnn_ros.core.data import discover, is_rosbag

    bags = [p for p in discover(data) if is_rosbag(p)]
    if not bags:
        return
    try:
        from pvrnn_ros.sim.tuning import command_streams, suggest_imitation_settings

        if topic is None:
            from rosbags.highlevel import AnyReader

            with AnyReader([bags[0]]) as reader:
                js = sorted({c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/JointState"})
            topic = js[0] if len(js) == 1 else None
        if topic is None:
            return
        tuned = suggest_imitation_settings(*command_streams(bags, topic), command_rate=50.0,
                                           model_rate=model_rate)
    except (RuntimeError, ValueError, ImportError):
        return  # no commands recorded (e.g. a real robot's joint_states alone): nothing to suggest
    (out / "imitation.json").write_text(json.dumps({"lead": tuned.lead, "max_step": tuned.max_step,
                                                    "notes": tuned.notes}, indent=1))
    print(f"imitation: {tuned.notes}; run er_node with lead:={tuned.lead:.3f} max_step:={tuned.max_step:.4f} "
          f"(command_rate 50 Hz)")


def _saved_units(out: Path) -> dict[str, str] | None:
    try:
        saved = json.loads((out / "joints.json").read_text())
        return dict(zip(saved["joints"], saved["units"]))
    except (OSError, ValueError, KeyError):
        return None


def write_report(trained, out: Path, wall: float, units: dict[str, str] | None = None) -> dict:
    """Training speed, reconstruction error (per joint, in its own unit) and the meta-prior's
    fingerprint, as JSON and markdown. `units`: {joint: "rad" | "m" | "?"}; default unknown."""
    import numpy as np
    import torch

    from pvrnn_ros.core.generate import generate, training_sequence
    from pvrnn_ros.core.plots import plot_joints

    hist = trained.history
    secs = np.asarray(hist.get("seconds", []))
    recent = secs[-min(len(secs), 200):] if len(secs) else np.asarray([np.nan])
    epoch_s = float(np.median(recent))
    steps_per_epoch = int(sum(trained.sequence_lengths))
    with torch.no_grad():
        model, A = trained.model, trained.adaptive
        out_fwd = model.posterior_forward(A.mu, A.logsigma, None)
        mask = trained.step_mask()
        J = trained.layout.n_joints  # the joints' error (modalities are scored by their own terms)
        err = (model.coding.decode(out_fwd.raw)[..., :J] - trained.data[..., :J]) ** 2 * mask.unsqueeze(-1)
        mse = float(err.sum() / (mask.sum() * J))
        sigma = model.prior_sigma_by_layer(out_fwd, mask)
    squared = np.concatenate([(g - training_sequence(trained, i)) ** 2
                              for i, (_, g) in enumerate(generate(trained, "posterior"))])  # [sum T, D]
    per_joint = {n: float(np.sqrt(np.mean(squared[:, j]))) for j, n in enumerate(trained.joint_names)}
    joint_units = {n: (units or {}).get(n, "?") for n in trained.joint_names}
    by_unit = {}
    for j, n in enumerate(trained.joint_names):
        by_unit.setdefault(joint_units[n], []).append(j)
    rmse_text = ", ".join(f"{np.sqrt(np.mean(squared[:, idx])):.4g} {'(unit unknown)' if u == '?' else u} "
                          f"over {len(idx)} joint(s)" for u, idx in by_unit.items())
    report = {
        "epochs": trained.epoch,
        "wall_s_this_run": wall,
        "epochs_per_s": 1.0 / epoch_s if epoch_s > 0 else float("nan"),
        "sequence_steps_per_s": steps_per_epoch / epoch_s if epoch_s > 0 else float("nan"),
        "sequences": len(trained.sequence_lengths),
        "steps_per_epoch": steps_per_epoch,
        "posterior_mse": mse,
        "posterior_rmse_per_joint": per_joint,
        "joint_units": joint_units,
        "final_loss": hist["loss"][-1] if hist.get("loss") else None,
        "kl_per_layer": hist["kl"][-1] if hist.get("kl") else None,
        "mean_prior_sigma_per_layer": sigma,
        "torch_threads": torch.get_num_threads(),
        "backend": hist.get("backend", "reference"),
        "threads": hist.get("threads", torch.get_num_threads()),  # the cpu backend's (train.cpu_threads) or torch's
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    name0, recon = generate(trained, "posterior", sequences=[0])[0]
    _, prior = generate(trained, "prior", count=1, steps=trained.sequence_lengths[0])[0]
    truth = training_sequence(trained, 0)
    t = np.arange(len(truth)) / trained.rate_hz
    plot_joints(out / "reconstruction.png", t, {"data": truth, "posterior": recon, "prior sample": prior},
                trained.joint_names, f"sequence {trained.sequence_names[0]}")
    lines = [
        "# Training report",
        "",
        f"- epochs: {trained.epoch} ({report['sequences']} sequences, {steps_per_epoch} steps per epoch, "
        f"{trained.rate_hz:g} Hz)",
        f"- speed: {report['epochs_per_s']:.1f} epochs/s, {report['sequence_steps_per_s']:.0f} sequence-steps/s "
        f"(median of the last {len(recent)} epochs, train.backend {report['backend']}, "
        f"{report['threads']} thread(s))",
        f"- posterior reconstruction MSE: {mse:.4g} (normalised units, data in ±{trained.normalizer.scale}); "
        f"RMSE {rmse_text}",
        "- RMSE per joint: " + ", ".join(f"{n} {v:.3g} {'' if joint_units[n] == '?' else joint_units[n]}".rstrip()
                                         for n, v in per_joint.items()),
        f"- KL per layer (sum over t, / z_l): {', '.join(f'{k:.3g}' for k in report['kl_per_layer'] or [])}",
        f"- mean prior sigma per layer: {', '.join(f'{s:.3g}' for s in sigma)}",
        "",
        "![loss](loss.png)",
        "",
        "![reconstruction](reconstruction.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return report
