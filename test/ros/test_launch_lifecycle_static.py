"""The launch description, built against recording stand-ins for `launch` / `launch_ros` (not installable
here): managed nodes are LifecycleNodes with their own autostart off, configured when the process starts
and activated when they reach inactive; the others are plain Nodes."""
from __future__ import annotations

import sys
import types

import pytest

from pvrnn_ros.bringup import GRAPHS, launch_description


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _module(name: str, **classes) -> types.ModuleType:
    m = types.ModuleType(name)
    for attr, value in classes.items():
        setattr(m, attr, value)
    return m


@pytest.fixture
def fake_launch(monkeypatch):
    made = {n: type(n, (_Recorded,), {}) for n in (
        "LaunchDescription", "DeclareLaunchArgument", "EmitEvent", "RegisterEventHandler", "OnProcessStart",
        "LaunchConfiguration", "LifecycleNode", "Node", "OnStateTransition", "ChangeState")}
    mods = {
        "launch": _module("launch", LaunchDescription=made["LaunchDescription"]),
        "launch.actions": _module("launch.actions", DeclareLaunchArgument=made["DeclareLaunchArgument"],
                                  EmitEvent=made["EmitEvent"], RegisterEventHandler=made["RegisterEventHandler"]),
        "launch.event_handlers": _module("launch.event_handlers", OnProcessStart=made["OnProcessStart"]),
        "launch.events": _module("launch.events", matches_action=lambda action: ("matches", action)),
        "launch.substitutions": _module("launch.substitutions", LaunchConfiguration=made["LaunchConfiguration"]),
        "launch_ros": _module("launch_ros"),
        "launch_ros.actions": _module("launch_ros.actions", LifecycleNode=made["LifecycleNode"], Node=made["Node"]),
        "launch_ros.event_handlers": _module("launch_ros.event_handlers", OnStateTransition=made["OnStateTransition"]),
        "launch_ros.events": _module("launch_ros.events"),
        "launch_ros.events.lifecycle": _module("launch_ros.events.lifecycle", ChangeState=made["ChangeState"]),
        "ament_index_python": _module("ament_index_python"),
        "ament_index_python.packages": _module("ament_index_python.packages",
                                               get_package_share_directory=lambda pkg: f"/opt/share/{pkg}"),
    }
    for name, m in mods.items():
        monkeypatch.setitem(sys.modules, name, m)
    return made


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_launch_description_manages_lifecycle_nodes(fake_launch, graph):
    from lifecycle_msgs.msg import Transition

    desc = launch_description(graph)
    actions = desc.args[0]
    nodes = [a for a in actions if type(a).__name__ in ("Node", "LifecycleNode")]
    handlers = [a.args[0] for a in actions if type(a).__name__ == "RegisterEventHandler"]
    assert [n.kwargs["name"] for n in nodes] == [s.name for s in GRAPHS[graph]]
    for spec, node in zip(GRAPHS[graph], nodes):
        assert node.kwargs["executable"] == spec.executable
        if not spec.managed:
            assert type(node).__name__ == "Node"
            continue
        assert type(node).__name__ == "LifecycleNode" and node.kwargs["namespace"] == ""
        assert {"autostart": False} in node.kwargs["parameters"]  # launch drives the transitions, not the node
        on_start = [h for h in handlers if type(h).__name__ == "OnProcessStart" and h.kwargs["target_action"] is node]
        on_inactive = [h for h in handlers if type(h).__name__ == "OnStateTransition"
                       and h.kwargs["target_lifecycle_node"] is node]
        assert len(on_start) == 1 and len(on_inactive) == 1
        configure = on_start[0].kwargs["on_start"][0].kwargs["event"].kwargs
        activate = on_inactive[0].kwargs["entities"][0].kwargs["event"].kwargs
        assert configure["transition_id"] == Transition.TRANSITION_CONFIGURE
        assert configure["lifecycle_node_matcher"] == ("matches", node)
        assert on_inactive[0].kwargs["goal_state"] == "inactive"
        assert activate["transition_id"] == Transition.TRANSITION_ACTIVATE
