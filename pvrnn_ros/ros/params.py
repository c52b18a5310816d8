"""One parameter table per node: declaration, validation, `--help` text and docs from the same rows.

Each node module holds `PARAMS = ParamTable(NODE_NAME, [Param(...), ...])`. The table
- declares every parameter with a ParameterDescriptor (description, valid range as
  `additional_constraints`, `read_only` for those fixed for the process's life);
- checks a value (`check`) and says why it is rejected, naming the value and what is valid;
- tells which parameters may change while the node is configured (`live`) and which need a
  reconfigure (cleanup -> set -> configure);
- renders the `--help` text and the Markdown table of docs/ros.md without starting a node.

A numeric row without special values also gets the descriptor's integer/floating-point range (so
`ros2 param describe` shows it and rclpy refuses values outside it, with its own reason naming value,
min and max). The range is applied after declaring, and only if the start value satisfies it: rclpy
would otherwise refuse an out-of-range start value while declaring it and the node would die, where
a managed node should instead fail `configure` with the table's reason and stay alive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

__all__ = ["Param", "ParamTable", "help_requested"]


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    low: float | None = None  # inclusive numeric bounds (scalars only)
    high: float | None = None
    choices: tuple = ()
    special: tuple = ()  # values accepted outside [low, high], e.g. -1 = "from the checkpoint"
    live: bool = False  # may change while the node is configured/active (applied from the next tick)
    read_only: bool = False  # fixed for the process's life (descriptor read_only)

    def valid_text(self) -> str:
        """What is valid, in words ('' = any value of the declared type)."""
        if self.choices:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.low is not None and self.high is not None:
            text = f"in [{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            text = f">= {self.low:g}"
        elif self.high is not None:
            text = f"<= {self.high:g}"
        else:
            return ""
        if self.special:
            text += " or " + " or ".join(repr(s) if isinstance(s, str) else f"{s:g}" for s in self.special)
        return text

    def check(self, value) -> str | None:
        """None if `value` is valid, else the reason (naming the value and the valid range)."""
        if not isinstance(value, (list, tuple)) and value in self.special:
            return None
        if self.choices:
            if value not in self.choices:
                return f"{self.name}={value!r} is not valid: expected {self.valid_text()}"
            return None
        if (self.low is not None or self.high is not None) and isinstance(value, (int, float)) \
                and not isinstance(value, bool):
            bad = (isinstance(value, float) and not math.isfinite(value)) \
                or (self.low is not None and value < self.low) or (self.high is not None and value > self.high)
            if bad:
                return f"{self.name}={value!r} is out of range: expected {self.valid_text()}"
        return None

    def when_changeable(self) -> str:
        if self.read_only:
            return "at start-up"
        return "live" if self.live else "when unconfigured"


class ParamTable:
    """The ordered parameter rows of one node."""

    def __init__(self, node_name: str, params: Iterable[Param], lifecycle: bool = False):
        self.node_name = node_name
        self.params: dict[str, Param] = {}
        for p in params:
            if p.name in self.params:
                raise ValueError(f"{node_name}: parameter {p.name!r} listed twice")
            self.params[p.name] = p
        self.lifecycle = lifecycle

    def __iter__(self):
        return iter(self.params.values())

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def __getitem__(self, name: str) -> Param:
        return self.params[name]

    def names(self) -> list[str]:
        return list(self.params)

    # ------------------------------------------------------------------ ROS side
    def descriptor(self, p: Param, with_range: bool = False, read_only: bool | None = None):
        from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

        d = ParameterDescriptor(name=p.name, description=p.description,
                                read_only=p.read_only if read_only is None else read_only,
                                additional_constraints=p.valid_text())
        if with_range and _rangeable(p):
            if isinstance(p.default, int):
                d.integer_range = [IntegerRange(from_value=int(p.low) if p.low is not None else -2 ** 62,
                                                to_value=int(p.high) if p.high is not None else 2 ** 62, step=1)]
            else:
                d.floating_point_range = [FloatingPointRange(
                    from_value=float(p.low) if p.low is not None else -math.inf,
                    to_value=float(p.high) if p.high is not None else math.inf, step=0.0)]
        return d

    def declare(self, node) -> dict[str, Any]:
        """Declare every row on `node`; returns {name: value} after overrides (--ros-args -p, params file)."""
        from rclpy.exceptions import InvalidParameterValueException

        values = {}
        for p in self:
            # declared writable and without range first: the start value is never refused here
            node.declare_parameter(p.name, p.default, self.descriptor(p, read_only=False))
            declared_type = node.describe_parameter(p.name).type
            full, plain = self.descriptor(p, with_range=True), self.descriptor(p)
            full.type = plain.type = declared_type
            try:
                node.set_descriptor(p.name, full)
            except InvalidParameterValueException:  # out of range: the node's check says why
                node.set_descriptor(p.name, plain)
            values[p.name] = node.get_parameter(p.name).value
        return values

    def check(self, name: str, value) -> str | None:
        p = self.params.get(name)
        return None if p is None else p.check(value)

    def check_all(self, values: dict[str, Any]) -> list[str]:
        """Reasons for every invalid value in `values` (e.g. the start-up values)."""
        return [r for r in (self.check(k, v) for k, v in values.items()) if r]

    def check_change(self, name: str, value, configured: bool) -> str | None:
        """Why a set_parameters of `name` is refused now, or None to accept it."""
        p = self.params.get(name)
        if p is None:
            return None  # use_sim_time and friends: rclpy's business
        if configured and not p.live and not p.read_only:
            return (f"{name} cannot change while the node is configured (it needs a reconfigure): "
                    f"deactivate and cleanup {self.node_name}, set {name}, then configure again")
        return p.check(value)

    # ------------------------------------------------------------------ text
    def help_text(self, prog: str) -> str:
        lines = [f"usage: {prog} [--ros-args -p NAME:=VALUE ... | --params-file FILE]", "",
                 f"{self.node_name} parameters (default, valid values, when it may change):"]
        for p in self:
            valid = p.valid_text()
            lines.append(f"  {p.name} = {_fmt(p.default)}" + (f"  [{valid}]" if valid else "")
                         + f"  ({p.when_changeable()})")
            lines.append(f"      {p.description}")
        lines += ["", "When it may change: live = set_parameters while running, applied from the next tick; "
                  + ("when unconfigured = only while the node is unconfigured (cleanup, set, configure); "
                     if self.lifecycle else "")
                  + "at start-up = read once when the node starts."]
        return "\n".join(lines)

    def markdown(self) -> str:
        rows = ["| parameter | default | valid values | changes | description |", "|---|---|---|---|---|"]
        for p in self:
            rows.append(f"| `{p.name}` | `{_fmt(p.default)}` | {_md(p.valid_text()) or 'any'} | "
                        f"{p.when_changeable()} | {_md(p.description)} |")
        return "\n".join(rows)


def _rangeable(p: Param) -> bool:
    """A numeric scalar row whose whole valid set is one range (rclpy can enforce it)."""
    return (not p.special and not p.choices and (p.low is not None or p.high is not None)
            and isinstance(p.default, (int, float)) and not isinstance(p.default, bool))


def _fmt(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def help_requested(argv: list[str]) -> bool:
    """-h/--help before any --ros-args (ROS arguments are left alone)."""
    for a in argv:
        if a == "--ros-args":
            return False
        if a in ("-h", "--help"):
            return True
    return False


# ---------------------------------------------------------------------- docs/ros.md
NODE_MODULES = ("sim_node", "demonstrator_node", "recorder_node", "er_node")
BEGIN, END = "<!-- BEGIN PARAMS {} (generated: python -m pvrnn_ros.ros.params --update docs/ros.md) -->", \
    "<!-- END PARAMS {} -->"


def tables() -> dict[str, ParamTable]:
    import importlib

    return {m: importlib.import_module(f"pvrnn_ros.ros.{m}").PARAMS for m in NODE_MODULES}


def render_docs(text: str) -> str:
    """`text` with every generated parameter section replaced by the current table."""
    for name, table in tables().items():
        begin, end = BEGIN.format(name), END.format(name)
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise ValueError(f"docs: no section {begin!r} ... {end!r}")
        text = text[:i] + begin + "\n" + table.markdown() + "\n" + text[j:]
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m pvrnn_ros.ros.params",
                                     description="print the nodes' parameter tables, or regenerate them in a doc")
    parser.add_argument("--update", metavar="DOC", help="rewrite the generated sections of DOC (docs/ros.md)")
    args = parser.parse_args(argv)
    if args.update:
        path = Path(args.update)
        path.write_text(render_docs(path.read_text()))
        print(f"updated {path}")
        return 0
    for name, table in tables().items():
        print(f"## {name}\n\n{table.markdown()}\n")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
