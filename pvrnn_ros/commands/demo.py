"""`pvrnn-ros demo`: simulate, record, train, evaluate, run live ER imitation, write a report."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
from pathlib import Path

HELP = "end-to-end: simulate, record, train, run live ER imitation, report"
DESCRIPTION = (
    "End to end on this machine, over real ROS 2 (DDS kept on localhost): (1) bring up the MuJoCo "
    "teacher/learner sim + demonstrator + recorder (graph record_demos, faster than real time) and record "
    "episodes to rosbag2/MCAP; (2) train a PV-RNN on the bags; (3) evaluate ER against baselines on held-out "
    "episodes; (4) bring up sim + demonstrator + ER node in imitate mode (graph imitate, real time) and "
    "watch the learner arm follow the teacher; (5) write OUT/report.md with PNGs."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=("imitate", "reach"), default="imitate",
                        help="imitate: the ROS 2 record / train / live-ER pipeline below; reach: reach demonstrations "
                             "in the MuJoCo arm, PV-RNN planning to held-out end-effector goals against nearest-demo "
                             "replay and goal-conditioned BC, each executed in the sim (docs/results.md)")
    parser.add_argument("--goals", type=int, default=None,
                        help="--task reach: held-out goals inside the region and as many on its faces (default 10; quick 2)")
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--quick", action="store_true", help="tiny run (seconds of data, a few epochs) for tests")
    parser.add_argument("--episodes", type=int, default=None, help="episodes recorded (default 8, 16 with --scene FILE: a new robot "
                        "got below the delayed-copy reference with twice the bundled arm's data; quick 3; "
                        "--task reach: 120, quick 40)")
    parser.add_argument("--heldout", type=int, default=None, help="episodes kept for evaluation (default 2; quick 1)")
    parser.add_argument("--duration", type=float, default=None, help="s of sim time per episode (default 16; quick 6)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 2500; quick 30; "
                        "--task reach: 4000, quick 150)")
    parser.add_argument("--config", default=None, help="model/training/ER YAML (default: built-in Config())")
    parser.add_argument("--rtf", type=float, default=4.0, help="real-time factor while recording")
    parser.add_argument("--imitate-seconds", type=float, default=None, help="live imitation length (default 30; quick 8)")
    parser.add_argument("--baseline-epochs", type=int, default=None,
                        help="most epochs of the early-stopped GRU/LSTM baselines (default 3000; quick 100)")
    parser.add_argument("--seed", type=int, default=0, help="demonstrator seed (imitation uses seed + 1000)")
    parser.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (never shown when stderr "
                        "is not a terminal)")
    parser.add_argument("--no-eval", action="store_true", help="skip stage 3 (offline ER evaluation vs baselines)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="s after the first prediction left out of the tracking RMSE (the learner moving from "
                             "its own start pose to the teacher's); the RMSE with them is reported too")
    parser.add_argument("--scene", default="teacher_learner",
                        help="the bundled teacher_learner scene, or the MJCF file of ONE robot: it is attached "
                             "twice at run time (teacher_ and learner_ copies; see docs/own_robot.md)")
    parser.add_argument("--position-kp", type=float, default=0.0,
                        help="with --scene FILE: position servo gain for joints no actuator drives (0 = none)")
    parser.add_argument("--end-effector-site", default="auto",
                        help="site published as <robot>/end_effector (auto: a site named end_effector)")
    parser.add_argument("--lead", default=None,
                        help="er_node lead in s, or 'auto' (the teacher servo's lag measured on the recordings); "
                             "default: auto with --scene FILE, else config/imitate_params.yaml's")
    parser.add_argument("--max-step", default=None,
                        help="er_node max_step per command, or 'auto' (2 x the fastest demonstrated change); "
                             "default: auto with --scene FILE, else config/imitate_params.yaml's")


class _Stage:
    def __init__(self, timings: dict, name: str, label: str):
        self.timings, self.name, self.label = timings, name, label

    def __enter__(self):
        print(f"\n=== {self.label} ===", flush=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        dt = time.monotonic() - self.t0
        self.timings[self.name] = dt
        if exc[0] is None:
            print(f"--- {self.label}: {dt:.1f} s", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.task == "reach":
        from .demo_reach import run as run_reach

        return run_reach(args)
    q = args.quick
    own_robot = args.scene != "teacher_learner"
    episodes = args.episodes or (3 if q else (16 if own_robot else 8))
    heldout = args.heldout if args.heldout is not None else (1 if q else 2)
    duration = args.duration or (6.0 if q else 16.0)
    epochs = args.epochs if args.epochs is not None else (30 if q else 2500)
    imitate_s = args.imitate_seconds or (8.0 if q else 30.0)
    from pvrnn_ros.core.baselines import BaselineSettings

    baselines = BaselineSettings(max_epochs=args.baseline_epochs or (100 if q else 3000),
                                 hidden_sizes=(32,) if q else BaselineSettings.hidden_sizes)
    if not 1 <= heldout < episodes:
        print("pvrnn-ros demo: error: need 1 <= --heldout < --episodes")
        return 2
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    domain = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 200
    from ._common import show_progress

    progress = show_progress(args.no_progress)
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    print(f"pvrnn-ros demo -> {out}/  (ROS_DOMAIN_ID={domain}, DDS on localhost; "
          f"{episodes} episodes x {duration:g} s, {epochs} epochs, {imitate_s:g} s imitation)")

    from pvrnn_ros.bringup import ros_env

    env = ros_env(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    scene = _scene_overrides(args)
    with _Stage(timings, "record", f"1/5 record {episodes} demonstrations (sim x{args.rtf:g} real time)"):
        bags = _record(out, env, episodes, duration, args.rtf, args.seed, progress, scene)

    with _Stage(timings, "train", f"2/5 train the PV-RNN ({epochs} epochs)"):
        trained, train_demos, test_demos = _train(out, bags, heldout, epochs, args.config, args.threads, progress)
    imitation = _imitation_overrides(args, trained.rate_hz)
    metrics = {}
    if not args.no_eval:
        with _Stage(timings, "evaluate", f"3/5 evaluate ER vs baselines on {heldout} held-out episode(s)"):
            from pvrnn_ros.core.evaluate import evaluate

            metrics = evaluate(trained, test_demos, out / "eval", progress=progress, baselines=baselines)
    with _Stage(timings, "imitate", f"4/5 live ER imitation in the sim ({imitate_s:g} s, real time)"):
        live = _imitate(out, env, domain, imitate_s, args.seed + 1000, progress, scene + imitation)
    with _Stage(timings, "report", "5/5 report"):
        timings["total"] = time.monotonic() - t_start
        report = _report(out, trained, metrics, live, timings, dict(episodes=episodes, heldout=heldout,
                         duration=duration, epochs=epochs, rtf=args.rtf, imitate_s=imitate_s, domain=domain,
                         scene=args.scene, overrides=scene + imitation, settle=args.settle))
    total = time.monotonic() - t_start
    print(f"\ndemo done in {total:.0f} s; report: {report}")
    return 0


# ----------------------------------------------------------------------------- 1. record
def _scene_overrides(args) -> list[str]:
    """Node parameters that put the user's robot in both graphs (nothing for the bundled scene)."""
    if args.scene == "teacher_learner":
        return [f"sim_node.end_effector_site:={args.end_effector_site}"] if args.end_effector_site != "auto" else []
    path = Path(args.scene)
    if not path.is_file():
        raise SystemExit(f"pvrnn-ros demo: error: --scene {args.scene!r} is neither 'teacher_learner' nor an MJCF file")
    path = path.resolve()
    return [f"sim_node.scene:={path}", "sim_node.pair:=['teacher_', 'learner_']",
            f"sim_node.position_kp:={float(args.position_kp)}", f"sim_node.end_effector_site:={args.end_effector_site}",
            f"demonstrator_node.scene:={path}"]


def _imitation_overrides(args, model_rate: float) -> list[str]:
    """er_node lead / max_step: given, or measured on the robot in the physics ('auto')."""
    from pvrnn_ros.sim.tuning import imitation_settings_in_sim

    own_robot = args.scene != "teacher_learner"
    lead = args.lead if args.lead is not None else ("auto" if own_robot else None)
    step = args.max_step if args.max_step is not None else ("auto" if own_robot else None)
    tuned = imitation_settings_in_sim(args.scene, args.position_kp, model_rate)
    used = "auto" in (lead, step)
    print(f"  imitation settings measured on the robot: {tuned.notes}"
          + ("" if used else " (not used: the bundled arm keeps config/imitate_params.yaml's)"))
    lead = f"{tuned.lead:.3f}" if lead == "auto" else lead
    step = f"{tuned.max_step:.4f}" if step == "auto" else step
    out = []
    if lead is not None:
        out.append(f"er_node.lead:={float(lead)}")
    if step is not None:
        out.append(f"er_node.max_step:={float(step)}")
    return out


def _record(out: Path, env: dict, episodes: int, duration: float, rtf: float, seed: int, progress: bool,
            scene: list[str]) -> list[Path]:
    from tqdm.auto import tqdm

    from pvrnn_ros.bringup import Bringup

    bag_dir = out / "bags"
    up = Bringup("record_demos", out / "logs" / "record", [
        f"recorder_node.output_dir:={bag_dir.resolve()}",
        f"recorder_node.episode_count:={episodes}",
        f"recorder_node.episode_duration:={duration}",
        f"sim_node.real_time_factor:={rtf}",
        f"demonstrator_node.seed:={seed}",
    ] + scene, env=env)
    procs = up.start()
    for p in procs:
        print(f"  {p.spec.name}: log {p.log}")
    timeout = 60.0 + 3.0 * episodes * duration / max(rtf, 0.5)
    t0 = time.monotonic()
    bar = tqdm(total=episodes, desc="recording", unit="episode", disable=not progress)
    done = 0
    try:
        while True:
            n = len(list(bag_dir.glob("episode_*/metadata.yaml"))) if bag_dir.exists() else 0
            if n > done:
                bar.update(n - done)
                done = n
            exited = dict(up.poll())
            if "recorder_node" in exited:
                break
            if exited:
                raise RuntimeError(f"node(s) {sorted(exited)} exited early; see logs in {out / 'logs' / 'record'}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"recording took longer than {timeout:.0f} s; see {out / 'logs' / 'record'}")
            time.sleep(0.2)
    finally:
        bar.close()
        up.stop()
    found = sorted(p for p in bag_dir.glob("episode_*") if (p / "metadata.yaml").exists())
    if len(found) < episodes:
        raise RuntimeError(f"only {len(found)} of {episodes} episodes recorded in {bag_dir}")
    for bag in found:
        _write_segments(bag)
    print(f"  {len(found)} episodes in {bag_dir}/ (rosbag2, MCAP)")
    return found


def _write_segments(bag: Path) -> None:
    """<bag>.segments.json from the recorded /demonstrator/primitive topic (switch times for evaluate)."""
    from rosbags.highlevel import AnyReader

    t_first = None
    segments = []
    with AnyReader([bag]) as reader:
        for conn, stamp, raw in reader.messages():
            if conn.topic == "/teacher/joint_states" and t_first is None:
                msg = reader.deserialize(raw, conn.msgtype)
                t_first = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
            elif conn.topic == "/demonstrator/primitive" and t_first is not None:
                name = reader.deserialize(raw, conn.msgtype).data
                if not segments or segments[-1]["primitive"] != name:
                    segments.append({"start_time": round(max(0.0, stamp * 1e-9 - t_first), 6), "primitive": name})
    if segments:
        bag.with_suffix(".segments.json").write_text(json.dumps(segments, indent=1))


# ----------------------------------------------------------------------------- 2. train
DEMO_TASK_MODALITY = {"name": "task", "source": "segments", "weight": 0.005}  # config/pvrnn.yaml, docs/results.md


def _train(out: Path, bags: list[Path], heldout: int, epochs: int, config: str | None, threads: int, progress: bool):
    import torch

    from pvrnn_ros.core.config import Config
    from pvrnn_ros.core.data import read_any, read_joint_types, select_joints
    from pvrnn_ros.core.train import train

    torch.set_num_threads(max(1, threads))
    if config:
        cfg = Config.load(config)
    else:  # the built-in defaults, plus recognition of the primitive the demonstrator publishes
        cfg = Config.from_dict({"data": {"modalities": [dict(DEMO_TASK_MODALITY)]}})
    demos = [read_any(b, topic="/teacher/joint_states", modalities=cfg.data.modalities) for b in bags]
    chosen = select_joints(demos[0].joint_names, cfg.data.joints, read_joint_types(bags[0], "/teacher/joint_states"))
    for note in chosen.notes:
        print(f"  note: {note}")
    demos = [d.select(chosen.names) for d in demos]
    train_demos, test_demos = demos[:-heldout], demos[-heldout:]
    cfg.train.threads = max(1, threads)
    print(f"  train on {[d.name for d in train_demos]}, hold out {[d.name for d in test_demos]}; "
          f"joints {train_demos[0].joint_names}; model rate {cfg.data.rate_hz:g} Hz")
    trained = train(cfg, train_demos, out / "model", epochs=epochs, progress=progress)
    print(f"  checkpoint {out / 'model' / 'model.pt'}, loss curve {out / 'model' / 'loss.png'}")
    return trained, train_demos, test_demos


# ----------------------------------------------------------------------------- 4. imitate
class _Monitor:
    """In-process rclpy node collecting the live topics (own context, spun on a thread)."""

    def __init__(self, domain: int):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64, Float64MultiArray, UInt64
        from trajectory_msgs.msg import JointTrajectory

        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = rclpy.create_node("demo_monitor", context=self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.node)
        self.lock = threading.Lock()
        self.data = {k: [] for k in ("teacher", "learner", "fe", "lat", "pred")}
        self.misses = 0
        self.recording = False
        sub = self.node.create_subscription
        sub(JointState, "teacher/joint_states", lambda m: self._js("teacher", m), 100)
        sub(JointState, "learner/joint_states", lambda m: self._js("learner", m), 100)
        sub(Float64MultiArray, "pvrnn/free_energy", lambda m: self._add("fe", list(m.data)), 100)
        sub(Float64, "pvrnn/tick_latency", lambda m: self._add("lat", m.data), 100)
        sub(UInt64, "pvrnn/deadline_misses", lambda m: setattr(self, "misses", int(m.data)), 10)
        sub(JointTrajectory, "pvrnn/prediction", lambda m: self._add("pred", None), 100)
        # recognition: what er_node says the teacher is doing, and what the demonstrator says it does
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import String

        self.data.update(recognition=[], primitive=[])
        self.classes = None
        sub(JointState, "pvrnn/recognition", self._recognition, 100)
        sub(String, "teacher/primitive", lambda m: self._primitive(m.data),
            QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.names = None
        self._stop = False
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while not self._stop and self.ctx.ok():
            try:
                self.ex.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001
                break

    def _js(self, key, m):
        if self.names is None:
            self.names = list(m.name)
        idx = [list(m.name).index(n) for n in self.names]
        self._add(key, [m.position[i] for i in idx])

    def _recognition(self, m):
        self.classes = list(m.name)
        self._add("recognition", list(m.position))

    def _primitive(self, name):
        with self.lock:  # always kept: the primitive in force when recording starts came earlier
            self.data["primitive"].append((time.monotonic(), name))

    def _add(self, key, value):
        if self.recording or key == "pred":
            with self.lock:
                self.data[key].append((time.monotonic(), value))

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.ex.shutdown(timeout_sec=1)
        self.node.destroy_node()
        self.ctx.try_shutdown()


def _imitate(out: Path, env: dict, domain: int, seconds: float, seed: int, progress: bool,
             overrides: list[str]) -> dict:
    from tqdm.auto import tqdm

    from pvrnn_ros.bringup import Bringup

    model = (out / "model" / "model.pt").resolve()
    up = Bringup("imitate", out / "logs" / "imitate", [
        f"er_node.model_path:={model}", f"demonstrator_node.seed:={seed}"] + overrides, env=env)
    mon = _Monitor(domain)
    procs = up.start()
    for p in procs:
        print(f"  {p.spec.name}: log {p.log}")
    try:
        t0 = time.monotonic()
        while not mon.data["pred"]:
            if up.poll():
                raise RuntimeError(f"node(s) {up.poll()} exited; see {out / 'logs' / 'imitate'}")
            if time.monotonic() - t0 > 90:
                raise RuntimeError(f"no ER prediction within 90 s; see {out / 'logs' / 'imitate'}")
            time.sleep(0.1)
        print(f"  first prediction {time.monotonic() - t0:.1f} s after start-up; watching for {seconds:g} s")
        mon.recording = True
        t1 = time.monotonic()
        for _ in tqdm(range(int(seconds)), desc="imitating", unit="s", disable=not progress):
            time.sleep(max(0.0, t1 + _ + 1 - time.monotonic()))
            if up.poll():
                raise RuntimeError(f"node(s) {up.poll()} exited; see {out / 'logs' / 'imitate'}")
        mon.recording = False
    finally:
        codes = up.stop()
        mon.close()
    summary = ""
    log = out / "logs" / "imitate" / "er_node.log"
    if log.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "ER summary" in ln]
        summary = lines[-1].split("]: ", 1)[-1] if lines else ""
    return {"data": mon.data, "names": mon.names or [], "misses": mon.misses, "t0": t1, "exit_codes": codes,
            "er_summary": summary, "classes": mon.classes}


# ----------------------------------------------------------------------------- 5. report
def _report(out: Path, trained, metrics: dict, live: dict, timings: dict, settings: dict) -> Path:
    import numpy as np

    from pvrnn_ros.core.plots import _plt

    plt = _plt()
    d, t0 = live["data"], live["t0"]
    names = live["names"]
    lines = ["# pvrnn-ros demo report", ""]
    lines += [f"Settings: {settings['episodes']} episodes x {settings['duration']:g} s recorded at "
              f"{settings['rtf']:g}x real time ({settings['heldout']} held out), {settings['epochs']} training epochs, "
              f"{settings['imitate_s']:g} s live imitation; ROS_DOMAIN_ID {settings['domain']} on localhost. "
              f"Scene: {settings['scene']}; overrides: {' '.join(settings['overrides']) or 'none'}.", ""]
    lines += ["| stage | wall time |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} s |" for k, v in timings.items()]
    lines += ["", "Data: `bags/` (rosbag2 MCAP, one directory per episode); model: `model/model.pt` "
              "(loss curve `model/loss.png`); logs of every node: `logs/`.", ""]

    # prediction error vs baselines (evaluate)
    lines += ["## Prediction error vs baselines (held-out episodes, offline)", ""]
    lines += [(out / "eval" / "metrics.md").read_text() if (out / "eval" / "metrics.md").exists() else "(no metrics)"]
    for png in ("error_vs_horizon.png", "error_around_switches.png"):
        if (out / "eval" / png).exists():
            lines += [f"![{png}](eval/{png})", ""]

    # tracking
    lines += ["## Live imitation: the learner follows the teacher", ""]
    teacher, learner = d["teacher"], d["learner"]
    tracking = {}
    if teacher and learner:
        tt = np.array([t for t, _ in teacher]) - t0
        tq = np.array([v for _, v in teacher])
        lt = np.array([t for t, _ in learner]) - t0
        lq = np.array([v for _, v in learner])
        lq_on_t = np.stack([np.interp(tt, lt, lq[:, j]) for j in range(lq.shape[1])], 1)
        np.savez(out / "live_tracking.npz", teacher_t=tt, teacher_q=tq, learner_t=lt, learner_q=lq,
                 joint_names=np.array(names))
        covered = (tt >= lt[0]) & (tt <= lt[-1])
        rmse_all = float(np.sqrt(np.mean((lq_on_t[covered] - tq[covered]) ** 2)))
        settle = float(settings.get("settle", 0.0))
        ok = covered & (tt >= settle)
        rmse = float(np.sqrt(np.mean((lq_on_t[ok] - tq[ok]) ** 2)))
        # the same error for a learner that copied the teacher 0.1 .. 0.5 s late (what no prediction gives)
        lag_rmse = {}
        for lag in (0.1, 0.2, 0.3, 0.5):
            delayed = np.stack([np.interp(tt - lag, tt, tq[:, j]) for j in range(tq.shape[1])], 1)
            m = ok & (tt - lag >= tt[0])
            lag_rmse[lag] = float(np.sqrt(np.mean((delayed[m] - tq[m]) ** 2)))
        best_lag = _best_lag(tt, tq, lq_on_t, ok)
        tracking = {"rmse": rmse, "rmse_including_settle": rmse_all, "settle_s": settle, "delayed_copy_rmse": {f"{k:g}": v for k, v in lag_rmse.items()},
                    "ratio_to_delayed_copy_0.1s": rmse / lag_rmse[0.1] if lag_rmse[0.1] > 0 else float("nan"),
                    "best_lag_s": best_lag, "samples": int(ok.sum()), "joints": names}
        lines += [f"Tracking RMSE learner vs teacher: **{rmse:.4f} rad** (all joints, {ok.sum()} samples after "
                  f"the first {settle:g} s; {rmse_all:.4f} with them). "
                  f"Reference: a perfect copy delayed by 0.1/0.2/0.3/0.5 s would score "
                  + "/".join(f"{v:.4f}" for v in lag_rmse.values())
                  + f" rad. Best-fit lag of the learner behind the teacher: {best_lag:+.2f} s.", ""]
        fig, axes = plt.subplots(len(names), 1, figsize=(10, 1.4 * len(names) + 0.8), sharex=True, squeeze=False)
        for j, n in enumerate(names):
            ax = axes[j, 0]
            ax.plot(tt, tq[:, j], label="teacher (observed)", lw=1.2)
            ax.plot(lt, lq[:, j], label="learner (commanded by ER)", lw=1.2, ls="--")
            ax.set_ylabel(n, fontsize=8)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=8, loc="upper right")
        axes[-1, 0].set_xlabel("time [s]")
        fig.suptitle(f"Live imitation: learner tracking the teacher (RMSE {rmse:.3f} rad)")
        fig.tight_layout()
        fig.savefig(out / "tracking.png", dpi=90)
        plt.close(fig)
        lines += ["![tracking](tracking.png)", ""]
    else:
        lines += ["(no joint states received during imitation)", ""]

    # free energy
    if d["fe"]:
        ft = np.array([t for t, _ in d["fe"]]) - t0
        fv = np.array([v for _, v in d["fe"]])
        fig, ax = plt.subplots(figsize=(10, 3.2))
        ax.plot(ft, fv[:, 0], label="free energy (window)")
        ax.plot(ft, fv[:, 1], label="reconstruction error")
        for k in range(2, fv.shape[1]):
            ax.plot(ft, fv[:, k], label=f"KL layer {k - 1}", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("time [s]")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        ax.set_title("ER free energy over time (pvrnn/free_energy)")
        fig.tight_layout()
        fig.savefig(out / "free_energy.png", dpi=90)
        plt.close(fig)
        lines += ["## Free energy over time", "",
                  f"Median free energy {np.median(fv[:, 0]):.4g}, reconstruction error {np.median(fv[:, 1]):.4g} "
                  f"over {len(fv)} ticks.", "", "![free energy](free_energy.png)", ""]

    # latency
    recognition = _live_recognition(live, trained.rate_hz)
    if recognition:
        r = recognition
        delay = "–" if r["switch_delay_median_s"] is None else f"{r['switch_delay_median_s']:.2f} s"
        lines += ["## Live recognition: which primitive the teacher is executing", "",
                  f"er_node's `pvrnn/recognition` (the task never observed) against the demonstrator's "
                  f"`teacher/primitive`, on a {trained.rate_hz:g} Hz grid over the imitation run: frame accuracy "
                  f"**{r['frame_accuracy']:.3f}**, accuracy outside 0.5 s after a switch "
                  f"**{r['settled_accuracy']:.3f}**, switch delay median "
                  f"{delay} "
                  f"({r['switches']} switches, {r['switches_missed']} missed).", ""]
    lat_stats = {}
    if d["lat"]:
        lat = np.array([v for _, v in d["lat"]])
        period = 1e3 / trained.rate_hz
        lat_stats = {"ticks": int(lat.size), "median_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
                     "max_ms": float(lat.max()), "deadline_misses": int(live["misses"]), "period_ms": period}
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.hist(lat, bins=40)
        ax.axvline(lat_stats["median_ms"], color="k", ls="--", label=f"median {lat_stats['median_ms']:.1f} ms")
        ax.axvline(lat_stats["p99_ms"], color="r", ls=":", label=f"p99 {lat_stats['p99_ms']:.1f} ms")
        ax.set_xlabel("ER tick latency [ms]")
        ax.set_ylabel("ticks")
        ax.set_title(f"ER tick latency at {trained.rate_hz:g} Hz ({period:.0f} ms period); "
                     f"{live['misses']} deadline misses")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=90)
        plt.close(fig)
        cfg = trained.config.er
        lines += ["## ER tick latency (live, er_node worker thread)", "",
                  f"{lat.size} ticks at {trained.rate_hz:g} Hz (W = {cfg.window}, K = {cfg.iterations}, backend "
                  f"{cfg.backend}): median **{lat_stats['median_ms']:.1f} ms**, p99 **{lat_stats['p99_ms']:.1f} ms**, "
                  f"max {lat_stats['max_ms']:.1f} ms; **{live['misses']} deadline misses** "
                  f"(period {period:.0f} ms).", ""]
        if live.get("er_summary"):
            lines += [f"er_node's own summary (whole run): `{live['er_summary']}`", ""]
        lines += ["![latency](latency.png)", ""]
    (out / "live_summary.json").write_text(json.dumps({"latency": lat_stats, "timings": timings, "tracking": tracking,
                                                       "recognition": recognition,
                                                       "exit_codes": live["exit_codes"]}, indent=2))
    if recognition:
        print(f"live recognition: frame accuracy {recognition['frame_accuracy']:.3f}, "
              f"{recognition['settled_accuracy']:.3f} outside 0.5 s after a switch")
    if tracking:
        print(f"tracking RMSE {tracking['rmse']:.4f} (joint units) vs a perfect copy delayed by 0.1 s "
              f"{tracking['delayed_copy_rmse']['0.1']:.4f}: ratio {tracking['ratio_to_delayed_copy_0.1s']:.2f}")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _live_recognition(live: dict, rate_hz: float) -> dict:
    """Score the live recognition against the demonstrator's primitive in force at each grid time
    (both as received by the monitor); {} when the model has no task modality."""
    import numpy as np

    from pvrnn_ros.core.recognition import score

    d, classes = live["data"], live.get("classes")
    if not classes or not d.get("recognition") or not d.get("primitive"):
        return {}
    rt = np.array([t for t, _ in d["recognition"]])
    rp = np.array([p for _, p in d["recognition"]])
    grid = np.arange(rt[0], rt[-1], 1.0 / rate_hz)
    idx = np.searchsorted(rt, grid, side="right") - 1  # the newest recognition at each grid time
    probs = rp[np.clip(idx, 0, len(rp) - 1)]
    pt = np.array([t for t, _ in d["primitive"]])
    names = [n for _, n in d["primitive"]]
    j = np.searchsorted(pt, grid, side="right") - 1
    truth = np.array([classes.index(names[k]) if k >= 0 and names[k] in classes else -1 for k in j])
    return score(probs, truth, rate_hz)


def _best_lag(tt, tq, lq, ok) -> float:
    import numpy as np

    best, best_err = 0.0, float("inf")
    for lag in np.arange(-0.3, 0.61, 0.02):
        shifted = np.stack([np.interp(tt - lag, tt, tq[:, j]) for j in range(tq.shape[1])], 1)
        m = ok & (tt - lag >= tt[0]) & (tt - lag <= tt[-1])
        err = float(np.mean((shifted[m] - lq[m]) ** 2)) if m.any() else float("inf")
        if err < best_err:
            best, best_err = float(lag), err
    return best
