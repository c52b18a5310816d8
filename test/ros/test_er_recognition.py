"""er_node over DDS with a model that learned a task modality and an end effector beside the
joints: recognition on pvrnn/recognition (class names, probabilities, the observation's stamp) and
predicted end-effector points on pvrnn/prediction/end_effector."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pvrnn_ros.sim.primitives import DEFAULT_JOINT_NAMES, kinematic_episode

NAMES = list(DEFAULT_JOINT_NAMES)


@pytest.fixture(scope="module")
def task_model(tmp_path_factory):
    import torch

    from pvrnn_ros.core.config import Config, LayerConfig
    from pvrnn_ros.core.data import load_demonstrations, write_csv
    from pvrnn_ros.core.train import train

    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("task_data")
    for s in range(2):
        t, q, segments = kinematic_episode(6.0, 10.0, s)
        ee = np.stack([np.cos(q[:, 0]), np.sin(q[:, 0]), q[:, 1]], 1)  # any 3-D signal will do here
        write_csv(data / f"ep{s}.csv", t, np.concatenate([q, ee], 1),
                  NAMES + ["end_effector.x", "end_effector.y", "end_effector.z"])
        (data / f"ep{s}.segments.json").write_text(json.dumps([{"start_time": a, "primitive": n} for a, n in segments]))
    cfg = Config.from_dict({"data": {"modalities": [{"name": "end_effector"},
                                                    {"name": "task", "source": "segments", "weight": 0.005}]}})
    cfg.model.layers = [LayerConfig(d=16, z=2, tau=2.0), LayerConfig(d=8, z=1, tau=4.0)]
    cfg.er.window, cfg.er.iterations, cfg.er.first_iterations = 8, 5, 10
    out = tmp_path_factory.mktemp("task_model")
    trained = train(cfg, load_demonstrations(data, modalities=cfg.data.modalities), out, epochs=30, progress=False)
    return out / "model.pt", trained.layout.get("task").components


def test_er_node_publishes_recognition_and_end_effector(ros, task_model):
    from geometry_msgs.msg import PoseArray
    from sensor_msgs.msg import JointState

    model, classes = task_model
    procs, probe, _ = ros
    probe.subscribe(JointState, "pvrnn/recognition")
    probe.subscribe(PoseArray, "pvrnn/prediction/end_effector")
    pub = probe.publisher(JointState, "joint_states")
    procs.start("er_node", f"model_path:={model}", "mode:=observe")
    probe.wait_for(lambda: pub.get_subscription_count() > 0, 30, "er_node to subscribe")
    _, q, _ = kinematic_episode(20.0, 50.0, 4)
    stamps = set()
    import time

    k = 0
    deadline = time.monotonic() + 40
    while len(probe.messages("pvrnn/recognition")) < 5 and time.monotonic() < deadline:
        m = JointState()
        t = 1000.0 + k * 0.02  # stamps of our own: the answers must be in this time base
        m.header.stamp.sec, m.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
        m.name = NAMES
        m.position = [float(v) for v in q[k % len(q)]]
        pub.publish(m)
        stamps.add(round(t, 3))
        k += 1
        time.sleep(0.02)
    recs = [m for _, m in probe.messages("pvrnn/recognition")]
    assert len(recs) >= 5, procs.log("er_node")
    r = recs[-1]
    assert list(r.name) == list(classes) and r.header.frame_id == "recognition/task"
    p = np.asarray(r.position)
    assert p.shape == (len(classes),) and np.all(p >= 0) and abs(p.sum() - 1) < 1e-6
    stamp = round(r.header.stamp.sec + 1e-9 * r.header.stamp.nanosec, 3)
    # the observation it answers, in the input's time base: the node queries its resampler at the
    # newest input stamp plus the wall time since it arrived, so the stamp lies within about one
    # input period of a published one (not on the node's clock, which reads ~1.7e9 s)
    assert min(stamps) <= stamp <= max(stamps) + 0.05, (stamp, min(stamps), max(stamps))
    assert min(abs(stamp - s) for s in stamps) < 0.05
    answered = [round(m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec, 3) for m in recs]
    assert all(b > a for a, b in zip(answered, answered[1:])), answered  # one answer per tick, in order
    probe.wait_for(lambda: len(probe.messages("pvrnn/prediction/end_effector")) > 0, 10, "end-effector prediction")
    ee = probe.messages("pvrnn/prediction/end_effector")[-1][1]
    assert len(ee.poses) == 10 and all(np.isfinite(pz.position.x) for pz in ee.poses)
