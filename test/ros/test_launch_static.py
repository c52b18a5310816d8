"""Static checks: launch files, bring-up table, params files and console scripts agree."""
from __future__ import annotations

import ast
from pathlib import Path

import yaml

from pvrnn_ros.bringup import GRAPHS

REPO = Path(__file__).resolve().parents[2]


def _launch_graph(path: Path) -> str:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "GRAPH" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path}: no GRAPH = '...' assignment")


def _console_scripts() -> set[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "NODES" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("setup.py: no NODES list")


def test_every_launch_file_names_existing_executables_and_params():
    launch_files = sorted((REPO / "launch").glob("*.launch.py"))
    assert {p.name for p in launch_files} >= {"record_demos.launch.py", "imitate.launch.py", "er_real_robot.launch.py"}
    scripts = _console_scripts()
    assert 'Node(package="pvrnn_ros", executable=spec.executable' in (REPO / "pvrnn_ros" / "bringup.py").read_text()
    for path in launch_files:
        graph = _launch_graph(path)
        assert graph in GRAPHS, f"{path.name}: graph {graph!r} not in bringup.GRAPHS"
        text = path.read_text()
        assert "launch_description(GRAPH)" in text
        for spec in GRAPHS[graph]:
            assert spec.executable in scripts, f"{path.name}: {spec.executable} is not a console script"
            assert (REPO / "pvrnn_ros" / "ros" / f"{spec.executable}.py").is_file()
            params = REPO / "config" / spec.params
            assert params.is_file(), f"{path.name}: missing params file {params}"
            data = yaml.safe_load(params.read_text())
            assert "ros__parameters" in data[spec.name], f"{params.name}: no {spec.name}: ros__parameters:"


def test_params_files_only_declared_parameters():
    """Every key in a params file is declared by its node (catches typos that ROS ignores), and its value
    passes the node's own check."""
    import importlib
    import re

    for graph in GRAPHS.values():
        for spec in graph:
            src = (REPO / "pvrnn_ros" / "ros" / f"{spec.executable}.py").read_text()
            table = importlib.import_module(f"pvrnn_ros.ros.{spec.executable}").PARAMS
            # the table, plus any declaration still made with common.param()
            declared = set(table.names()) | set(re.findall(r'param\(self, "([a-z_]+)"', src)) | {"use_sim_time"}
            data = yaml.safe_load((REPO / "config" / spec.params).read_text())[spec.name]["ros__parameters"]
            unknown = set(data) - declared
            assert not unknown, f"{spec.params}: {spec.name} does not declare {sorted(unknown)}"
            bad = table.check_all({k: v for k, v in data.items() if k in table})
            assert not bad, f"{spec.params}: {bad}"
