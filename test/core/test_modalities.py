"""Modalities beside the joints: reading (CSV, npz, bags, segments sidecars), masks, training,
checkpoints old and new, masked ER and recognition, the recognition file format, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pvrnn_ros.core.checkpoint import load_checkpoint, save_checkpoint
from pvrnn_ros.core.config import Config, ConfigError, ERConfig, LayerConfig
from pvrnn_ros.core.data import load_demonstrations, read_rosbag, resample, write_csv
from pvrnn_ros.core.er import ErrorRegression
from pvrnn_ros.core.modalities import ModalityError
from pvrnn_ros.core.recognition import score
from pvrnn_ros.core.train import Trainer, build_model

MODS = [{"name": "end_effector"}, {"name": "task", "source": "segments", "weight": 2.0}]
CLASSES = ["rest", "wave", "reach"]


def _config(mods=MODS, **er) -> Config:
    cfg = Config.from_dict({"data": {"modalities": mods}})
    cfg.model.layers = [LayerConfig(d=12, z=2, tau=2.0, w=0.01), LayerConfig(d=6, z=1, tau=6.0, w=0.01)]
    cfg.train.cpu_threads = 1
    cfg.er = ERConfig(window=5, iterations=3, first_iterations=5, samples=0, **er)
    return cfg.validate()


def _episode(i: int, T: int = 40, rate: float = 10.0):
    """Two joints whose pattern depends on the active class, a 3-D 'end effector' and segments."""
    t = np.arange(T) / rate
    switches = [0.0, 1.3 + 0.2 * i, 2.6]
    labels = [CLASSES[(i + k) % 3] for k in range(3)]
    cls = np.searchsorted(switches, t, side="right") - 1
    joints = np.stack([np.sin(t * (1 + cls)), 0.5 * cls + 0.1 * np.cos(3 * t)], 1)
    ee = np.stack([np.cos(joints[:, 0]), np.sin(joints[:, 0]), joints[:, 1]], 1)
    segments = [{"start_time": s, "primitive": lab} for s, lab in zip(switches, labels)]
    return t, joints, ee, segments


def _write_csvs(tmp_path, n=3, drop_ee=()):
    for i in range(n):
        t, joints, ee, segments = _episode(i)
        names = ["shoulder", "elbow"]
        if i in drop_ee:
            write_csv(tmp_path / f"ep{i}.csv", t, joints, names)
        else:
            ee = ee.copy()
            ee[5, 1] = np.nan  # one missing cell: not observed there
            write_csv(tmp_path / f"ep{i}.csv", t, np.concatenate([joints, ee], 1),
                      names + ["end_effector.x", "end_effector.y", "end_effector.z"])
        (tmp_path / f"ep{i}.segments.json").write_text(json.dumps(segments))
    return tmp_path


def test_config_validates_modalities():
    with pytest.raises(ConfigError, match=r"data.modalities\[0\].source = 'bins'"):
        Config.from_dict({"data": {"modalities": [{"name": "task", "source": "bins"}]}})
    with pytest.raises(ConfigError, match="unknown config key data.modalities.0..kind|unknown config key"):
        Config.from_dict({"data": {"modalities": [{"name": "task", "kind": "categorical"}]}})
    with pytest.raises(ConfigError, match="used once"):
        Config.from_dict({"data": {"modalities": [{"name": "a"}, {"name": "a"}]}})
    with pytest.raises(ConfigError, match="other than 'joints'"):
        Config.from_dict({"data": {"modalities": [{"name": "joints"}]}})


def test_csv_columns_and_segments_roundtrip(tmp_path):
    cfg = _config()
    demos = load_demonstrations(_write_csvs(tmp_path), modalities=cfg.data.modalities)
    d = demos[0]
    assert d.joint_names == ["shoulder", "elbow"]  # modality columns are not joints
    assert d.extra["end_effector"].components == ["x", "y", "z"]
    _, joints, ee, _ = _episode(0)
    np.testing.assert_allclose(d.extra["end_effector"].values[:5], ee[:5], atol=1e-5)
    assert np.isnan(d.extra["end_effector"].values[5, 1])
    r = resample(d, 5.0)  # categorical: the label in force at each grid time
    assert r.extra["task"].labels[:3] == ["rest", "rest", "rest"]
    assert r.extra["task"].labels[-1] == "reach" and len(r.extra["task"].labels) == len(r)


def test_npz_arrays_roundtrip(tmp_path):
    t, joints, ee, segments = _episode(1)
    np.savez(tmp_path / "a.npz", positions=joints, joint_names=np.array(["s", "e"]), times=t,
             **{"end_effector.x": ee[:, 0], "end_effector.y": ee[:, 1], "end_effector.z": ee[:, 2]})
    (tmp_path / "a.segments.json").write_text(json.dumps(segments))
    d = load_demonstrations(tmp_path, modalities=_config().data.modalities)[0]
    np.testing.assert_allclose(d.extra["end_effector"].values, ee)
    assert d.extra["task"].labels == [s["primitive"] for s in segments]
    np.savez(tmp_path / "a.npz", positions=joints, joint_names=np.array(["s", "e"]), times=t,
             **{"end_effector.x": ee[:10, 0]})
    with pytest.raises(ValueError, match="end_effector.x' has 10 values, expected 40"):
        load_demonstrations(tmp_path, modalities=_config().data.modalities)


def test_bag_topics_matched_by_time(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    JointState, Header, Time = ts.types["sensor_msgs/msg/JointState"], ts.types["std_msgs/msg/Header"], \
        ts.types["builtin_interfaces/msg/Time"]
    PointStamped, Point = ts.types["geometry_msgs/msg/PointStamped"], ts.types["geometry_msgs/msg/Point"]
    String = ts.types["std_msgs/msg/String"]
    path = tmp_path / "episode_000"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        cj = w.add_connection("/teacher/joint_states", JointState.__msgtype__, typestore=ts)
        ce = w.add_connection("/teacher/end_effector", PointStamped.__msgtype__, typestore=ts)
        cl = w.add_connection("/learner/end_effector", PointStamped.__msgtype__, typestore=ts)
        cp = w.add_connection("/teacher/primitive", String.__msgtype__, typestore=ts)
        for k in range(30):
            t = 1.0 + k * 0.05
            ns = int(t * 1e9)
            hdr = Header(stamp=Time(sec=int(t), nanosec=int(round((t % 1) * 1e9))), frame_id="")
            w.write(cj, ns, ts.serialize_cdr(JointState(header=hdr, name=["a", "b"], position=np.array([t, -t]),
                                                        velocity=np.zeros(0), effort=np.zeros(0)),
                                             JointState.__msgtype__))
            w.write(ce, ns, ts.serialize_cdr(PointStamped(header=hdr, point=Point(x=t, y=2 * t, z=0.5)),
                                             PointStamped.__msgtype__))
            w.write(cl, ns, ts.serialize_cdr(PointStamped(header=hdr, point=Point(x=-9, y=-9, z=-9)),
                                             PointStamped.__msgtype__))
            if k in (0, 12):
                w.write(cp, ns, ts.serialize_cdr(String(data="rest" if k == 0 else "wave"), String.__msgtype__))
    cfg = _config()
    d = read_rosbag(path, "/teacher/joint_states", cfg.data.modalities)
    ee = d.extra["end_effector"]  # the teacher's, not the learner's
    np.testing.assert_allclose(ee.values[:, 0], np.interp(ee.times, d.times, d.positions[:, 0]), atol=1e-6)
    r = resample(d, 10.0)
    assert r.extra["task"].labels[0] == "rest" and r.extra["task"].labels[-1] == "wave"
    i = r.extra["task"].labels.index("wave")
    assert abs(r.times[i] - 0.6) < 1e-6  # the class in force from its receive time on
    np.testing.assert_allclose(r.extra["end_effector"].values[:, 1], 2 * (r.positions[:, 0]), atol=1e-6)


def test_missing_modality_is_masked_missing_everywhere_is_an_error(tmp_path):
    cfg = _config()
    demos = load_demonstrations(_write_csvs(tmp_path, drop_ee=(1,)), modalities=cfg.data.modalities)
    trained = build_model(cfg, demos)
    sl = trained.layout.slice("end_effector")
    assert trained.observed[1, :, sl].sum() == 0 and trained.observed[0, :, sl].sum() > 0
    assert trained.observed[0, 5, sl.start + 1] == 0  # the empty cell
    for p in tmp_path.glob("*.csv"):
        t, joints, _, _ = _episode(0)
        write_csv(p, t, joints, ["shoulder", "elbow"])
    with pytest.raises(ValueError, match="data.modalities 'end_effector': no demonstration has it"):
        build_model(cfg, load_demonstrations(tmp_path, modalities=cfg.data.modalities))


def test_modality_of_different_width_is_an_error(tmp_path):
    _write_csvs(tmp_path, n=2)
    t, joints, ee, _ = _episode(1)
    write_csv(tmp_path / "ep1.csv", t, np.concatenate([joints, ee[:, :2]], 1),
              ["shoulder", "elbow", "end_effector.x", "end_effector.y"])
    cfg = _config()
    with pytest.raises(ValueError, match=r"ep1.csv: modality 'end_effector' has components \['x', 'y'\]"):
        build_model(cfg, load_demonstrations(tmp_path, modalities=cfg.data.modalities))


@pytest.fixture(scope="module")
def trained_with_modalities(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mods")
    cfg = _config()
    trained = build_model(cfg, load_demonstrations(_write_csvs(tmp), modalities=cfg.data.modalities))
    trainer = Trainer(trained)
    for _ in range(20):
        trainer.epoch()
    return trained


def test_layout_weights_and_checkpoint_roundtrip(trained_with_modalities, tmp_path):
    tr = trained_with_modalities
    lay = tr.layout
    assert lay.n_dims == 2 + 3 + 1 and lay.names == ["end_effector", "task"]
    assert lay.get("task").components == sorted(CLASSES)
    w = lay.dim_weights()  # weight * D / size: joints 6/2, end effector 6/3, task 2 * 6/1
    np.testing.assert_allclose(w, [3, 3, 2, 2, 2, 12])
    assert tr.model.coding.out_dim == 2 + 3 + 3
    save_checkpoint(tr, tmp_path / "model.pt")
    back = load_checkpoint(tmp_path / "model.pt")
    assert back.layout.state_dict() == lay.state_dict()
    np.testing.assert_allclose(back.layout.get("end_effector").normalizer.lo, lay.get("end_effector").normalizer.lo)
    assert torch.equal(back.observed, tr.observed)


def test_checkpoint_from_before_modalities_still_loads(tmp_path):
    cfg = _config(mods=[])
    from test.core.conftest import sine_demos

    tr = build_model(cfg, sine_demos(n=2))
    state = tr.state_dict()
    for key in ("modalities", "observed"):  # what a checkpoint written before this change lacks
        del state[key]
    del state["config"]["data"]["modalities"], state["config"]["data"]["joint_weight"]
    torch.save(state, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.layout.modalities == [] and old.layout.n_dims == 3 and old.observed is None
    tick = None
    er = ErrorRegression(old)
    for x in tr.data[0, :6].numpy():
        tick = er.step(tr.normalizer.denormalize(x))
    assert tick.prediction.shape == (cfg.er.horizon, 3) and tick.modalities == {}


def test_masked_er_reports_every_modality(trained_with_modalities):
    tr = trained_with_modalities
    for backend in ("reference", "cpu"):
        er = ErrorRegression(tr, ERConfig(window=5, iterations=3, first_iterations=5, samples=4, backend=backend))
        _, joints, ee, _ = _episode(0)
        for t in range(8):
            tick = er.step(joints[t], {"end_effector": ee[t]} if t % 2 else None)
        task = tick.modalities["task"]
        assert not task.observed and task.current.shape == (3,) and task.current.sum() == pytest.approx(1.0)
        assert task.prediction.shape == (tr.config.er.horizon, 3)
        assert task.top_class in CLASSES and set(tick.recognition) == {"task"}
        eem = tick.modalities["end_effector"]
        assert eem.observed and eem.current.shape == (3,) and eem.prediction.shape == (tr.config.er.horizon, 3)
        assert np.all(np.isfinite(eem.prediction))


def test_er_rejects_bad_modality_input(trained_with_modalities):
    er = ErrorRegression(trained_with_modalities)
    with pytest.raises(ValueError, match="modality 'gripper', but the model learned joints, end_effector, task"):
        er.step([0.1, 0.2], {"gripper": [1.0]})
    with pytest.raises(ModalityError, match="class 'dance' was never seen in training"):
        er.step([0.1, 0.2], {"task": "dance"})
    with pytest.raises(ModalityError, match="has 2 values per step, expected 3"):
        er.step([0.1, 0.2], {"end_effector": [1.0, 2.0]})
    assert er.window_length == 0  # nothing was appended by the bad calls
    er.step([0.1, 0.2], {"task": "wave"})
    assert er.window_length == 1


def test_recognition_scores():
    rate = 10.0
    truth = np.array([0] * 10 + [1] * 10 + [2] * 10)
    probs = np.zeros((30, 3))
    top = truth.copy()
    top[10:13] = 0  # 0.3 s late after the first switch
    top[20:30] = 1  # the second switch is never recognised
    probs[np.arange(30), top] = 1.0
    probs[:2] = np.nan  # not recognised yet
    s = score(probs, truth, rate)
    assert s["steps"] == 28 and s["switches"] == 2 and s["switches_missed"] == 1
    assert s["switch_delay_median_s"] == pytest.approx(0.3)
    assert s["frame_accuracy"] == pytest.approx(15 / 28)
    # leaving out 0.5 s after each switch: steps 2-9, 15-19 (all right) and 25-29 (wrong)
    assert s["settled_accuracy"] == pytest.approx(13 / 18)


def test_eval_writes_recognition_files_and_rejects_unseen_classes(trained_with_modalities, tmp_path):
    from pvrnn_ros.core.evaluate import evaluate

    tr = trained_with_modalities
    held = _write_csvs(tmp_path / "held", n=2) if (tmp_path / "held").mkdir() is None else None
    demos = load_demonstrations(held, joint_names=tr.joint_names, modalities=tr.config.data.modalities)
    from pvrnn_ros.core.baselines import BaselineSettings

    small = BaselineSettings(hidden_sizes=(16,), max_epochs=80, patience=20)
    metrics = evaluate(tr, demos, tmp_path / "ev", methods=("er", "hold"), progress=False, plots=True,
                       baselines=small)
    rec = np.load(tmp_path / "ev" / "recognition" / "ep0.npz")
    T = len(resample(demos[0], tr.rate_hz))
    assert rec["times"].shape == (T,) and rec["probabilities"].shape == (T, 3)
    assert list(rec["classes"]) == sorted(CLASSES)
    np.testing.assert_allclose(np.diff(rec["times"]), 1 / tr.rate_hz)
    first = np.flatnonzero(np.all(np.isfinite(rec["probabilities"]), 1))[0]
    assert np.all(np.isnan(rec["probabilities"][:first]))
    np.testing.assert_allclose(rec["probabilities"][first:].sum(1), 1.0, rtol=1e-6)
    r = metrics["recognition"]["task"]
    assert 0 <= r["er"]["frame_accuracy"] <= 1 and r["gru_training"]["stopped"]
    assert "Recognition of `task`" in (tmp_path / "ev" / "metrics.md").read_text()
    assert (tmp_path / "ev" / "recognition_confusion_task.png").stat().st_size > 0
    (held / "ep1.segments.json").write_text(json.dumps([{"start_time": 0.0, "primitive": "dance"}]))
    demos = load_demonstrations(held, joint_names=tr.joint_names, modalities=tr.config.data.modalities)
    with pytest.raises(ModalityError, match="class 'dance'.*never saw in training"):
        evaluate(tr, demos, tmp_path / "ev2", methods=("er",), progress=False, plots=False, baselines=small)
    assert (tmp_path / "ev" / "recognition" / "ep0.npz").exists()  # the earlier results are untouched


def test_recognition_lag_reads_an_earlier_step(trained_with_modalities):
    with pytest.raises(ConfigError, match="er.recognition_lag = -1"):
        ERConfig(recognition_lag=-1).validate()
    _, joints, _, _ = _episode(2)
    current = {}
    for lag in (0, 1, 50):  # 50: longer than the window, clamped to its oldest step
        er = ErrorRegression(trained_with_modalities, ERConfig(window=5, iterations=3, first_iterations=5,
                                                               samples=0, backend="reference", recognition_lag=lag))
        for t in range(9):
            tick = er.step(joints[t])
        current[lag] = tick.modalities["task"].current
        assert current[lag].sum() == pytest.approx(1.0)
    # the same ER run (deterministic), read at different steps of the window
    assert not np.allclose(current[0], current[1]) and not np.allclose(current[1], current[50])
