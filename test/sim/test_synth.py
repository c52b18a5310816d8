"""synthesize(): CSV + segments sidecar through the physics; the `pvrnn-ros synth` verb."""
import csv
import json

import numpy as np
import pytest

import pvrnn_ros.sim  # noqa: F401  (first: picks a headless MUJOCO_GL before mujoco loads)

pytest.importorskip("mujoco")

from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, default_limits  # noqa: E402
from pvrnn_ros.sim.synth import synthesize  # noqa: E402

EE = ["end_effector.x", "end_effector.y", "end_effector.z"]


def _read(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array(rows[1:], dtype=float)


def test_synth_writes_readable_csv_and_segments(tmp_path):
    paths = synthesize(tmp_path, episodes=2, duration_s=6.0, seed=0, progress=False)
    assert [p.name for p in paths] == ["episode_000.csv", "episode_001.csv"]
    header, data = _read(paths[0])
    assert header == ["time", *DEFAULT_JOINT_NAMES, *EE]
    assert data.shape == (300, 11)
    np.testing.assert_allclose(data[:, 0], np.arange(300) * 0.02, atol=1e-9)
    lo, hi = default_limits()
    q = data[:, 1:8]
    assert np.all(q >= lo - 0.02) and np.all(q <= hi + 0.02)
    assert np.all(q.max(0) - q.min(0) > 0.01)  # the arm moved
    # ~6 significant digits
    first = open(paths[0]).read().splitlines()[150].split(",")
    assert all(len(v.lstrip("-").replace(".", "")) <= 8 for v in first[1:])
    segs = json.loads((tmp_path / "episode_000.segments.json").read_text())
    assert segs[0] == {"start_time": 0.0, "primitive": "rest"}
    assert all(set(s) == {"start_time", "primitive"} for s in segs)
    starts = [s["start_time"] for s in segs]
    assert starts == sorted(starts) and starts[-1] < 6.0 and len(segs) >= 2


def test_synth_records_measured_positions_with_tracking_lag(tmp_path):
    from pvrnn_ros.sim.primitives import Demonstrator
    from pvrnn_ros.sim.synth import episode_seeds

    synthesize(tmp_path, episodes=1, duration_s=8.0, seed=3, progress=False)
    _, data = _read(tmp_path / "episode_000.csv")
    demo = Demonstrator(seed=episode_seeds(3, 1)[0])
    ref = np.stack([demo.sample(t) for t in data[:, 0]])
    err = np.abs(data[:, 1:8] - ref)
    assert err.max() > 1e-3  # real dynamics: not the kinematic reference ...
    assert err.mean() < 0.05  # ... but tracking it closely


def test_same_seed_identical_different_seed_differs(tmp_path):
    a = synthesize(tmp_path / "a", episodes=2, duration_s=4.0, seed=7, progress=False)
    b = synthesize(tmp_path / "b", episodes=2, duration_s=4.0, seed=7, progress=False)
    c = synthesize(tmp_path / "c", episodes=2, duration_s=4.0, seed=8, progress=False)
    assert a[0].read_bytes() == b[0].read_bytes() and a[1].read_bytes() == b[1].read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes()
    assert a[0].read_bytes() != a[1].read_bytes()  # episodes differ from each other


def test_teacher_learner_scene_strips_prefix_and_rate(tmp_path):
    paths = synthesize(tmp_path, episodes=1, duration_s=3.0, seed=0, scene="teacher_learner",
                       rate_hz=25, progress=False)
    header, data = _read(paths[0])
    assert header == ["time", *DEFAULT_JOINT_NAMES, *EE]
    assert data.shape == (75, 11)
    np.testing.assert_allclose(np.diff(data[:, 0]), 0.04, atol=1e-9)
    # the teacher arm in the two-arm scene behaves like the single arm at the same seed
    ref = synthesize(tmp_path / "one", episodes=1, duration_s=3.0, seed=0, rate_hz=25, progress=False)
    np.testing.assert_allclose(_read(ref[0])[1][:, :8], data[:, :8], atol=1e-5)
    # the teacher stands at y = +0.5 m: its end effector too
    np.testing.assert_allclose(data[:, 9] - _read(ref[0])[1][:, 9], 0.5, atol=1e-4)


def test_synth_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown scene 'arm9'"):
        synthesize(tmp_path, 1, 1.0, 0, scene="arm9", progress=False)
    with pytest.raises(ValueError, match="episodes"):
        synthesize(tmp_path, 0, 1.0, 0, progress=False)
    with pytest.raises(ValueError, match="duration_s"):
        synthesize(tmp_path, 1, -1.0, 0, progress=False)


def test_cli_synth_verb(tmp_path, capsys):
    from pvrnn_ros.cli import main

    rc = main(["synth", "--episodes", "2", "--out", str(tmp_path), "--duration", "2", "--seed", "1",
               "--no-progress"])
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "episode_000.csv", "episode_000.segments.json", "episode_001.csv", "episode_001.segments.json",
        "robot_description.urdf"]
    assert "wrote 2 episodes" in capsys.readouterr().out
    assert main(["synth", "--episodes", "0", "--out", str(tmp_path), "--no-progress"]) == 2


def test_bundled_examples_are_present_and_consistent():
    from pathlib import Path

    ex = Path(__file__).resolve().parents[2] / "pvrnn_ros" / "examples" / "arm7"
    csvs = sorted(ex.glob("episode_*.csv"))
    assert len(csvs) == 12
    assert sum(p.stat().st_size for p in ex.iterdir()) < 1_000_000
    header, data = _read(csvs[0])
    assert header == ["time", *DEFAULT_JOINT_NAMES, *EE] and data.shape == (800, 11)
    assert all((p.with_suffix("").with_suffix(".segments.json")).exists() for p in csvs)


def test_bundled_examples_match_current_physics(tmp_path):
    """scripts/make_examples.py output is up to date (episode 0 regenerated here)."""
    from pathlib import Path

    ex = Path(__file__).resolve().parents[2] / "pvrnn_ros" / "examples" / "arm7"
    new = synthesize(tmp_path, episodes=1, duration_s=16.0, seed=0, rate_hz=50.0, progress=False)
    np.testing.assert_allclose(_read(new[0])[1], _read(ex / "episode_000.csv")[1], atol=1e-4)
    assert (json.loads((tmp_path / "episode_000.segments.json").read_text())
            == json.loads((ex / "episode_000.segments.json").read_text()))


def test_end_effector_columns_are_the_site_position_of_the_recorded_joints(tmp_path):
    """Each row's end_effector.x/y/z is where MuJoCo puts the arm's end_effector site for that row's joints."""
    import mujoco

    from pvrnn_ros.sim.arm_sim import ArmSim
    from pvrnn_ros.sim.scenes import scene_path

    paths = synthesize(tmp_path, episodes=1, duration_s=4.0, seed=5, progress=False)
    header, data = _read(paths[0])
    sim = ArmSim(scene_path("arm7"))
    m, d = sim.model, sim.data
    site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "end_effector")
    qadr = [m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in DEFAULT_JOINT_NAMES]
    assert np.ptp(data[:, 8:], axis=0).max() > 0.05  # the hand moved by centimetres
    for row in data[::17]:
        d.qpos[qadr] = row[1:8]
        mujoco.mj_kinematics(m, d)
        np.testing.assert_allclose(row[8:11], d.site_xpos[site], atol=2e-5)


def test_synth_writes_a_robot_description_with_joint_types(tmp_path):
    from pvrnn_ros.core.data import joint_types_under, select_joints

    synthesize(tmp_path, episodes=1, duration_s=1.0, seed=0, progress=False)
    types = joint_types_under(tmp_path)
    assert types == {n: "revolute" for n in DEFAULT_JOINT_NAMES}
    chosen = select_joints(["time_offset.x", *DEFAULT_JOINT_NAMES, *EE], None, types)
    assert chosen.names == list(DEFAULT_JOINT_NAMES) and set(chosen.units) == {"rad"}
