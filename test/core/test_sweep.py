"""pvrnn-ros sweep: grid parsing and dotted keys, and a tiny sweep on a local Ray (interrupted, resumed,
with a failing trial), checking that no Ray process outlives it."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvrnn_ros.core.config import Config, ConfigError
from pvrnn_ros.core.sweep import expand_grid, parse_grid, set_dotted, trial_id, write_outputs

REPO = Path(__file__).resolve().parents[2]


def test_parse_grid_values_are_yaml_and_lists_keep_their_commas():
    grid = parse_grid(["model.layers[*].w=0.001,0.01", "er.meta_prior=[0.1,0.2],null", "er.keep_best=true,false"])
    assert grid == {"model.layers[*].w": [0.001, 0.01], "er.meta_prior": [[0.1, 0.2], None],
                    "er.keep_best": [True, False]}
    for bad in ("er.window", "=1,2", "er.window="):
        with pytest.raises(ConfigError, match="expected KEY=V1,V2"):
            parse_grid([bad])
    with pytest.raises(ConfigError, match="er.window is given twice"):
        parse_grid(["er.window=1", "er.window=2"])


def test_dotted_keys_set_one_layer_or_every_layer_and_name_what_is_wrong():
    raw = Config().to_dict()
    set_dotted(raw, "model.layers[1].w", 0.5)
    assert [layer["w"] for layer in raw["model"]["layers"]] == [0.005, 0.5]
    set_dotted(raw, "model.layers[*].d", 10)
    assert [layer["d"] for layer in raw["model"]["layers"]] == [10, 10]
    with pytest.raises(ConfigError, match=r"unknown config key model.layers\[0\].wx"):
        set_dotted(raw, "model.layers[0].wx", 1)
    with pytest.raises(ConfigError, match="has 2 entries, no index 5"):
        set_dotted(raw, "model.layers[5].w", 1)
    with pytest.raises(ConfigError, match="unknown config key er.windw"):
        expand_grid(Config(), {"er.windw": [3]}, [0])
    # values are validated for every trial before anything runs, naming the dotted key
    with pytest.raises(ConfigError, match=r"er.window = 0 is invalid"):
        expand_grid(Config(), {"er.window": [15, 0]}, [0])


def test_grid_times_seeds_with_stable_distinct_ids():
    trials = expand_grid(Config(), {"model.layers[*].w": [0.001, 0.01], "er.window": [10, 20]}, [0, 1])
    assert len(trials) == 8 and len({t.trial_id for t in trials}) == 8
    again = expand_grid(Config(), {"model.layers[*].w": [0.001, 0.01], "er.window": [10, 20]}, [0, 1])
    assert [t.trial_id for t in trials] == [t.trial_id for t in again]
    t = trials[5]
    assert t.trial_id == trial_id(t.overrides, t.seed)
    cfg = Config.from_dict(t.config)
    assert cfg.train.seed == t.seed == cfg.er.seed
    assert [layer.w for layer in cfg.model.layers] == [t.overrides["model.layers[*].w"]] * 2


def test_core_sweep_does_not_import_ray():
    code = "import sys, pvrnn_ros.core.sweep\nsys.exit(1 if 'ray' in sys.modules else 0)\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stdout + res.stderr


def test_outputs_from_records(tmp_path):
    trials = expand_grid(Config(), {"model.layers[*].w": [0.001, 0.01]}, [0, 1])
    records = {}
    for i, t in enumerate(trials):
        w = t.overrides["model.layers[*].w"]
        mse = [0.001 * (h + 1) * (1 + 10 * w) + 1e-4 * t.seed for h in range(10)]
        records[t.trial_id] = {"trial_id": t.trial_id, "overrides": t.overrides, "seed": t.seed, "status": "ok",
                               "mse_by_horizon": mse, "mse_h1": mse[0], "mse_h5": mse[4], "mse_h10": mse[9],
                               "posterior_mse": 0.01 / (1 + 100 * w), "prior_sigma_per_layer": [1 - 50 * w, 0.9],
                               "layer_w": [w, w], "epochs": 10, "train_seconds": 1.0}
    failed = trials[-1]
    records[failed.trial_id] = {"trial_id": failed.trial_id, "overrides": failed.overrides, "seed": failed.seed,
                                "status": "failed", "error": "ValueError: boom"}
    paths = write_outputs(records, trials, tmp_path)
    md = (tmp_path / "sweep.md").read_text()
    assert "4 trials: 3 completed, 1 failed" in md and "ValueError: boom" in md
    assert "| 0.001 | 2/2 | 0.00106 ± 5e-05 |" in md  # mean ± std over the two seeds at h = 1
    assert "| 0.01 | 1/2 | 0.0011 |" in md  # the failed seed is left out
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    for key in ("error_vs_horizon", "prior_sigma", "reconstruction"):
        assert paths[key].stat().st_size > 10000


# ------------------------------------------------------------------------------------- on Ray
TINY = """
model:
  layers:
    - {d: 8, z: 1, tau: 2.0, w: 0.01}
train: {cpu_threads: 1, checkpoint_every: 1000}
er: {window: 6, iterations: 4, first_iterations: 8, horizon: 5, samples: 0}
"""


def _ray_processes(temp_dir: str) -> list[str]:
    """Processes whose command line names this sweep's Ray temp dir (raylet, GCS, workers)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmd:
            found.append(f"{pid}: {cmd[:120]}")
    return found


def _sweep_cmd(out, config, seeds, cpus):
    # data.rate_hz = 0.05 leaves the 16 s demonstrations shorter than two steps: that trial fails for real
    return [sys.executable, "-m", "pvrnn_ros.cli", "sweep", "--config", str(config), "--out", str(out),
            "--param", "data.rate_hz=10,0.05", "--seeds", seeds, "--epochs", "30", "--num-cpus", str(cpus)]


def _wait_gone(temp_dir: str, seconds: float = 20.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _ray_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_sweep_on_local_ray_interrupted_resumed_with_a_failing_trial(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}

    # 1. interrupted: Ctrl-C once the first trial has completed (one CPU: the trials run one at a time)
    proc = subprocess.Popen(_sweep_cmd(out, config, "0,1", 1), cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 150
    while not list(out.glob("trials/*/result.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(out.glob("trials/*/result.json")), "no trial completed"
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    log = proc.communicate(timeout=120)[0]
    temp_dir = json.loads((out / "ray_local.json").read_text())["temp_dir"]
    assert not _wait_gone(temp_dir), f"Ray processes left behind after the interrupt: {_ray_processes(temp_dir)}\n{log}"
    first = {p.parent.name: (p.read_bytes(), (p.parent / "model.pt").stat().st_mtime_ns)
             for p in out.glob("trials/*/result.json")}

    # 2. resumed: the same command on two CPUs; completed trials are not rerun
    res = subprocess.run(_sweep_cmd(out, config, "0,1", 2), cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    temp_dir = json.loads((out / "ray_local.json").read_text())["temp_dir"]
    assert not _wait_gone(temp_dir), f"Ray processes left behind: {_ray_processes(temp_dir)}"
    for tid, (content, mtime) in first.items():
        assert (out / "trials" / tid / "result.json").read_bytes() == content
        assert (out / "trials" / tid / "model.pt").stat().st_mtime_ns == mtime
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 4
    status = {(r["data.rate_hz"], r["seed"]): r["status"] for r in rows}
    assert status == {("10", s): "ok" for s in "01"} | {("0.05", s): "failed" for s in "01"}
    for r in rows:
        if r["status"] == "ok":
            assert 0 < float(r["mse_h1"]) < float(r["mse_h5"]) and 0 < float(r["prior_sigma_l1"]) < 5
        else:
            assert "shorter than two steps at 0.05 Hz" in r["error"]
    md = (out / "sweep.md").read_text()
    assert "4 trials: 2 completed, 2 failed" in md and "shorter than two steps" in md
    assert "2 trial(s) failed" in res.stdout
    for png in ("sweep_error_vs_horizon.png", "sweep_prior_sigma.png", "sweep_reconstruction.png"):
        assert (out / png).stat().st_size > 10000


def test_cli_rejects_a_bad_key_before_starting_anything(tmp_path, capsys):
    from pvrnn_ros.cli import main

    out = tmp_path / "s"
    assert main(["sweep", "--param", "er.windw=3,4", "--out", str(out)]) == 2
    assert "unknown config key er.windw" in capsys.readouterr().err
    assert main(["sweep", "--param", "model.layers[0].w=-1", "--out", str(out)]) == 2
    assert "model.layers[0].w = -1.0 is invalid" in capsys.readouterr().err
    assert not (out / "trials").exists()


def test_er_only_trials_on_a_checkpoint_are_not_retrained(tmp_path):
    from pvrnn_ros.core.data import load_demonstrations, write_csv
    from pvrnn_ros.core.sweep import SweepData, _spec, run_trial
    from pvrnn_ros.core.train import train

    from .conftest import sine_demos, small_config

    data = tmp_path / "data"
    for demo in sine_demos(n=3, seconds=3.0):
        write_csv(data / f"{demo.name}.csv", demo.times, demo.positions, demo.joint_names)
    cfg = small_config()
    cfg.er.horizon, cfg.er.iterations, cfg.er.first_iterations, cfg.er.samples = 4, 3, 5, 0
    trained = train(cfg, load_demonstrations(data), tmp_path / "run", epochs=5, progress=False)
    ckpt = tmp_path / "run" / "model.pt"
    with pytest.raises(ConfigError, match="model.layers\\[0\\].w needs training"):
        expand_grid(Config(), {"model.layers[0].w": [0.1]}, [0], models=[str(ckpt)])
    trials = expand_grid(Config(), {"er.window": [4, 7]}, [3], models=[str(ckpt)])
    assert len({t.trial_id for t in trials}) == 2 and all(t.model == str(ckpt.resolve()) for t in trials)
    # the checkpoint's own config is the base, not the Config() passed in
    assert Config.from_dict(trials[1].config).model.layers[0].d == 12 and trials[1].config["er"]["window"] == 7
    record = run_trial(_spec(trials[1], SweepData(str(data), str(data)), tmp_path / "sweep", None))
    assert record["status"] == "ok", record.get("traceback")
    assert record["epochs"] == trained.epoch == 5 and len(record["mse_by_horizon"]) == 4
    assert not (tmp_path / "sweep" / "trials" / trials[1].trial_id / "model.pt").exists()
