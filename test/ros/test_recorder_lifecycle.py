"""recorder_node as a managed node: records only while active, deactivate closes the bag with every
message received while active, a second activation opens the next episode; /diagnostics counts
messages written and dropped per topic; live parameters; shutdown ends the process."""
from __future__ import annotations

import time

from .clients import latest_status, set_parameter, trigger


def _count_messages(episode) -> int:
    from rosbags.highlevel import AnyReader

    with AnyReader([episode]) as reader:
        return sum(1 for _ in reader.messages())


def test_recorder_lifecycle_closes_bags_on_deactivate(ros, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String

    from pvrnn_ros.ros.lifecycle import LifecycleClient

    procs, probe, _ = ros
    out = tmp_path / "bags"
    probe.subscribe(DiagnosticArray, "/diagnostics")
    pub = probe.publisher(String, "/numbers", depth=500)
    rec = procs.start("recorder_node", "autostart:=false", "topics:=['/numbers']", f"output_dir:={out}")
    life = LifecycleClient(probe.node, "recorder_node")
    assert life.wait(30) and life.state() == "unconfigured"
    assert life.change("activate") is False  # out of order
    ok, reason = set_parameter(probe, "recorder_node", "storage", "zip")
    assert not ok and "'zip'" in reason and "mcap, sqlite3" in reason
    assert life.change("configure") is True and life.state() == "inactive"
    assert trigger(probe, "/recorder_node/start")[1].startswith("recorder_node is inactive")
    assert not out.exists() or not any(out.iterdir())  # nothing opened while inactive

    assert life.change("activate") is True
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 20, "the recorder to subscribe")
    time.sleep(0.3)  # let the reliable match settle on both sides
    for i in range(300):
        pub.publish(String(data=str(i)))
    time.sleep(0.2)
    assert life.change("deactivate") is True  # closes the bag: metadata.yaml written, all 300 in it
    assert (out / "episode_000" / "metadata.yaml").is_file()
    assert _count_messages(out / "episode_000") == 300
    t0 = time.monotonic()
    probe.wait_for(lambda: latest_status(probe, "recorder_node: recording", t0) is not None, 5,
                   "recorder diagnostics")
    level, _, values = latest_status(probe, "recorder_node: recording", t0)[1:]
    assert level == "STALE" and values["/numbers written"] == "300" and values["/numbers dropped"] == "0"

    # inactive: unsubscribed, nothing recorded
    probe.wait_for(lambda: pub.get_subscription_count() == 0, 10, "the recorder to unsubscribe")
    for i in range(50):
        pub.publish(String(data="lost"))
    # live: episodes of 40 messages from now on
    assert set_parameter(probe, "recorder_node", "max_messages", 40) == (True, "")
    ok, reason = set_parameter(probe, "recorder_node", "output_dir", str(tmp_path / "elsewhere"))
    assert not ok and "needs a reconfigure" in reason
    assert life.change("activate") is True
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 20, "the recorder to subscribe again")
    time.sleep(0.3)
    t1 = time.monotonic()
    probe.wait_for(lambda: (s := latest_status(probe, "recorder_node: recording", t1)) is not None
                   and s[1] == "OK", 5, "recording OK")
    for i in range(100):
        pub.publish(String(data=str(i)))
        time.sleep(0.002)
    time.sleep(0.3)
    assert life.change("shutdown") is True
    assert rec.wait(15) == 0, procs.log("recorder_node")
    episodes = sorted(p for p in out.iterdir() if p.name.startswith("episode_"))
    counts = [_count_messages(p) for p in episodes]
    assert counts[0] == 300 and counts[1:3] == [40, 40] and sum(counts[1:]) == 100, counts
