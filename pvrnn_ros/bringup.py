"""Node graphs: the single source of truth for the launch files and `pvrnn-ros up`.

`GRAPHS[name]` lists the nodes of a graph (executable = `pvrnn_ros.ros.<executable>` module and
console script, params file under config/). `launch/<name>.launch.py` iterates the same table;
`pvrnn-ros up <name>` starts each node as a separate process with
`python -m pvrnn_ros.ros.<executable> --ros-args --params-file <config>/<params>`.

Managed (lifecycle) nodes (`NodeSpec.managed`): the launch files start them as
`launch_ros.actions.LifecycleNode` and emit configure, then activate once inactive;
`pvrnn-ros up` starts them with `autostart:=false` and drives the same transitions through their
lifecycle services (`Bringup.drive_lifecycle`), so a failed configure is reported and stops the graph.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GRAPHS", "NodeSpec", "config_dir", "params_file", "node_command", "Bringup", "ros_env",
           "launch_description"]


@dataclass(frozen=True)
class NodeSpec:
    name: str  # node name (also the key in the params file)
    executable: str  # console script / module in pvrnn_ros.ros
    params: str  # params YAML in config/
    managed: bool = False  # a lifecycle node: configure + activate after start


GRAPHS: dict[str, list[NodeSpec]] = {
    # sim (teacher + learner arms) + scripted demonstrator + rosbag2 recorder
    "record_demos": [
        NodeSpec("sim_node", "sim_node", "record_demos_params.yaml"),
        NodeSpec("demonstrator_node", "demonstrator_node", "record_demos_params.yaml"),
        NodeSpec("recorder_node", "recorder_node", "record_demos_params.yaml", managed=True),
    ],
    # sim + demonstrator on the teacher + ER node commanding the learner
    "imitate": [
        NodeSpec("sim_node", "sim_node", "imitate_params.yaml"),
        NodeSpec("demonstrator_node", "demonstrator_node", "imitate_params.yaml"),
        NodeSpec("er_node", "er_node", "imitate_params.yaml", managed=True),
    ],
    # one sim arm + the ER node in mode plan, driving it towards goals on pvrnn/goal/*
    "plan": [
        NodeSpec("sim_node", "sim_node", "plan_params.yaml"),
        NodeSpec("er_node", "er_node", "plan_params.yaml", managed=True),
    ],
    # the ER node alone beside a real robot (observe mode by default)
    "er_real_robot": [
        NodeSpec("er_node", "er_node", "er_real_robot_params.yaml", managed=True),
    ],
}



def launch_description(graph: str):
    """The `ros2 launch` description of GRAPHS[graph] (needs `launch` and `launch_ros`, i.e. a full
    ROS 2 install). Each node's params file can be replaced with the argument <node_name>_params:=PATH.
    Managed nodes are `LifecycleNode`s brought to active by launch events (configure when the process
    starts, activate when it reaches inactive); their own `autostart` is turned off so the two do not race."""
    import lifecycle_msgs.msg
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessStart
    from launch.events import matches_action
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState

    share = get_package_share_directory("pvrnn_ros")
    actions = []
    for spec in GRAPHS[graph]:
        arg = f"{spec.name}_params"
        actions.append(DeclareLaunchArgument(arg, default_value=os.path.join(share, "config", spec.params),
                                             description=f"params file of {spec.name}"))
        if not spec.managed:
            actions.append(Node(package="pvrnn_ros", executable=spec.executable, name=spec.name, output="screen",
                                emulate_tty=True, parameters=[LaunchConfiguration(arg)]))
            continue
        node = LifecycleNode(package="pvrnn_ros", executable=spec.executable, name=spec.name, namespace="",
                             output="screen", emulate_tty=True,
                             parameters=[LaunchConfiguration(arg), {"autostart": False}])
        configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE))
        activate = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                               transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))
        actions += [
            RegisterEventHandler(OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                                   goal_state="inactive", entities=[activate])),
            RegisterEventHandler(OnProcessStart(target_action=node, on_start=[configure])),
            node,
        ]
    return LaunchDescription(actions)


def config_dir() -> Path:
    """config/ in a source checkout, else the installed share/pvrnn_ros/config."""
    here = Path(__file__).resolve().parents[1] / "config"
    if (here / "imitate_params.yaml").is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("pvrnn_ros")) / "config"
        if share.is_dir():
            return share
    except Exception:  # noqa: BLE001 - not in a ROS workspace
        pass
    for prefix in {sys.prefix, sys.exec_prefix}:
        d = Path(prefix) / "share" / "pvrnn_ros" / "config"
        if d.is_dir():
            return d
    return here


def params_file(spec: NodeSpec) -> Path:
    return config_dir() / spec.params


def ros_env(domain_id: int | None = None, localhost: bool = True) -> dict[str, str]:
    """The environment for child nodes: DDS kept on this machine unless told otherwise."""
    env = dict(os.environ)
    if localhost:
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def node_command(spec: NodeSpec, overrides: list[str] | None = None, params: Path | None = None) -> list[str]:
    """argv to run one node: python -m pvrnn_ros.ros.<exe> --ros-args --params-file F [-p k:=v ...]."""
    cmd = [sys.executable, "-m", f"pvrnn_ros.ros.{spec.executable}", "--ros-args", "-r", f"__node:={spec.name}",
           "--params-file", str(params or params_file(spec))]
    for o in overrides or []:
        cmd += ["-p", o]
    return cmd


def split_overrides(items: list[str], graph: list[NodeSpec]) -> dict[str, list[str]]:
    """'node.param:=value' -> that node only; 'param:=value' -> every node of the graph."""
    names = {s.name for s in graph}
    out: dict[str, list[str]] = {s.name: [] for s in graph}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"override {item!r} is not NAME:=VALUE or NODE.NAME:=VALUE")
        key, value = item.split(":=", 1)
        node, dot, p = key.partition(".")
        if dot and node in names:
            out[node].append(f"{p}:={value}")
        elif dot and node not in names and "." not in p:
            raise ValueError(f"override {item!r}: no node {node!r} in this graph ({sorted(names)})")
        else:
            for n in out:
                out[n].append(item)
    return out


@dataclass
class _Proc:
    spec: NodeSpec
    popen: subprocess.Popen
    log: Path


@dataclass
class Bringup:
    """Start a graph's nodes as processes (logs under `run_dir`), stop them cleanly."""

    graph: str
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    params_dir: Path | None = None
    procs: list[_Proc] = field(default_factory=list)

    def specs(self) -> list[NodeSpec]:
        if self.graph not in GRAPHS:
            raise ValueError(f"unknown graph {self.graph!r}; known graphs: {', '.join(GRAPHS)}")
        return GRAPHS[self.graph]

    def start(self, only: list[str] | None = None, manage: bool = False) -> list[_Proc]:
        """Start the nodes; with `manage`, managed nodes start with autostart:=false and wait for
        `drive_lifecycle` (else they configure and activate themselves)."""
        specs = [s for s in self.specs() if only is None or s.name in only]
        per_node = split_overrides(self.overrides, self.specs())
        if manage:
            for spec in specs:
                if spec.managed:
                    per_node[spec.name].append("autostart:=false")
        self.run_dir = Path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for spec in specs:
            log = self.run_dir / f"{spec.name}.log"
            params = (Path(self.params_dir) / spec.params) if self.params_dir else None
            f = log.open("ab")
            p = subprocess.Popen(node_command(spec, per_node[spec.name], params), stdout=f, stderr=subprocess.STDOUT,
                                 env=self.env or ros_env(), start_new_session=True,
                                 preexec_fn=_die_with_parent)
            f.close()
            proc = _Proc(spec, p, log)
            self.procs.append(proc)
            started.append(proc)
        return started

    def drive_lifecycle(self, timeout: float = 180.0, log=print) -> list[str]:
        """configure, then activate, every started managed node through its lifecycle services, in
        graph order. Returns the failures (empty = all active); a failure names the node, the
        transition and the node's own reason from its log."""
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        from pvrnn_ros.ros.lifecycle import LifecycleClient

        env = self.env or ros_env()
        managed = [p for p in self.procs if p.spec.managed]
        if not managed:
            return []
        saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE",)}
        if env.get("ROS_AUTOMATIC_DISCOVERY_RANGE"):
            os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = env["ROS_AUTOMATIC_DISCOVERY_RANGE"]
        context = Context()
        rclpy.init(context=context, domain_id=int(env.get("ROS_DOMAIN_ID", "0") or 0))
        failures: list[str] = []
        try:
            node = rclpy.create_node("pvrnn_up_lifecycle", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            for p in managed:
                client = LifecycleClient(node, p.spec.name, executor=executor)
                deadline = time.monotonic() + timeout
                while not client.wait(1.0):
                    if p.popen.poll() is not None or time.monotonic() > deadline:
                        failures.append(f"{p.spec.name}: lifecycle services never came up "
                                        f"(exit code {p.popen.poll()}); log {p.log}")
                        break
                else:
                    for transition in ("configure", "activate"):
                        ok = client.change(transition, timeout=max(1.0, deadline - time.monotonic()))
                        if not ok:
                            why = "no answer" if ok is None else "refused or failed"
                            failures.append(f"{p.spec.name}: {transition} {why}{_reason_from_log(p.log)}; log {p.log}")
                            break
                        log(f"  {p.spec.name:<18} {transition} ok")
                client.destroy()
                if failures:
                    break
            executor.shutdown(timeout_sec=0.5)
            node.destroy_node()
        finally:
            context.try_shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return failures

    def poll(self) -> list[tuple[str, int]]:
        """(node, return code) of nodes that have exited."""
        return [(p.spec.name, p.popen.returncode) for p in self.procs if p.popen.poll() is not None]

    def wait_node(self, name: str, timeout: float | None = None) -> int | None:
        for p in self.procs:
            if p.spec.name == name:
                try:
                    return p.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    return None
        raise ValueError(f"no node {name!r} started")

    def stop(self, timeout: float = 5.0, names: list[str] | None = None) -> dict[str, int]:
        """SIGINT each node, wait up to `timeout`, then SIGTERM, then SIGKILL."""
        procs = [p for p in self.procs if names is None or p.spec.name in names]
        for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in procs if p.popen.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    p.popen.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.popen.poll() is None for p in alive):
                time.sleep(0.05)
        codes = {p.spec.name: p.popen.wait() for p in procs}
        self.procs = [p for p in self.procs if p not in procs]
        return codes


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when the process that started it dies, even by SIGKILL,
    so a killed `up` leaves no nodes driving the robot (Linux; elsewhere a no-op). The nodes run in
    their own sessions, so nothing else would reach them."""
    import ctypes
    import os

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _reason_from_log(log: Path) -> str:
    """': <the node's last error line>' from its log, or ''."""
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "[ERROR]" in ln]
    except OSError:
        return ""
    return (": " + lines[-1].split("]: ", 1)[-1]) if lines else ""
