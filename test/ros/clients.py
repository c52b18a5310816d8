"""Service clients the ROS tests use against nodes in other processes (parameters, diagnostics)."""
from __future__ import annotations

from pvrnn_ros.ros.diagnostics import LEVEL_NAMES
from pvrnn_ros.ros.lifecycle import call


def set_parameter(probe, node: str, name: str, value, timeout: float = 10.0) -> tuple[bool, str]:
    """set_parameters on `node` over its ~/set_parameters service: (successful, reason)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.node.create_client(SetParameters, f"/{node}/set_parameters")
    try:
        req = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        resp = call(probe.node, client, req, timeout)
        assert resp is not None, f"{node}/set_parameters did not answer"
        return resp.results[0].successful, resp.results[0].reason
    finally:
        probe.node.destroy_client(client)


def trigger(probe, service: str, timeout: float = 10.0) -> tuple[bool, str]:
    from std_srvs.srv import Trigger

    client = probe.node.create_client(Trigger, service)
    try:
        resp = call(probe.node, client, Trigger.Request(), timeout)
        assert resp is not None, f"{service} did not answer"
        return resp.success, resp.message
    finally:
        probe.node.destroy_client(client)


def statuses(probe, name: str, since: float = 0.0) -> list[tuple[float, str, str, dict]]:
    """(receive time, level name, message, key/values) of every /diagnostics status `name` received
    after `since` (time.monotonic())."""
    out = []
    for t, arr in probe.messages("/diagnostics"):
        if t < since:
            continue
        for s in arr.status:
            if s.name == name:
                level = s.level[0] if isinstance(s.level, (bytes, bytearray)) else int(s.level)
                out.append((t, LEVEL_NAMES[level], s.message, {kv.key: kv.value for kv in s.values}))
    return out


def latest_status(probe, name: str, since: float = 0.0):
    found = statuses(probe, name, since)
    return found[-1] if found else None
