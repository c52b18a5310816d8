"""recorder_node: records topics to rosbag2 (MCAP or sqlite3) in episodes, via `rosbags`.

A managed (lifecycle) node: configure checks the parameters; activate subscribes and (with
`record_on_activate`) opens an episode; deactivate takes every message DDS already holds for it,
closes the episode (metadata.yaml written) and unsubscribes, so nothing received while active is
lost; `autostart` (default true) configures and activates at start-up. Parameters: the PARAMS
table below, or `python -m pvrnn_ros.ros.recorder_node --help`. Episodes go to
output_dir/episode_000, episode_001, ...

Control: services ~/start, ~/stop, ~/split (std_srvs/Trigger, when std_srvs is installed) and the
topic ~/control (std_msgs/String "start" | "stop" | "split"). Status: ~/episode (std_msgs/String,
"recording <dir>" / "stopped <dir> <n> messages"). /diagnostics: "recorder_node: recording", messages
written and dropped (received while no episode was open, or not writable) per topic.

Messages are taken serialized (raw CDR subscription) and written as they arrive; on SIGINT or
SIGTERM the open episode is closed (metadata.yaml written). After a SIGKILL run
`pvrnn_ros.ros.bag_repair.repair_bag(episode_dir)` to rebuild metadata.yaml.
"""
from __future__ import annotations

import threading
from pathlib import Path

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from .common import HAVE_STD_SRVS, Throttle, request_exit, run_node
from .conversions import message_class
from .diagnostics import OK, STALE, WARN, DiagnosticsUpdater
from .lifecycle import autostart, state_label
from .params import Param, ParamTable

NODE_NAME = "recorder_node"

PARAMS = ParamTable(NODE_NAME, [
    Param("autostart", True, "configure and activate (start recording) at start-up", read_only=True),
    Param("topics", ["teacher/joint_states"], "topics to record (types are discovered from the graph)"),
    Param("output_dir", "bags", "directory for episode_NNN bags"),
    Param("episode_duration", 0.0, "s per episode (node clock: sim time with use_sim_time), 0 = until stopped",
          low=0.0, live=True),
    Param("episode_count", 0, "stop recording after this many episodes, 0 = unlimited", low=0, live=True),
    Param("max_messages", 0, "end an episode after this many messages, 0 = unlimited", low=0, live=True),
    Param("storage", "mcap", "rosbag2 storage plugin", choices=("mcap", "sqlite3")),
    Param("record_on_activate", True, "start an episode when activated (false: wait for ~/start)"),
    Param("exit_when_done", True, "exit the process after episode_count episodes", live=True),
    Param("flush_period", 0.5, "s between MCAP chunk flushes (a SIGKILL loses at most this much); 0 = at close",
          low=0.0),
], lifecycle=True)


class BagEpisode:
    """One open rosbag2 episode (thread-safe writes)."""

    def __init__(self, path: Path, storage: str):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.storage = storage
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.typestore = get_typestore(Stores.ROS2_KILTED)
        self.connections: dict[str, object] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.closed = False

    def connection(self, topic: str, msgtype: str):
        conn = self.connections.get(topic)
        if conn is None:
            conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
            self.connections[topic] = conn
        return conn

    def write(self, topic: str, msgtype: str, stamp_ns: int, data: bytes) -> None:
        with self.lock:
            if self.closed:
                return
            self.writer.write(self.connection(topic, msgtype), stamp_ns, data)
            self.count += 1

    def flush(self) -> None:
        """Close the pending MCAP chunk and flush it to disk (rosbags buffers up to 1 MiB)."""
        with self.lock:
            if self.closed:
                return
            storage = getattr(self.writer, "storage", None)
            if storage is not None and hasattr(storage, "close_chunk") and hasattr(storage, "chunk"):
                if storage.chunk.bio.tell():
                    storage.close_chunk()
                storage.bio.flush()

    def close(self) -> None:
        with self.lock:
            if not self.closed:
                self.closed = True
                self.writer.close()


class RecorderNode(LifecycleNode):
    def __init__(self):
        super().__init__(NODE_NAME)
        from std_msgs.msg import String

        PARAMS.declare(self)
        self.throttle = Throttle(self.get_logger())
        self.configured = False
        self.episode: BagEpisode | None = None
        self.episodes_done = 0
        self.episode_start = None
        self.types: dict[str, str] = {}
        self.subs = {}
        self.written: dict[str, int] = {}  # per topic, this process's life
        self.dropped: dict[str, int] = {}  # received while no episode was open, or the write failed
        self.write_failures = 0
        self._reported_failures = 0
        self.lock = threading.RLock()
        self.exit_code = 0
        self.received = 0  # messages taken from DDS (run_node drains until this stops growing)
        self.drain_s = 0.3
        self._activity: list = []  # timers of the active state
        self._pending: dict[str, object] = {}
        self._pending_lock = threading.Lock()
        self.status_pub = self.create_publisher(
            String, "~/episode", QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                                            reliability=ReliabilityPolicy.RELIABLE))
        self._String = String
        self.create_subscription(String, "~/control", self._on_control, 10)
        if HAVE_STD_SRVS:
            from std_srvs.srv import Trigger

            self.create_service(Trigger, "~/start", lambda q, r: self._srv(r, self.start_episode))
            self.create_service(Trigger, "~/stop", lambda q, r: self._srv(r, self.stop_episode))
            self.create_service(Trigger, "~/split", lambda q, r: self._srv(r, self.split_episode))
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._queue_parameters)
        self.diagnostics = DiagnosticsUpdater(self)
        self.diagnostics.add("recording", self._diagnose)

    def start_up(self) -> None:
        """Called by run_node once the node spins: the `autostart` transitions."""
        if self.get_parameter("autostart").value:
            autostart(self)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state) -> TransitionCallbackReturn:
        p = {name: self.get_parameter(name).value for name in PARAMS.names()}
        problems = PARAMS.check_all(p)
        if problems:
            self.get_logger().error(f"configure failed: {'; '.join(problems)}. {NODE_NAME} stays unconfigured")
            return TransitionCallbackReturn.FAILURE
        with self._pending_lock:
            self._pending.clear()
        self.topics = [self.resolve_topic_name(t) for t in p["topics"] if t]
        self.output_dir = Path(p["output_dir"])
        self.episode_duration = float(p["episode_duration"])
        self.episode_count = int(p["episode_count"])
        self.max_messages = int(p["max_messages"])
        self.storage = str(p["storage"])
        self.record_on_activate = bool(p["record_on_activate"])
        self.exit_when_done = bool(p["exit_when_done"])
        self.flush_period = float(p["flush_period"])
        self.episode_index = self._first_free_index()
        # the bag writer's imports and type store take ~0.25 s the first time: pay it here, not in
        # the first episode's start, which would block the executor while /clock runs on and so
        # start the episode's duration from a stale sim time (a short first episode)
        import rosbags.rosbag2.storage_mcap  # noqa: F401
        from rosbags.rosbag2 import Writer  # noqa: F401
        from rosbags.typesys import Stores, get_typestore

        get_typestore(Stores.ROS2_KILTED)
        self.configured = True
        self.get_logger().info(f"configured: recording {self.topics} to {self.output_dir} ({self.storage})")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._activity.append(self.create_timer(0.2, self._discover))
        self._activity.append(self.create_timer(0.05, self._check_episode))
        if self.flush_period > 0:
            self._activity.append(self.create_timer(self.flush_period, self._flush))
        self._discover()
        if self.record_on_activate:
            self.start_episode()
        return super().on_activate(state)

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._stop_recording()
        self.get_logger().info("inactive: subscriptions closed, episode closed")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.configured = False
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_recording()
        self.configured = False
        request_exit(self, self.exit_code)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state) -> TransitionCallbackReturn:
        self._stop_recording()
        self.configured = False
        return TransitionCallbackReturn.SUCCESS

    def _stop_recording(self) -> None:
        """Take what DDS already holds for us, close the episode, unsubscribe (nothing received is lost)."""
        self._drain()
        for t in self._activity:
            self.destroy_timer(t)
        self._activity = []
        with self.lock:
            if self.episode is not None:
                self.stop_episode(exit_when_done=False)
            for sub in self.subs.values():
                self.destroy_subscription(sub)
            self.subs = {}

    def _drain(self) -> None:
        for topic, sub in list(self.subs.items()):
            try:
                with sub.handle:
                    while True:
                        taken = sub.handle.take_message(sub.msg_type, sub.raw)
                        if taken is None:
                            break
                        self._on_message(topic, taken[0])
            except Exception as exc:  # noqa: BLE001 - a destroyed handle: nothing left to take
                self.throttle.warn(f"drain/{topic}", f"could not drain {topic}: {exc}")

    # ------------------------------------------------------------------ parameters
    def _validate_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult

        configured = state_label(self) != "unconfigured"
        for prm in params:
            reason = PARAMS.check_change(prm.name, prm.value, configured)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _queue_parameters(self, params) -> None:
        with self._pending_lock:
            for prm in params:
                if prm.name in PARAMS and PARAMS[prm.name].live:
                    self._pending[prm.name] = prm.value

    def _apply_pending(self) -> None:
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        for name, value in pending.items():
            setattr(self, name, value)
        if pending:
            self.get_logger().info("parameters applied: " + ", ".join(f"{k}={v!r}" for k, v in pending.items()))

    # ------------------------------------------------------------------ diagnostics
    def _diagnose(self, r) -> None:
        state = state_label(self)
        r.add("state", state)
        failures, self._reported_failures = self.write_failures - self._reported_failures, self.write_failures
        ep = self.episode
        if ep is None:
            r.set(STALE, f"{state}: not recording")
        elif failures:
            r.set(WARN, f"{failures} messages could not be written since the last report")
        else:
            r.set(OK, f"recording {ep.path}")
        r.add("episode", "" if ep is None else str(ep.path))
        r.add("episode messages", 0 if ep is None else ep.count)
        r.add("episodes done", self.episodes_done)
        for topic in getattr(self, "topics", []):
            r.add(f"{topic} written", self.written.get(topic, 0))
            r.add(f"{topic} dropped", self.dropped.get(topic, 0))

    # ------------------------------------------------------------------ discovery
    def _discover(self) -> None:
        pending = [t for t in self.topics if t not in self.subs]
        if not pending:
            return
        graph = dict(self.get_topic_names_and_types())
        for topic in pending:
            types = graph.get(topic)
            if not types:
                continue
            msgtype = types[0]
            if len(types) > 1:
                self.throttle.warn(f"types/{topic}", f"{topic} has several types {types}; recording {msgtype}")
            try:
                cls = message_class(msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self.throttle.warn(f"cls/{topic}", f"cannot record {topic}: message type {msgtype} unavailable ({exc})")
                continue
            qos = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
            infos = self.get_publishers_info_by_topic(topic)
            if any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos):
                qos.reliability = ReliabilityPolicy.BEST_EFFORT
            if infos and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos):
                qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
            self.types[topic] = msgtype
            self.subs[topic] = self.create_subscription(
                cls, topic, lambda data, topic=topic: self._on_message(topic, data), qos, raw=True)
            self.get_logger().info(f"subscribed {topic} [{msgtype}]")

    # ------------------------------------------------------------------ recording
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_message(self, topic: str, data: bytes) -> None:
        self.received += 1
        with self.lock:
            ep = self.episode
            if ep is None:
                self.dropped[topic] = self.dropped.get(topic, 0) + 1
                return
            try:
                ep.write(topic, self.types[topic], self._now_ns(), data)
            except Exception as exc:  # noqa: BLE001 - a bad message must not kill the recorder
                self.dropped[topic] = self.dropped.get(topic, 0) + 1
                self.write_failures += 1
                self.throttle.warn(f"write/{topic}", f"failed to write a {topic} message: {exc}")
                return
            self.written[topic] = self.written.get(topic, 0) + 1
            if self.max_messages and ep.count >= self.max_messages:
                self.split_episode()

    def _check_episode(self) -> None:
        self._apply_pending()
        with self.lock:
            if self.episode is None or not self.episode_duration:
                return
            now = self._now_ns()
            if self.episode_start is None or now < self.episode_start:  # clock not started or jumped back
                self.episode_start = now if now > 0 else None
                return
            if (now - self.episode_start) * 1e-9 >= self.episode_duration:
                self.split_episode()

    def _flush(self) -> None:
        ep = self.episode
        if ep is not None:
            try:
                ep.flush()
            except Exception as exc:  # noqa: BLE001
                self.throttle.warn("flush", f"flush failed: {exc}")

    def _first_free_index(self) -> int:
        i = 0
        while (self.output_dir / f"episode_{i:03d}").exists():
            i += 1
        return i

    def start_episode(self) -> str:
        with self.lock:
            if state_label(self) not in ("active", "activating"):
                return f"{NODE_NAME} is {state_label(self)}: activate it to record"
            if self.episode is not None:
                return f"already recording {self.episode.path}"
            if self.episode_count and self.episodes_done >= self.episode_count:
                return "episode_count reached"
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self.episode_index = max(self.episode_index, self._first_free_index())
            path = self.output_dir / f"episode_{self.episode_index:03d}"
            self.episode = BagEpisode(path, self.storage)
            self.episode_index += 1
            now = self._now_ns()
            self.episode_start = now if now > 0 else None
            self.get_logger().info(f"episode started: {path}")
            self.status_pub.publish(self._String(data=f"recording {path}"))
            return f"recording {path}"

    def stop_episode(self, exit_when_done: bool = True) -> str:
        with self.lock:
            ep = self.episode
            if ep is None:
                return "not recording"
            self.episode = None
            ep.close()
            self.episodes_done += 1
            text = f"stopped {ep.path} {ep.count} messages"
            self.get_logger().info(f"episode closed: {ep.path} ({ep.count} messages)")
            try:
                self.status_pub.publish(self._String(data=text))
            except Exception:  # noqa: BLE001 - context may be shutting down
                pass
            if self.episode_count and self.episodes_done >= self.episode_count and self.exit_when_done \
                    and exit_when_done:
                self.get_logger().info(f"{self.episodes_done} episode(s) recorded; exiting")
                request_exit(self, 0)
            return text

    def split_episode(self) -> str:
        with self.lock:
            text = self.stop_episode()
            if not (self.episode_count and self.episodes_done >= self.episode_count):
                text += "; " + self.start_episode()
            return text

    def _srv(self, resp, fn):
        resp.message = fn()
        resp.success = True
        return resp

    def _on_control(self, msg) -> None:
        cmd = msg.data.strip().lower()
        actions = {"start": self.start_episode, "stop": self.stop_episode, "split": self.split_episode}
        if cmd not in actions:
            self.throttle.warn("control", f"~/control: unknown command {msg.data!r} (expected start, stop, split)")
            return
        actions[cmd]()

    def close(self) -> None:
        """Called after spinning ends (signal or exit): close the open episode."""
        self._drain()
        with self.lock:
            ep = self.episode
            self.episode = None
            if ep is not None:
                ep.close()
                self.get_logger().info(f"episode closed: {ep.path} ({ep.count} messages)")


def main(args=None) -> int:
    return run_node(RecorderNode, args, params=PARAMS, prog="python -m pvrnn_ros.ros.recorder_node")


if __name__ == "__main__":
    import sys

    sys.exit(main())
