"""recorder_node: every message published before SIGINT is in the bag (read with the `mcap` package)."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest


def _read_mcap(episode: Path) -> list:
    from mcap.reader import make_reader

    files = sorted(episode.glob("*.mcap"))
    assert len(files) == 1, f"expected one .mcap in {episode}, found {files}"
    with files[0].open("rb") as f:
        return list(make_reader(f).iter_messages())


def _publish_numbers(ros, out: Path, n: int, kill):
    from std_msgs.msg import String

    procs, probe, _ = ros
    pub = probe.publisher(String, "/numbers", depth=n)
    rec = procs.start("recorder_node", "topics:=['/numbers']", f"output_dir:={out}", "flush_period:=0.2")
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "the recorder to subscribe")
    time.sleep(0.3)  # let the reliable match settle on both sides
    for i in range(n):
        pub.publish(String(data=str(i)))
    if kill == signal.SIGKILL:
        time.sleep(1.0)  # a crash after the data arrived and a flush period passed
    rc = procs.stop(rec, kill)
    return rc, procs


def test_recorder_keeps_every_message_on_sigint(ros, tmp_path):
    n = 400
    out = tmp_path / "bags"
    rc, procs = _publish_numbers(ros, out, n, signal.SIGINT)
    assert rc == 0, procs.log("recorder_node")
    episode = out / "episode_000"
    assert (episode / "metadata.yaml").is_file()
    msgs = _read_mcap(episode)
    assert len(msgs) == n
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    values = [int(deserialize_message(m[2].data, String).data) for m in msgs]
    assert sorted(values) == list(range(n))
    assert {m[1].topic for m in msgs} == {"/numbers"}
    assert msgs[0][0].name == "std_msgs/msg/String"  # schema, so Foxglove/ros2 bag can decode it


def test_recorder_sigkill_then_repair(ros, tmp_path):
    from pvrnn_ros.ros.bag_repair import needs_repair, repair_tree

    out = tmp_path / "bags"
    rc, procs = _publish_numbers(ros, out, 150, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    episode = out / "episode_000"
    assert needs_repair(episode)
    reports = repair_tree(out)
    assert reports and reports[0]["messages"] == 150
    assert len(_read_mcap(episode)) == 150
    from rosbags.highlevel import AnyReader

    with AnyReader([episode]) as reader:
        assert sum(1 for _ in reader.messages()) == 150


@pytest.mark.parametrize("storage", ["sqlite3"])
def test_recorder_episodes_and_sqlite(ros, tmp_path, storage):
    """Episodes split by max_messages; SIGTERM closes the open one; sqlite3 storage readable."""
    from rosbags.highlevel import AnyReader
    from std_msgs.msg import String

    procs, probe, _ = ros
    out = tmp_path / "bags"
    pub = probe.publisher(String, "/numbers", depth=100)
    rec = procs.start("recorder_node", "topics:=['/numbers']", f"output_dir:={out}", f"storage:={storage}",
                      "max_messages:=40", "episode_count:=0")
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "the recorder to subscribe")
    time.sleep(0.3)
    for i in range(100):
        pub.publish(String(data=str(i)))
        time.sleep(0.002)
    time.sleep(0.5)
    assert procs.stop(rec, signal.SIGTERM) == 0
    episodes = sorted(p for p in out.iterdir() if p.name.startswith("episode_"))
    counts = []
    for ep in episodes:
        with AnyReader([ep]) as reader:
            counts.append(sum(1 for _ in reader.messages()))
    assert sum(counts) == 100 and counts[:2] == [40, 40], counts
