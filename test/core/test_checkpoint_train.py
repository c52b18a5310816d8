import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pvrnn_ros.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pvrnn_ros.core.data import write_csv
from pvrnn_ros.core.generate import generate
from pvrnn_ros.core.train import Trainer, build_model, scheduled_lr, train

from .conftest import sine_demos, small_config


def _outputs(trained):
    A = trained.adaptive
    with torch.no_grad():
        post = trained.model.posterior_forward(A.mu, A.logsigma, None).raw
    prior = generate(trained, "prior", count=2, steps=12, seed=5)
    return post, prior


def test_save_load_gives_bit_identical_outputs(tmp_path):
    trained = train(small_config(), sine_demos(), tmp_path, epochs=15, progress=False)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.epoch == 15 and loaded.joint_names == trained.joint_names
    assert loaded.sequence_lengths == trained.sequence_lengths
    (p1, g1), (p2, g2) = _outputs(trained), _outputs(loaded)
    assert torch.equal(p1, p2)
    for (_, a), (_, b) in zip(g1, g2):
        assert (a == b).all()
    assert (loaded.normalizer.lo == trained.normalizer.lo).all()
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_resume_continues_exactly(tmp_path):
    cfg = small_config()
    straight = train(cfg, sine_demos(), tmp_path / "a", epochs=16, progress=False)
    train(small_config(), sine_demos(), tmp_path / "b", epochs=9, progress=False)
    resumed = train(small_config(), None, tmp_path / "b", epochs=16, resume=True, progress=False)
    assert resumed.epoch == 16
    for (k, v), (_, w) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(v, w), k
    assert torch.equal(straight.adaptive.mu, resumed.adaptive.mu)
    assert resumed.history["loss"] == straight.history["loss"]


def test_target_noise_changes_every_epoch_and_resumes_exactly(tmp_path):
    def noisy():
        cfg = small_config()
        cfg.train.target_noise = 0.05
        return cfg

    clean = train(small_config(), sine_demos(), tmp_path / "c", epochs=16, progress=False)
    straight = train(noisy(), sine_demos(), tmp_path / "a", epochs=16, progress=False)
    train(noisy(), sine_demos(), tmp_path / "b", epochs=9, progress=False)
    resumed = train(noisy(), None, tmp_path / "b", epochs=16, resume=True, progress=False)
    assert torch.equal(straight.adaptive.mu, resumed.adaptive.mu)
    assert resumed.history["loss"] == straight.history["loss"]
    assert not torch.equal(straight.adaptive.mu, clean.adaptive.mu)
    trainer = Trainer(build_model(noisy(), sine_demos()))
    a, b = trainer._noisy_target(0.05), trainer._noisy_target(0.05)
    assert not torch.equal(a, b) and 0.03 < float((a - trainer.target).std()) < 0.07
    assert trainer._noisy_target(0.0) is trainer.target
    bad = small_config()
    bad.train.target_noise = -1.0
    with pytest.raises(ValueError, match="train.target_noise"):
        bad.validate()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_cosine_lr_schedule_in_both_trainers_and_on_resume(tmp_path, backend):
    if backend == "cpu":
        pytest.importorskip("numba")

    def cosine():
        cfg = small_config()
        cfg.train.backend, cfg.train.lr_schedule, cfg.train.lr_final = backend, "cosine", 0.2
        return cfg

    cfg = cosine().train
    lrs = [scheduled_lr(cfg, e, 16) for e in range(16)]
    assert lrs[0] == cfg.lr and abs(lrs[-1] - 0.2 * cfg.lr) < 1e-15
    assert all(a > b for a, b in zip(lrs, lrs[1:]))  # falls every epoch
    assert scheduled_lr(small_config().train, 7, 16) == small_config().train.lr  # constant: untouched
    straight = train(cosine(), sine_demos(), tmp_path / "a", epochs=16, progress=False)
    constant = train(small_config(), sine_demos(), tmp_path / "c", epochs=16, progress=False)
    assert not torch.equal(straight.adaptive.mu, constant.adaptive.mu)  # the schedule reached the steps
    assert straight.optimizer_state["param_groups"][0]["lr"] == lrs[-1]
    # a run to 16 epochs stopped after 9 (as Ctrl-C does), then resumed to 16: the same curve
    trainer = Trainer(build_model(cosine(), sine_demos()))
    one_epoch = trainer.epoch

    def epoch_then_stop_at_9():
        stats = one_epoch()
        trainer.stop_requested = trainer.trained.epoch == 9
        return stats

    trainer.epoch = epoch_then_stop_at_9
    assert trainer.run(16, tmp_path / "b", progress=False).epoch == 9
    resumed = train(cosine(), None, tmp_path / "b", epochs=16, resume=True, progress=False)
    assert torch.equal(straight.adaptive.mu, resumed.adaptive.mu)
    assert resumed.history["loss"] == straight.history["loss"]


def test_training_is_seeded_and_reproducible(tmp_path):
    a = train(small_config(), sine_demos(), tmp_path / "a", epochs=5, progress=False)
    b = train(small_config(), sine_demos(), tmp_path / "b", epochs=5, progress=False)
    assert torch.equal(a.adaptive.mu, b.adaptive.mu)


def test_minibatches_and_variable_lengths(tmp_path):
    cfg = small_config()
    cfg.train.batch_size = 2
    trained = train(cfg, sine_demos(n=5), tmp_path, epochs=3, progress=False)
    assert len(set(trained.sequence_lengths)) > 1
    assert trained.data.shape[1] == max(trained.sequence_lengths)


def test_truncated_and_foreign_checkpoints_give_clear_errors(tmp_path):
    trained = build_model(small_config(), sine_demos())
    path = save_checkpoint(trained, tmp_path / "model.pt")
    blob = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="cut.pt.*truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pvrnn_ros checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pt"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_ctrl_c_saves_then_resume_finishes(tmp_path):
    data = tmp_path / "data"
    for demo in sine_demos():
        write_csv(data / f"{demo.name}.csv", demo.times, demo.positions, demo.joint_names)
    cfg = small_config()
    cfg.train.checkpoint_every = 100000  # only the interrupt may save
    cfg.save(tmp_path / "c.yaml")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "pvrnn_ros.cli", "train", "--data", str(data), "--config", str(tmp_path / "c.yaml"),
           "--out", str(out), "--epochs", "100000", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # wait until the epoch loop (and its Ctrl-C handler) has started, then some epochs
        seen = []
        while True:
            line = proc.stdout.readline()
            seen.append(line)
            if not line or line.startswith("training: epoch"):
                break
        time.sleep(2.0)
        assert proc.poll() is None, "".join(seen) + proc.stdout.read()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    saved = load_checkpoint(out / "model.pt")
    assert 0 < saved.epoch < 100000
    target = saved.epoch + 3
    res = subprocess.run(cmd[:-3] + ["--epochs", str(target), "--resume", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert load_checkpoint(out / "model.pt").epoch == target
    os.remove(out / "model.pt")
