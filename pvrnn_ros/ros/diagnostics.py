"""A small /diagnostics updater (diagnostic_updater is not a wheel here) and the health rules.

`DiagnosticsUpdater(node)` publishes one `diagnostic_msgs/DiagnosticArray` on `/diagnostics` every
`period` s (a steady timer, so it reports even while a sim clock stands still), one status per task
named `"<node>: <task>"`, stamped with the node clock (sim time under use_sim_time). A task is a
function that fills a `Report` (level, message, key/values); a task that raises reports ERROR
with the exception instead of stopping the others.

The level rules live here as plain functions so the nodes only collect figures:
  OK     all well
  WARN   ticks use more than half the period, or the input is late
  ERROR  input stale while commanding, or ticks missed their deadline
  STALE  the task has nothing to report (no ticks, no input, not active)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["OK", "WARN", "ERROR", "STALE", "LEVEL_NAMES", "Report", "DiagnosticsUpdater", "RateMeter",
           "tick_health", "input_health", "rtf_health"]

OK, WARN, ERROR, STALE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR", STALE: "STALE"}


@dataclass
class Report:
    level: int = OK
    message: str = ""
    values: list[tuple[str, str]] = field(default_factory=list)

    def set(self, level: int, message: str) -> None:
        self.level, self.message = level, message

    def add(self, key: str, value) -> None:
        if isinstance(value, float):
            value = f"{value:.4g}"
        self.values.append((key, str(value)))


class RateMeter:
    """Events per second between two `rate()` calls (monotonic wall time)."""

    def __init__(self):
        self.count = 0
        self._last_count = 0
        self._last_t = time.monotonic()

    def tick(self, n: int = 1) -> None:
        self.count += n

    def rate(self) -> tuple[float, int]:
        """(events per second, events) since the previous call."""
        now = time.monotonic()
        n = self.count - self._last_count
        dt = max(now - self._last_t, 1e-9)
        self._last_count, self._last_t = self.count, now
        return n / dt, n


def tick_health(latencies_ms, period_ms: float, new_ticks: int, new_misses: int) -> tuple[int, str]:
    """Level and message of a periodic computation from its recent latencies (ms) and the ticks and
    deadline misses since the previous report."""
    if new_misses > 0:
        return ERROR, f"{new_misses} deadline misses since the last report (period {period_ms:.0f} ms)"
    if new_ticks == 0:
        return STALE, "no ticks since the last report"
    lat = np.asarray(latencies_ms, dtype=float)
    median = float(np.median(lat)) if lat.size else 0.0
    if median > 0.5 * period_ms:
        return WARN, f"ticks use {median:.1f} ms, more than half the {period_ms:.0f} ms period"
    return OK, f"ticks {median:.1f} ms of {period_ms:.0f} ms"


def input_health(age_s: float | None, stale_timeout: float, commanding: bool) -> tuple[int, str]:
    """Level and message of an input stream from the age of its newest sample."""
    if age_s is None:
        return STALE, "no input received yet"
    if age_s > stale_timeout:
        what = "commands hold" if commanding else "ER paused"
        return (ERROR if commanding else WARN), f"input stale: newest sample {age_s:.2f} s old ({what})"
    if age_s > 0.5 * stale_timeout:
        return WARN, f"input late: newest sample {age_s:.2f} s old (stale after {stale_timeout:g} s)"
    return OK, "input fresh"


def rtf_health(sim_advanced: float, wall_elapsed: float, target: float) -> tuple[int, str, float]:
    """Level, message and measured real-time factor of a simulator over one report interval."""
    if sim_advanced < 0:
        return STALE, "sim time jumped back (reset)", 0.0
    measured = sim_advanced / max(wall_elapsed, 1e-9)
    if measured == 0.0:
        return STALE, "sim time did not advance", 0.0
    if target > 0 and measured < 0.9 * target:
        return WARN, f"real-time factor {measured:.2f} below the requested {target:g}", measured
    return OK, f"real-time factor {measured:.2f}" + (f" (requested {target:g})" if target > 0 else
                                                     " (as fast as possible)"), measured


class DiagnosticsUpdater:
    """Publishes every task's `Report` on /diagnostics each `period` s."""

    def __init__(self, node, period: float = 1.0, hardware_id: str = ""):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.clock import Clock, ClockType

        self.node = node
        self.hardware_id = hardware_id
        self.tasks: list[tuple[str, Callable[[Report], None]]] = []
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period, self.publish, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def add(self, task: str, fn: Callable[[Report], None]) -> None:
        self.tasks.append((task, fn))

    def collect(self) -> list[tuple[str, Report]]:
        out = []
        for task, fn in self.tasks:
            r = Report()
            try:
                fn(r)
            except Exception as exc:  # noqa: BLE001 - one broken task must not hide the others
                r = Report(ERROR, f"diagnostic task failed: {type(exc).__name__}: {exc}")
            out.append((task, r))
        return out

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        name = self.node.get_name()
        for task, r in self.collect():
            arr.status.append(DiagnosticStatus(
                level=bytes([r.level]), name=f"{name}: {task}", message=r.message, hardware_id=self.hardware_id,
                values=[KeyValue(key=k, value=v) for k, v in r.values]))
        self.pub.publish(arr)
