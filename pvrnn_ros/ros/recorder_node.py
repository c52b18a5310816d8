"""recorder_node: records topics to rosbag2 (MCAP or sqlite3) in episodes, via `rosbags`.

Parameters
  topics            topics to record (types are discovered from the graph)
  output_dir        episodes go to output_dir/episode_000, episode_001, ...
  episode_duration  seconds (node clock; sim time with use_sim_time) per episode, 0 = until stopped
  episode_count     stop recording after this many episodes, 0 = unlimited
  max_messages      end an episode after this many messages, 0 = unlimited
  storage           "mcap" (default) or "sqlite3"
  autostart         start the first episode as soon as the node is up
  exit_when_done    exit the process after `episode_count` episodes
  flush_period      s between chunk flushes (MCAP): a SIGKILL loses at most this much

Control: services ~/start, ~/stop, ~/split (std_srvs/Trigger, when std_srvs is installed) and the
topic ~/control (std_msgs/String "start" | "stop" | "split"). Status: ~/episode (std_msgs/String,
"recording <dir>" / "stopped <dir> <n> messages").

Messages are taken serialized (raw CDR subscription) and written as they arrive; on SIGINT or
SIGTERM the open episode is closed (metadata.yaml written). After a SIGKILL run
`pvrnn_ros.ros.bag_repair.repair_bag(episode_dir)` to rebuild metadata.yaml.
"""
from __future__ import annotations

import threading
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from .common import HAVE_STD_SRVS, Throttle, param, request_exit, run_node
from .conversions import message_class

NODE_NAME = "recorder_node"


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


class RecorderNode(Node):
    def __init__(self):
        super().__init__(NODE_NAME)
        from std_msgs.msg import String

        self.topics = [self.resolve_topic_name(t) for t in param(self, "topics", ["teacher/joint_states"], "topics to record") if t]
        self.output_dir = Path(param(self, "output_dir", "bags", "directory for episode_NNN bags"))
        self.episode_duration = float(param(self, "episode_duration", 0.0, "s per episode, 0 = until stopped"))
        self.episode_count = int(param(self, "episode_count", 0, "episodes to record, 0 = unlimited"))
        self.max_messages = int(param(self, "max_messages", 0, "messages per episode, 0 = unlimited"))
        self.storage = str(param(self, "storage", "mcap", "mcap or sqlite3"))
        autostart = bool(param(self, "autostart", True, "start the first episode right away"))
        self.exit_when_done = bool(param(self, "exit_when_done", True, "exit after episode_count episodes"))
        flush_period = float(param(self, "flush_period", 0.5, "s between MCAP chunk flushes"))
        if self.storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {self.storage!r}")
        self.throttle = Throttle(self.get_logger())
        self.episode: BagEpisode | None = None
        self.episode_index = self._first_free_index()
        self.episodes_done = 0
        self.episode_start = None
        self.types: dict[str, str] = {}
        self.subs = {}
        self.lock = threading.RLock()
        self.exit_code = 0
        self.received = 0  # messages taken from DDS (run_node drains until this stops growing)
        self.drain_s = 0.3
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
        self.create_timer(0.2, self._discover)
        self.create_timer(0.05, self._check_episode)
        if flush_period > 0:
            self.create_timer(flush_period, self._flush)
        self._discover()
        if autostart:
            self.start_episode()
        self.get_logger().info(f"recording {self.topics} to {self.output_dir} ({self.storage})")

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
                return
            try:
                ep.write(topic, self.types[topic], self._now_ns(), data)
            except Exception as exc:  # noqa: BLE001 - a bad message must not kill the recorder
                self.throttle.warn(f"write/{topic}", f"failed to write a {topic} message: {exc}")
                return
            if self.max_messages and ep.count >= self.max_messages:
                self.split_episode()

    def _check_episode(self) -> None:
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

    def stop_episode(self) -> str:
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
            if self.episode_count and self.episodes_done >= self.episode_count and self.exit_when_done:
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
        with self.lock:
            ep = self.episode
            self.episode = None
            if ep is not None:
                ep.close()
                self.get_logger().info(f"episode closed: {ep.path} ({ep.count} messages)")


def main(args=None) -> int:
    return run_node(RecorderNode, args)


if __name__ == "__main__":
    import sys

    sys.exit(main())
