"""Managed-node helpers: a client for a node's lifecycle services, and start-up transitions.

A managed node offers `<node>/change_state`, `<node>/get_state` and
`<node>/get_available_transitions` (lifecycle_msgs). `LifecycleClient` calls them; it is what
`pvrnn-ros lifecycle`, `pvrnn-ros up` and the tests use (there is no `ros2 lifecycle` here).
"""
from __future__ import annotations

import time

__all__ = ["LifecycleClient", "TRANSITIONS", "autostart", "call", "state_label"]

# the transition labels a user types; rcl resolves "shutdown" from whichever state the node is in
TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")


def call(node, client, request, timeout: float, executor=None):
    """Call a service and wait for the answer: spin `executor` if given, else wait for the thread that
    spins `node` elsewhere. None on timeout."""
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    future = client.call_async(request)
    if executor is not None:
        executor.spin_until_future_complete(future, timeout_sec=timeout)
    else:
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
    return future.result() if future.done() else None


class LifecycleClient:
    """Lifecycle service client for one managed node, e.g. `LifecycleClient(node, "er_node")`."""

    def __init__(self, node, target: str, executor=None):
        from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState

        self.node = node
        self.target = target.rstrip("/")
        self.executor = executor
        self._ChangeState, self._GetState, self._GetAvailable = ChangeState, GetState, GetAvailableTransitions
        self.change_client = node.create_client(ChangeState, f"{self.target}/change_state")
        self.state_client = node.create_client(GetState, f"{self.target}/get_state")
        self.available_client = node.create_client(GetAvailableTransitions, f"{self.target}/get_available_transitions")

    def wait(self, timeout: float) -> bool:
        """True once the node's lifecycle services are up."""
        return self.state_client.wait_for_service(timeout_sec=timeout)

    def state(self, timeout: float = 5.0) -> str | None:
        """The node's state label ('unconfigured', 'inactive', 'active', 'finalized'), None if no answer."""
        r = call(self.node, self.state_client, self._GetState.Request(), timeout, self.executor)
        return None if r is None else r.current_state.label

    def available(self, timeout: float = 5.0) -> list[tuple[str, str]] | None:
        """(transition label, goal state) pairs possible from the current state."""
        r = call(self.node, self.available_client, self._GetAvailable.Request(), timeout, self.executor)
        if r is None:
            return None
        return [(t.transition.label, t.goal_state.label) for t in r.available_transitions]

    def change(self, transition: str, timeout: float = 60.0) -> bool | None:
        """Trigger `transition` (a label from TRANSITIONS); True on success, False if refused or failed,
        None if the node did not answer within `timeout` (configure may load a model: be generous)."""
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; expected one of {', '.join(TRANSITIONS)}")
        req = self._ChangeState.Request()
        req.transition.label = transition
        r = call(self.node, self.change_client, req, timeout, self.executor)
        return None if r is None else bool(r.success)

    def destroy(self) -> None:
        for c in (self.change_client, self.state_client, self.available_client):
            self.node.destroy_client(c)


def state_label(node) -> str:
    """The current state label of a LifecycleNode in this process."""
    return node._state_machine.current_state[1]


def autostart(node) -> bool:
    """configure + activate a LifecycleNode in-process (its `autostart` parameter); False if either
    failed (the node then stays alive in the state the failure left it, and says why in its log)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS
