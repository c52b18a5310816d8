"""Shared node boilerplate: main() runner, keyed throttled warnings, parameter helpers."""
from __future__ import annotations

import time
from typing import Callable

__all__ = ["run_node", "request_exit", "Throttle", "param", "HAVE_STD_SRVS"]

try:  # std_srvs is optional: `pip install ros-std-srvs` (part of the package's `ros` extra)
    from std_srvs.srv import Trigger  # noqa: F401

    HAVE_STD_SRVS = True
except ImportError:  # pragma: no cover - depends on the install
    HAVE_STD_SRVS = False


class Throttle:
    """Log at most once per `period` seconds per key (the key names the problem), counting repeats."""

    def __init__(self, logger, period: float = 2.0):
        self.logger = logger
        self.period = period
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, key: str, message: str) -> None:
        text = self._due(key, message)
        if text is not None:
            self.logger.warning(text)  # rclpy wants one severity per call site: one line per level

    def info(self, key: str, message: str) -> None:
        text = self._due(key, message)
        if text is not None:
            self.logger.info(text)

    def _due(self, key: str, message: str) -> str | None:
        now = time.monotonic()
        self._count[key] = self._count.get(key, 0) + 1
        last = self._last.get(key)
        if last is None or now - last >= self.period:
            n = self._count[key]
            self._last[key] = now
            self._count[key] = 0
            return message + (f" ({n} times since last report)" if n > 1 else "")
        return None


def param(node, name: str, default, description: str = ""):
    """declare_parameter + get value in one call (descriptor carries the description)."""
    from rcl_interfaces.msg import ParameterDescriptor

    node.declare_parameter(name, default, ParameterDescriptor(description=description))
    return node.get_parameter(name).value


def request_exit(node, code: int = 0) -> None:
    """Ask `run_node` to stop spinning `node` (from any callback)."""
    node.exit_code = code
    node._exit_requested = True


def run_node(factory: Callable[[], object], args=None, threads: int = 1, drain_s: float = 0.0,
             params=None, prog: str = "") -> int:
    """rclpy init -> node = factory() -> node.start_up() -> spin until SIGINT/SIGTERM or `request_exit`
    -> close -> shutdown.

    With `params` (the node's ParamTable), `-h`/`--help` before any `--ros-args` prints the
    parameters and returns without starting ROS.

    Signals are handled here (not by rclpy) so that a node can finish cleanly: after a signal
    the executor keeps taking already-received messages until it has been idle for `drain_s`
    seconds (or the node's `drain_s` attribute), then `node.close()` releases files and threads
    while the context is still valid, then rclpy shuts down.
    """
    import signal
    import sys
    import threading

    if params is not None:
        from .params import help_requested

        argv = list(sys.argv if args is None else args)[1:]
        if help_requested(argv):
            print(params.help_text(prog or params.node_name))
            return 0

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():  # second Ctrl-C: leave now
            raise KeyboardInterrupt
        stop.set()

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node = None
    executor = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        start_up = getattr(node, "start_up", None)
        if start_up is not None:  # e.g. a managed node's autostart transitions
            start_up()
        try:
            errors = Throttle(node.get_logger(), 5.0)
            while not stop.is_set() and not getattr(node, "_exit_requested", False) and rclpy.ok():
                try:
                    executor.spin_once(timeout_sec=0.1)
                except (KeyboardInterrupt, ExternalShutdownException):
                    raise
                except Exception as exc:  # noqa: BLE001 - a callback bug must not take the robot down
                    errors.warn(type(exc).__name__, f"callback raised {type(exc).__name__}: {exc}")
            drain = float(getattr(node, "drain_s", drain_s) or 0.0)
            if drain > 0 and rclpy.ok():
                idle_since = time.monotonic()
                deadline = idle_since + 10 * drain + 2.0
                while time.monotonic() - idle_since < drain and time.monotonic() < deadline:
                    before = getattr(node, "received", None)
                    executor.spin_once(timeout_sec=0.02)
                    if before is not None and getattr(node, "received", None) != before:
                        idle_since = time.monotonic()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        return int(getattr(node, "exit_code", 0) or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
        if executor is not None:
            executor.shutdown(timeout_sec=0.5)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001 - context already gone
                pass
        rclpy.try_shutdown()
        for s, h in previous.items():
            signal.signal(s, h)
