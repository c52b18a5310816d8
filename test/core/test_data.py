import numpy as np
import pytest

from pvrnn_ros.core.data import (DataError, example_data_dir, load_demonstrations, read_csv, read_rosbag, resample,
                                 write_csv)


def _csv(path, text):
    path.write_text(text)
    return path


def test_csv_roundtrip_and_resampling(tmp_path):
    t = np.arange(0, 2.0001, 0.02)
    pos = np.stack([np.sin(t), np.cos(t)], 1)
    write_csv(tmp_path / "a.csv", t, pos, ["b", "a"])
    demo = read_csv(tmp_path / "a.csv")
    assert demo.joint_names == ["b", "a"]
    r = resample(demo, 10.0)
    assert len(r) == 21 and np.allclose(np.diff(r.times), 0.1)
    assert np.allclose(r.positions[:, 0], np.sin(r.times), atol=1e-3)


def test_joints_are_matched_by_name_not_column(tmp_path):
    _csv(tmp_path / "1.csv", "time,x,y\n0,1,2\n0.1,1,2\n")
    _csv(tmp_path / "2.csv", "y,time,x\n20,0,10\n20,0.1,10\n")
    demos = load_demonstrations(tmp_path)
    assert demos[1].joint_names == ["x", "y"]
    assert np.allclose(demos[1].positions[0], [10, 20])


def test_rate_needed_without_time_column(tmp_path):
    _csv(tmp_path / "a.csv", "x,y\n1,2\n3,4\n")
    with pytest.raises(DataError, match="no 'time' column"):
        read_csv(tmp_path / "a.csv")
    assert np.allclose(read_csv(tmp_path / "a.csv", rate_hz=4).times, [0, 0.25])


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("time,x\n0,1\n0.1,nan\n0.2,1\n", r"row 3 has NaN/inf for joints \['x'\]"),
        ("time,x\n0,1\n0.1,\n", r"row 3 has NaN"),
        ("time,x\n0,1\n0.1,2\n0.1,3\n", r"time does not increase at row 4"),
        ("time,x\n0,1\n0.1,2,5\n", r"row 3 has 3 values, expected 2"),
        ("time,x\n0,1\n0.1,abc\n", r"row 3 has a non-numeric value 'abc'"),
        ("time,x,x\n0,1,1\n", r"duplicate column names"),
        ("", r"empty"),
    ],
)
def test_malformed_csv_errors_name_file_row_and_problem(tmp_path, text, pattern):
    path = _csv(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=pattern) as err:
        read_csv(path)
    assert "bad.csv" in str(err.value)


def test_mismatched_and_missing_joints(tmp_path):
    _csv(tmp_path / "1.csv", "time,x,y\n0,1,2\n0.1,1,2\n")
    _csv(tmp_path / "2.csv", "time,x,z\n0,1,2\n0.1,1,2\n")
    with pytest.raises(DataError, match=r"2.csv: joint set differs.*missing \['y'\], extra \['z'\]"):
        load_demonstrations(tmp_path)
    with pytest.raises(DataError, match=r"2.csv: joints \['y'\] are missing"):
        load_demonstrations(tmp_path, joint_names=["x", "y"])
    # extra joints are ignored when the joint set is given (e.g. a trained model's)
    assert load_demonstrations(tmp_path, joint_names=["x"])[1].joint_names == ["x"]


def test_npz(tmp_path):
    np.savez(tmp_path / "a.npz", positions=np.zeros((5, 2)), joint_names=np.array(["p", "q"]), times=np.arange(5) * 0.1)
    assert load_demonstrations(tmp_path)[0].positions.shape == (5, 2)
    np.savez(tmp_path / "b.npz", positions=np.zeros((5, 2)))
    with pytest.raises(DataError, match="b.npz: missing array 'joint_names'"):
        load_demonstrations(tmp_path / "b.npz")


def _write_bag(path, storage, rows, names_per_msg, stamps):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    JointState = ts.types["sensor_msgs/msg/JointState"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection("/joint_states", JointState.__msgtype__, typestore=ts)
        for (vals, names, stamp) in zip(rows, names_per_msg, stamps):
            sec = int(stamp)
            msg = JointState(Header(Time(sec, int(round((stamp - sec) * 1e9))), "base"), list(names),
                             np.asarray(vals, dtype=np.float64), np.zeros(0), np.zeros(0))
            writer.write(conn, int(stamp * 1e9), ts.serialize_cdr(msg, JointState.__msgtype__))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_rosbag_jointstate_matched_by_name_and_resampled(tmp_path, storage):
    stamps = [10.0 + 0.02 * i for i in range(101)]
    rows, names = [], []
    for i, s in enumerate(stamps):
        a, b = np.sin(s), np.cos(s)
        if i % 2:  # joint order changes between messages
            rows.append([b, a, 7.0]), names.append(["b", "a", "extra"])
        else:
            rows.append([a, b]), names.append(["a", "b"])
    rows[5] = [np.nan, 0.0]  # a glitch: dropped
    _write_bag(tmp_path / "bag", storage, rows, names, stamps)
    with pytest.warns(UserWarning, match="dropped 1 incomplete or NaN"):
        demo = load_demonstrations(tmp_path / "bag", joint_names=["a", "b"])[0]
    r = resample(demo, 10.0)
    assert len(r) == 21
    assert np.allclose(r.positions[:, 0], np.sin(10.0 + r.times), atol=2e-3)
    assert np.allclose(r.positions[:, 1], np.cos(10.0 + r.times), atol=2e-3)


def test_corrupt_bag_is_a_clear_error(tmp_path):
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_text("not: [a bag")
    with pytest.raises(DataError, match="not a readable rosbag2"):
        read_rosbag(tmp_path / "bag")


def test_bundled_examples_load():
    demos = load_demonstrations(example_data_dir())
    assert len(demos) >= 8 and all(len(d) > 100 for d in demos)
