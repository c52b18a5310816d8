"""Demonstrations in and out: CSV, NPZ and rosbag2 (MCAP or sqlite3) of sensor_msgs/JointState.

Every loader returns `Demonstration`s with their own time stamps; `resample` puts them on the
model's rate; joints are always matched by name. Modalities learned beside the joints
(`data.modalities`) come along in `Demonstration.extra`: CSV columns / npz arrays named
`<modality>.<component>`, `<episode>.segments.json` sidecars (categorical: the primitive in force),
and in bags geometry_msgs/PointStamped and std_msgs/String topics, each with its own time stamps.
"""
from __future__ import annotations

import csv
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """A demonstration file is malformed; the message names the file, row and problem."""


@dataclass
class ModalitySeries:
    """One modality of one demonstration, on its own time stamps."""

    components: list[str]  # continuous: component names; categorical: [] (labels carry the classes)
    times: np.ndarray  # [M] seconds, on the demonstration's clock
    values: np.ndarray | None = None  # [M, k] continuous (NaN = not observed)
    labels: list[str | None] | None = None  # [M] categorical: the class in force from times[i] on

    @property
    def categorical(self) -> bool:
        return self.labels is not None

    def at(self, grid: np.ndarray) -> "ModalitySeries":
        """Values on `grid`: continuous linearly interpolated (NaN outside the recorded span),
        categorical the label in force at each time (None before the first)."""
        if self.categorical:
            idx = np.searchsorted(self.times, grid + 1e-9, side="right") - 1
            labels = [self.labels[i] if i >= 0 else None for i in idx]
            return ModalitySeries([], grid, None, labels)
        cols = []
        for j in range(self.values.shape[1]):
            # a NaN sample stays unobserved: interpolation next to it gives NaN
            col = np.interp(grid, self.times, self.values[:, j])
            col[(grid < self.times[0] - 1e-9) | (grid > self.times[-1] + 1e-9)] = np.nan
            cols.append(col)
        return ModalitySeries(list(self.components), grid, np.stack(cols, 1), None)


@dataclass
class Demonstration:
    name: str
    times: np.ndarray  # [T] seconds, strictly increasing
    positions: np.ndarray  # [T, D]
    joint_names: list[str]
    source: str = ""
    notes: list[str] = field(default_factory=list)
    extra: dict[str, ModalitySeries] = field(default_factory=dict)  # modalities beside the joints

    def __len__(self) -> int:
        return len(self.times)

    def select(self, joint_names: list[str]) -> "Demonstration":
        """The same demonstration with columns in `joint_names` order (extra joints dropped)."""
        missing = [j for j in joint_names if j not in self.joint_names]
        if missing:
            raise DataError(f"{self.source or self.name}: joints {missing} are missing "
                            f"(the file has {self.joint_names})")
        idx = [self.joint_names.index(j) for j in joint_names]
        return Demonstration(self.name, self.times, self.positions[:, idx], list(joint_names), self.source,
                             self.notes, dict(self.extra))


def example_data_dir() -> Path:
    """The demonstrations bundled with the package (synthesised in the MuJoCo arm)."""
    return Path(__file__).resolve().parent.parent / "examples" / "arm7"


# ------------------------------------------------------------------------------------- readers
def _split_modality_columns(names: list[str], modality_names) -> tuple[list[int], dict[str, list[tuple[int, str]]]]:
    """Indices of joint columns, and per declared modality its (index, component) columns
    (`<modality>.<component>`); columns of undeclared prefixes stay joints."""
    joints, mods = [], {}
    for i, n in enumerate(names):
        prefix, dot, comp = n.partition(".")
        if dot and prefix in modality_names and comp:
            mods.setdefault(prefix, []).append((i, comp))
        else:
            joints.append(i)
    return joints, mods


def _with_columns(demo: Demonstration, modality_names) -> Demonstration:
    """Move `<modality>.<component>` columns of declared modalities from positions into extra."""
    joints, mods = _split_modality_columns(demo.joint_names, set(modality_names or ()))
    if not mods:
        return demo
    extra = dict(demo.extra)
    for name, cols in mods.items():
        extra[name] = ModalitySeries([c for _, c in cols], demo.times, demo.positions[:, [i for i, _ in cols]])
    return Demonstration(demo.name, demo.times, demo.positions[:, joints], [demo.joint_names[i] for i in joints],
                         demo.source, demo.notes, extra)


def read_csv(path: str | Path, rate_hz: float | None = None, modality_names=()) -> Demonstration:
    """modality_names: declared modalities whose `<name>.<component>` columns are not joints (they
    may hold empty cells = not observed)."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: the file is empty (expected a header row of joint names)")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: duplicate column names {dup} in the header")
    has_time = "time" in header
    if not has_time and rate_hz is None:
        raise DataError(f"{path}: no 'time' column and no --rate given; cannot place samples in time")
    joint_names = [h for h in header if h != "time"]
    if not joint_names:
        raise DataError(f"{path}: no joint columns in the header {header}")
    values = np.empty((len(rows) - 1, len(header)))
    for r, row in enumerate(rows[1:], start=2):  # r = line number in the file
        if len(row) != len(header):
            raise DataError(f"{path}: row {r} has {len(row)} values, expected {len(header)} ({', '.join(header)})")
        try:
            values[r - 2] = [float(v) if v.strip() != "" else math.nan for v in row]
        except ValueError:
            bad = next(v for v in row if not _is_float(v))
            raise DataError(f"{path}: row {r} has a non-numeric value {bad!r}") from None
    if len(values) == 0:
        raise DataError(f"{path}: no data rows after the header")
    if has_time:
        ti = header.index("time")
        times = values[:, ti]
        positions = np.delete(values, ti, axis=1)
    else:
        times = np.arange(len(values)) / float(rate_hz)
        positions = values
    demo = _with_columns(Demonstration(path.stem, times, positions, joint_names, str(path)), modality_names)
    return _checked(demo, first_row=2)


def read_npz(path: str | Path, rate_hz: float | None = None, modality_names=()) -> Demonstration:
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile / pickle errors: say which file
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("positions", "joint_names"):
        if key not in data:
            raise DataError(f"{path}: missing array '{key}' (has {sorted(data.files)})")
    positions = np.asarray(data["positions"], dtype=np.float64)
    names = [str(n) for n in data["joint_names"]]
    if positions.ndim != 2 or positions.shape[1] != len(names):
        raise DataError(f"{path}: positions has shape {positions.shape}, expected [T, {len(names)}]")
    if "times" in data:
        times = np.asarray(data["times"], dtype=np.float64)
    elif rate_hz is not None:
        times = np.arange(len(positions)) / float(rate_hz)
    else:
        raise DataError(f"{path}: no 'times' array and no --rate given")
    extra = {}
    for name in modality_names or ():
        comps = sorted(k.split(".", 1)[1] for k in data.files if k.startswith(name + ".") and len(k) > len(name) + 1)
        if not comps:
            continue
        cols = []
        for c in comps:
            col = np.asarray(data[f"{name}.{c}"], dtype=np.float64).reshape(-1)
            if col.shape[0] != len(times):
                raise DataError(f"{path}: array '{name}.{c}' has {col.shape[0]} values, expected {len(times)} "
                                f"(one per time step)")
            cols.append(col)
        extra[name] = ModalitySeries(comps, times, np.stack(cols, 1))
    return _checked(Demonstration(path.stem, times, positions, names, str(path), extra=extra), first_row=0)


def read_rosbag(path: str | Path, topic: str | None = None, modalities=()) -> Demonstration:
    """A rosbag2 recording (directory with metadata.yaml, MCAP or sqlite3) of JointState.

    Messages are matched by joint name; a message lacking a joint or holding NaN for one is
    dropped (recording glitches are common) and the count is reported in `notes`. `modalities`
    (ModalityConfig): continuous ones from geometry_msgs/PointStamped, categorical ones from
    std_msgs/String topics (see `_modality_topic`), each on its header / receive time stamps."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    try:
        reader_cm = AnyReader([path])
        reader = reader_cm.__enter__()
    except Exception as exc:
        raise DataError(f"{path}: not a readable rosbag2 recording ({exc})") from None
    try:
        js = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/JointState"]
        if topic is not None:
            js = [c for c in js if c.topic == topic]
        if not js:
            raise DataError(f"{path}: no sensor_msgs/JointState messages"
                            + (f" on topic {topic}" if topic else "") + " in the bag")
        topics = sorted({c.topic for c in js})
        if len(topics) > 1:
            raise DataError(f"{path}: JointState on several topics {topics}; choose one with --topic")
        names: list[str] | None = None
        times, rows, dropped = [], [], 0
        for conn, stamp_ns, raw in reader.messages(connections=js):
            msg = reader.deserialize(raw, conn.msgtype)
            t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            if t == 0.0:
                t = stamp_ns * 1e-9  # publisher left the stamp empty: use the bag's receive time
            if names is None:
                names = list(msg.name)
            pos = dict(zip(msg.name, np.asarray(msg.position, dtype=np.float64)))
            if any(n not in pos or not np.isfinite(pos[n]) for n in names):
                dropped += 1
                continue
            times.append(t)
            rows.append([pos[n] for n in names])
        extra = {}
        for m in modalities or ():
            series = _read_modality_topic(reader, path, m, js[0].topic)
            if series is not None:
                extra[m.name] = series
    finally:
        reader_cm.__exit__(None, None, None)
    if not rows:
        raise DataError(f"{path}: no complete JointState messages")
    order = np.argsort(np.asarray(times), kind="stable")
    times_arr = np.asarray(times)[order]
    positions = np.asarray(rows)[order]
    keep = np.concatenate([[True], np.diff(times_arr) > 0])  # duplicate stamps: keep the first
    notes = []
    if dropped:
        notes.append(f"dropped {dropped} incomplete or NaN JointState messages")
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} messages with repeated time stamps")
    demo = Demonstration(path.name, times_arr[keep], positions[keep], names, str(path), notes, extra)
    return _checked(demo, first_row=0)


POINT_TYPE = "geometry_msgs/msg/PointStamped"
STRING_TYPE = "std_msgs/msg/String"


def _modality_topic(topics: list[str], modality, joint_topic: str) -> str | None:
    """The topic a modality is read from: `modality.topic` if set, else the one named `<name>`
    (categorical also `primitive`), preferring the joint states' namespace."""
    if modality.topic is not None:
        want = "/" + modality.topic.lstrip("/")
        return want if want in topics else None
    leaves = (modality.name,) if modality.kind == "continuous" else (modality.name, "primitive")
    found = [t for t in topics if t.rsplit("/", 1)[-1] in leaves]
    ns = joint_topic.rsplit("/", 1)[0] + "/"
    same_ns = [t for t in found if t.startswith(ns)]
    found = same_ns or found
    return sorted(found)[0] if found else None


def _read_modality_topic(reader, path: Path, modality, joint_topic: str) -> ModalitySeries | None:
    msgtype = STRING_TYPE if modality.kind == "categorical" else POINT_TYPE
    conns = [c for c in reader.connections if c.msgtype == msgtype]
    chosen = _modality_topic(sorted({c.topic for c in conns}), modality, joint_topic)
    if chosen is None:
        if modality.topic is not None:
            raise DataError(f"{path}: no {msgtype} messages on topic {modality.topic} "
                            f"(data.modalities '{modality.name}')")
        return None
    times, values, labels = [], [], []
    for conn, stamp_ns, raw in reader.messages(connections=[c for c in conns if c.topic == chosen]):
        msg = reader.deserialize(raw, conn.msgtype)
        if modality.kind == "categorical":
            times.append(stamp_ns * 1e-9)  # std_msgs/String has no header: the bag's receive time
            labels.append(str(msg.data))
        else:
            t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            times.append(t if t != 0.0 else stamp_ns * 1e-9)
            values.append([msg.point.x, msg.point.y, msg.point.z])
    if not times:
        return None
    order = np.argsort(np.asarray(times), kind="stable")
    t = np.asarray(times)[order]
    if modality.kind == "categorical":
        return ModalitySeries([], t, None, [labels[i] for i in order])
    return ModalitySeries(["x", "y", "z"], t, np.asarray(values, dtype=np.float64)[order])


def read_segments(path: str | Path) -> ModalitySeries:
    """A `<episode>.segments.json` sidecar: [{"start_time": s, "primitive": name}, ...]."""
    path = Path(path)
    try:
        segments = json.loads(path.read_text())
        times = np.asarray([float(s["start_time"]) for s in segments])
        labels = [str(s["primitive"]) for s in segments]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a segments sidecar (expected a list of "
                        f'{{"start_time": s, "primitive": name}}): {exc}') from None
    if len(times) == 0 or np.any(np.diff(times) < 0):
        raise DataError(f"{path}: segment start times must be a non-empty increasing list")
    return ModalitySeries([], times, None, labels)


def segments_sidecar(demo: Demonstration) -> Path | None:
    """Where a demonstration's segments sidecar is, if it has one."""
    if not demo.source:
        return None
    src = Path(demo.source)
    for cand in (src.with_suffix(".segments.json"), src.parent / f"{src.name}.segments.json",
                 src / "segments.json"):
        if cand.is_file():
            return cand
    return None


def attach_modalities(demo: Demonstration, modalities) -> Demonstration:
    """Add categorical `source: segments` modalities from sidecars where a topic gave none."""
    for m in modalities or ():
        if m.kind == "categorical" and m.name not in demo.extra:
            sidecar = segments_sidecar(demo)
            if sidecar is not None:
                demo.extra[m.name] = read_segments(sidecar)
    return demo


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return v.strip() == ""


def _checked(demo: Demonstration, first_row: int) -> Demonstration:
    """Reject NaN rows and non-increasing time, naming the file and row."""
    what = "row" if first_row else "sample"
    if len(demo.times) < 2:
        raise DataError(f"{demo.source}: only {len(demo.times)} sample(s); a demonstration needs at least 2")
    if not np.all(np.isfinite(demo.times)):
        i = int(np.flatnonzero(~np.isfinite(demo.times))[0])
        raise DataError(f"{demo.source}: {what} {i + first_row} has a non-finite time {demo.times[i]}")
    bad = np.flatnonzero(~np.all(np.isfinite(demo.positions), axis=1))
    if bad.size:
        i = int(bad[0])
        cols = [demo.joint_names[j] for j in np.flatnonzero(~np.isfinite(demo.positions[i]))]
        raise DataError(f"{demo.source}: {what} {i + first_row} has NaN/inf for joints {cols} "
                        f"({bad.size} such {what}s in the file)")
    dt = np.diff(demo.times)
    if np.any(dt <= 0):
        i = int(np.flatnonzero(dt <= 0)[0]) + 1
        raise DataError(f"{demo.source}: time does not increase at {what} {i + first_row} "
                        f"({demo.times[i - 1]} -> {demo.times[i]})")
    return demo


def is_rosbag(path: Path) -> bool:
    return path.is_dir() and (path / "metadata.yaml").exists()


def read_any(path: str | Path, rate_hz: float | None = None, topic: str | None = None,
             modalities=()) -> Demonstration:
    """modalities: `data.modalities` (ModalityConfig) to read beside the joints."""
    path = Path(path)
    names = [m.name for m in modalities or () if m.kind == "continuous"]
    if is_rosbag(path):
        return attach_modalities(read_rosbag(path, topic, modalities), modalities)
    if path.suffix == ".csv":
        return attach_modalities(read_csv(path, rate_hz, names), modalities)
    if path.suffix == ".npz":
        return attach_modalities(read_npz(path, rate_hz, names), modalities)
    raise DataError(f"{path}: unsupported demonstration format (expected .csv, .npz or a rosbag2 directory)")


def discover(path: str | Path) -> list[Path]:
    """Demonstration files under `path` (a file, a bag directory or a directory of them), sorted."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file() or is_rosbag(path):
        return [path]
    cut = sorted(p.name for p in path.iterdir() if p.is_dir() and not is_rosbag(p) and any(p.glob("*.mcap")))
    if cut:
        raise DataError(f"{path}: recordings {cut} have no metadata.yaml (cut by a crash?); "
                        f"run `pvrnn-ros repair {path}` first")
    found = sorted(p for p in path.iterdir() if p.suffix in (".csv", ".npz") or is_rosbag(p))
    if not found:
        raise DataError(f"{path}: no demonstrations (.csv, .npz or rosbag2 directories) in this directory")
    return found


def load_demonstrations(
    path: str | Path,
    rate_hz: float | None = None,
    joint_names: list[str] | None = None,
    topic: str | None = None,
    modalities=(),
) -> list[Demonstration]:
    """Load every demonstration under `path`, all with the same joint order.

    With `joint_names` (e.g. a trained model's), each file must contain those joints; extra
    joints are ignored. Without, every file must have the same joint *set* (order may differ).
    `modalities` (`config.data.modalities`) are read into each demonstration's `extra`."""
    demos = [read_any(p, rate_hz, topic, modalities) for p in discover(path)]
    reference = list(joint_names) if joint_names is not None else demos[0].joint_names
    out = []
    for demo in demos:
        if joint_names is None and set(demo.joint_names) != set(reference):
            extra = sorted(set(demo.joint_names) - set(reference))
            missing = sorted(set(reference) - set(demo.joint_names))
            raise DataError(f"{demo.source}: joint set differs from {demos[0].source}: "
                            f"missing {missing}, extra {extra}")
        out.append(demo.select(reference))
    for demo in out:
        for note in demo.notes:
            warnings.warn(f"{demo.source}: {note}", stacklevel=2)
    return out


def resample(demo: Demonstration, rate_hz: float) -> Demonstration:
    """Linear interpolation onto t0 + k / rate_hz (k = 0, 1, ... while inside the recording)."""
    t0, t1 = demo.times[0], demo.times[-1]
    n = int(math.floor((t1 - t0) * rate_hz + 1e-9)) + 1
    grid = t0 + np.arange(n) / rate_hz
    positions = np.stack([np.interp(grid, demo.times, demo.positions[:, j]) for j in range(demo.positions.shape[1])], 1)
    extra = {}
    for name, series in demo.extra.items():
        on_grid = series.at(grid)
        extra[name] = ModalitySeries(on_grid.components, grid - t0, on_grid.values, on_grid.labels)
    return Demonstration(demo.name, grid - t0, positions, demo.joint_names, demo.source, demo.notes, extra)


# ------------------------------------------------------------------------------------- writers
def write_csv(path: str | Path, times: np.ndarray, positions: np.ndarray, joint_names: list[str]) -> None:
    """The format every reader here takes: header `time,<joint names>`, time in seconds (modality
    columns are named `<modality>.<component>`); NaN is written as an empty cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # round to 1e-6 first so numerical dust (1e-28) and -0 print as "0"
    pos = np.round(np.asarray(positions, dtype=float), 6) + 0.0
    lines = ["time," + ",".join(joint_names)]
    lines += [f"{t:.6f}," + ",".join("" if not np.isfinite(v) else f"{v:.6g}" for v in row)
              for t, row in zip(times, pos)]
    path.write_text("\n".join(lines) + "\n")


def pad_batch(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack variable-length [T_i, D] arrays into [N, T_max, D] (zeros past the end) and a step mask [N, T_max]."""
    t_max = max(len(s) for s in sequences)
    D = sequences[0].shape[1]
    out = np.zeros((len(sequences), t_max, D))
    mask = np.zeros((len(sequences), t_max))
    for i, s in enumerate(sequences):
        out[i, : len(s)] = s
        mask[i, : len(s)] = 1.0
    return out, mask


# ------------------------------------------------------------------------------------- joint selection
# Which recorded joints a model learns. JointState carries no joint types or units, so they come
# from a robot description (URDF) recorded with the data: the `<robot>/robot_description` topic
# in a bag (what robot_state_publisher publishes on a real robot, and what sim_node publishes), or
# a `robot_description.urdf` file beside CSV/NPZ files (what `pvrnn-ros synth` writes).

JOINT_UNITS = {"revolute": "rad", "continuous": "rad", "prismatic": "m"}
ROBOT_DESCRIPTION_FILE = "robot_description.urdf"


@dataclass
class JointSelection:
    names: list[str]  # joints to learn, in the data's order (or the requested order)
    units: list[str]  # "rad", "m" or "?" (type unknown), one per name
    notes: list[str] = field(default_factory=list)  # what was left out and why


def parse_robot_description(urdf: str, source: str = "robot_description") -> dict[str, str]:
    """{joint name: URDF type} of the movable joints (revolute, continuous, prismatic) of a URDF."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(urdf)
    except ET.ParseError as exc:
        raise DataError(f"{source}: not a readable URDF ({exc})") from None
    return {j.get("name"): j.get("type") for j in root.iter("joint")
            if j.get("name") and j.get("type") in JOINT_UNITS}


def read_joint_types(path: str | Path, topic: str | None = None) -> dict[str, str] | None:
    """Joint types recorded with the demonstration at `path`, or None when it has no description.

    A bag: the first std_msgs/String on `<namespace of topic>/robot_description` (or on the only
    `*robot_description` topic). A CSV/NPZ file or a directory: robot_description.urdf beside it."""
    path = Path(path)
    if is_rosbag(path):
        from rosbags.highlevel import AnyReader

        with AnyReader([path]) as reader:
            conns = [c for c in reader.connections if c.msgtype == "std_msgs/msg/String"
                     and c.topic.rstrip("/").endswith("robot_description")]
            if topic is not None:
                ns = topic.rstrip("/").rsplit("/", 1)[0] if "/" in topic.strip("/") else ""
                wanted = [c for c in conns if c.topic.rstrip("/") == f"{ns}/robot_description"]
                conns = wanted or (conns if len({c.topic for c in conns}) == 1 else [])
            elif len({c.topic for c in conns}) > 1:
                return None  # several robots and no JointState topic to tell which one
            for conn, _stamp, raw in reader.messages(connections=conns):
                return parse_robot_description(reader.deserialize(raw, conn.msgtype).data, f"{path}:{conn.topic}")
        return None
    folder = path if path.is_dir() else path.parent
    urdf = folder / ROBOT_DESCRIPTION_FILE
    if urdf.is_file():
        return parse_robot_description(urdf.read_text(), str(urdf))
    return None


def joint_types_under(path: str | Path, topic: str | None = None) -> dict[str, str] | None:
    """The first robot description found among the demonstrations under `path` (see read_joint_types)."""
    for p in discover(path):
        types = read_joint_types(p, topic)
        if types:
            return types
    return None


def select_joints(available: list[str], requested: list[str] | None = None,
                  joint_types: dict[str, str] | None = None) -> JointSelection:
    """The joints to learn out of the recorded `available` ones (see DataConfig.joints).

    `requested` names them explicitly (any type). Otherwise: every revolute/continuous joint of
    the robot description; without a description, every recorded joint. Columns named
    `<modality>.<component>` (e.g. end_effector.x) are never joints."""
    types = joint_types or {}
    candidates = [n for n in available if "." not in n]
    notes: list[str] = []
    if requested:
        missing = [j for j in requested if j not in available]
        if missing:
            raise DataError(f"data.joints names {missing}, which the demonstrations do not have; "
                            f"recorded joints: {candidates}")
        names = list(requested)
    elif joint_types:
        names = [n for n in candidates if types.get(n) in ("revolute", "continuous")]
        prismatic = [n for n in candidates if types.get(n) == "prismatic"]
        unknown = [n for n in candidates if n not in types]
        if prismatic:
            notes.append(f"left out prismatic joints {prismatic} (metres); list them in data.joints / --joints "
                         "to learn them")
        if unknown:
            notes.append(f"left out joints {unknown}: not in the robot description (type unknown)")
        if not names:
            raise DataError(f"no revolute joint among the recorded joints {candidates}; choose joints with "
                            "data.joints / --joints")
    else:
        names = candidates
        notes.append(f"no robot description with the data: joint types unknown, all {len(names)} joints "
                     "learned (units unknown); choose with data.joints / --joints")
    return JointSelection(names, [JOINT_UNITS.get(types.get(n, ""), "?") for n in names], notes)
