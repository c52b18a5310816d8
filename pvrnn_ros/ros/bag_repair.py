"""Repair a rosbag2 MCAP episode cut by a crash (SIGKILL, power loss).

The recorder flushes whole MCAP chunks every `flush_period`, so a killed recording holds every
chunk written before the crash but has no MCAP summary/footer and no metadata.yaml. `repair_bag`
reads the records that are intact (stopping at the first truncated one) and rewrites the episode
as a complete bag (valid MCAP + metadata.yaml); the damaged file is kept as `*.mcap.damaged`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["needs_repair", "repair_bag", "repair_tree"]


def needs_repair(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and not (path / "metadata.yaml").exists() and any(path.glob("*.mcap"))


def _scan(mcap_path: Path):
    """Yield (kind, record) for schemas, channels and messages until the data ends or breaks."""
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    with mcap_path.open("rb") as f:
        reader = StreamReader(f, skip_magic=False, emit_chunks=False)
        try:
            for rec in reader.records:
                if isinstance(rec, (Schema, Channel, Message)):
                    yield rec
        except Exception:  # noqa: BLE001 - truncated tail: keep what was intact
            return


def repair_bag(path: str | Path, force: bool = False) -> dict:
    """Rebuild `path` (an episode directory holding one .mcap) into a complete rosbag2.

    Returns {"messages": n, "topics": {topic: n}, "path": str}. Raises ValueError when the
    directory holds no MCAP file, or already has metadata.yaml (unless `force`).
    """
    from mcap.records import Channel, Message, Schema
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    files = sorted(path.glob("*.mcap"))
    if not files:
        raise ValueError(f"{path}: no .mcap file to repair")
    if (path / "metadata.yaml").exists() and not force:
        raise ValueError(f"{path}: metadata.yaml exists; the bag looks complete (use force=True to rebuild)")
    typestore = get_typestore(Stores.ROS2_KILTED)
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    messages: list[Message] = []
    for f in files:
        for rec in _scan(f):
            if isinstance(rec, Schema):
                schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                channels[rec.id] = rec
            elif isinstance(rec, Message):
                messages.append(rec)
    messages.sort(key=lambda m: m.log_time)
    tmp = path.parent / f".{path.name}.repair"
    if tmp.exists():
        shutil.rmtree(tmp)
    writer = Writer(tmp, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    conns = {}
    counts: dict[str, int] = {}
    try:
        for m in messages:
            ch = channels.get(m.channel_id)
            if ch is None:
                continue
            conn = conns.get(ch.id)
            if conn is None:
                schema = schemas.get(ch.schema_id)
                msgtype = schema.name if schema is not None else ""
                if "/msg/" not in msgtype and msgtype.count("/") == 1:
                    msgtype = msgtype.replace("/", "/msg/")
                kwargs = {"typestore": typestore}
                if schema is not None and schema.encoding == "ros2msg" and msgtype not in typestore.fielddefs:
                    kwargs = {"msgdef": schema.data.decode(), "rihs01": "RIHS01_" + "0" * 64}
                conn = writer.add_connection(ch.topic, msgtype, **kwargs)
                conns[ch.id] = conn
            writer.write(conn, m.log_time, m.data)
            counts[ch.topic] = counts.get(ch.topic, 0) + 1
    finally:
        writer.close()
    for f in files:
        f.rename(f.with_name(f.name + ".damaged"))
    new = tmp / f"{tmp.name}.mcap"
    target = path / f"{path.name}.mcap"
    shutil.move(str(new), str(target))
    meta = (tmp / "metadata.yaml").read_text().replace(f"{tmp.name}.mcap", target.name)
    (path / "metadata.yaml").write_text(meta)
    shutil.rmtree(tmp)
    return {"messages": sum(counts.values()), "topics": counts, "path": str(path)}


def repair_tree(root: str | Path) -> list[dict]:
    """Repair every episode directory under `root` (or `root` itself) that lacks metadata.yaml."""
    root = Path(root)
    dirs = [root] if needs_repair(root) else sorted(p for p in root.iterdir() if needs_repair(p)) if root.is_dir() else []
    return [repair_bag(d) for d in dirs]


def main(argv=None) -> int:
    """`python -m pvrnn_ros.ros.bag_repair DIR...`"""
    import argparse

    parser = argparse.ArgumentParser(prog="pvrnn-ros repair", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="episode directories or a directory of them")
    args = parser.parse_args(argv)
    found = False
    for p in args.paths:
        for r in repair_tree(p):
            found = True
            print(f"repaired {r['path']}: {r['messages']} messages {r['topics']}")
    if not found:
        print("nothing to repair (every bag has metadata.yaml)")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
