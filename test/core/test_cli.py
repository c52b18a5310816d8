"""The `pvrnn-ros` command: help for every verb, train -> generate -> CSV in the input format."""
import subprocess
import sys

import numpy as np
import pytest

from pvrnn_ros.cli import VERBS, main
from pvrnn_ros.core.data import read_csv, write_csv

from .conftest import sine_demos, small_config


def test_help_lists_every_verb():
    res = subprocess.run([sys.executable, "-m", "pvrnn_ros.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for verb in VERBS:
        assert verb in res.stdout
    assert "unavailable" not in res.stdout, res.stdout


@pytest.mark.parametrize("verb", ["train", "generate", "eval", "synth", "repair"])
def test_each_verb_explains_itself(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert "--" in capsys.readouterr().out


def test_train_then_generate_writes_csv_and_png_per_sequence(tmp_path):
    data = tmp_path / "data"
    for demo in sine_demos():
        write_csv(data / f"{demo.name}.csv", demo.times, demo.positions, demo.joint_names)
    small_config().save(tmp_path / "c.yaml")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--config", str(tmp_path / "c.yaml"), "--out", str(out),
                 "--epochs", "5", "--no-progress"]) == 0
    for name in ("model.pt", "loss.png", "report.md", "report.json", "reconstruction.png"):
        assert (out / name).exists(), name
    for mode, expected in (("posterior", 3), ("target", 3), ("prior", 2)):
        gen = tmp_path / mode
        args = ["generate", "--model", str(out / "model.pt"), "--mode", mode, "--out", str(gen)]
        if mode == "prior":
            args += ["--count", "2", "--steps", "17"]
        assert main(args) == 0
        csvs = sorted(gen.glob("*.csv"))
        assert len(csvs) == expected and len(list(gen.glob("*.png"))) == expected
        demo = read_csv(csvs[0])  # the trainer's own reader takes what generate writes
        assert demo.joint_names == ["j0", "j1", "j2"]
        assert np.allclose(np.diff(demo.times), 0.1)
        if mode == "prior":
            assert len(demo) == 17


def test_bad_inputs_give_one_line_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: {layers: [{d: 4, z: 1, tau: -2}]}")
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "model.layers[0].tau = -2.0" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_text("junk")
    assert main(["generate", "--model", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "g")]) == 2
    assert "junk.pt" in capsys.readouterr().err
