"""Managed-node helpers: a client for a node's lifecycle services, and start-up transitions.

A managed node offers `<node>/change_state`, `<node>/get_state` and
`<node>/get_available_transitions` (lifecycle_msgs). `LifecycleClient` calls them; it is what
`pvrnn-ros lifecycle`, `pvrnn-ros up` and the tests use (there is no `ros2 lifecycle` here).
"""
from __future__ import annotations

import time

__all__ = ["GOALS", "LifecycleClient", "TRANSITIONS", "autostart", "call", "state_label"]

# the transition labels a user types; rcl resolves "shutdown" from whichever state the node is in
TRANSITIONS = ("configure", "activate", "deactivate", "cleanup", "shutdown")
# where each transition leads (the services report the intermediate transition state)
GOALS = {"configure": "inactive", "activate": "active", "deactivate": "inactive", "cleanup": "unconfigured",
         "shutdown": "finalized"}
# a state query unanswered this long is sent again (see `call`)
QUERY_RESEND_S = 2.0


def _wait_any(futures, end: float, executor=None) -> None:
    """Until one of `futures` is done or `end` (monotonic s): spin `executor` in short slices, so an
    earlier request's late answer is seen too, or sleep while another thread spins the node."""
    while time.monotonic() < end and not any(f.done() for f in futures):
        if executor is not None:
            executor.spin_once(timeout_sec=max(0.0, min(0.05, end - time.monotonic())))
        else:
            time.sleep(0.01)


def call(node, client, request, timeout: float, executor=None, resend: float | None = None):
    """Call a service and wait for the answer: spin `executor` if given, else wait for the thread that
    spins `node` elsewhere. None on timeout. With `resend` (s), a request still unanswered after that
    long is sent again, until `timeout`: DDS can drop a service's answer when the server has not yet
    matched this client's reply reader (wait_for_service only sees the request side), and an idempotent
    query then hangs to its timeout. Only safe for requests that do not change the server's state."""
    deadline = time.monotonic() + timeout
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    futures = []
    while True:
        futures.append(client.call_async(request))
        left = deadline - time.monotonic()
        if left <= 0:
            break
        wait = left if resend is None else min(left, resend)
        _wait_any(futures, time.monotonic() + wait, executor)
        answered = [f for f in futures if f.done() and f.result() is not None]
        if answered:
            for f in futures:
                if not f.done():
                    client.remove_pending_request(f)
            return answered[0].result()
        if resend is None or time.monotonic() >= deadline:
            break
    for f in futures:
        if not f.done():
            client.remove_pending_request(f)
    return None


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
        """True once all three of the node's lifecycle services are up, within `timeout` in all."""
        deadline = time.monotonic() + timeout
        return all(c.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic()))
                   for c in (self.state_client, self.change_client, self.available_client))

    def state(self, timeout: float = 5.0) -> str | None:
        """The node's state label ('unconfigured', 'inactive', 'active', 'finalized'), None if no answer."""
        r = call(self.node, self.state_client, self._GetState.Request(), timeout, self.executor, QUERY_RESEND_S)
        return None if r is None else r.current_state.label

    def available(self, timeout: float = 5.0) -> list[tuple[str, str]] | None:
        """(transition label, goal state) pairs possible from the current state."""
        r = call(self.node, self.available_client, self._GetAvailable.Request(), timeout, self.executor,
                 QUERY_RESEND_S)
        if r is None:
            return None
        return [(t.transition.label, t.goal_state.label) for t in r.available_transitions]

    def change(self, transition: str, timeout: float = 60.0) -> bool | None:
        """Trigger `transition` (a label from TRANSITIONS); True on success, False if refused or failed,
        None if the node did not answer within `timeout` (configure may load a model: be generous).
        A change is never sent twice. If its answer is lost (see `call`), the node's state is asked
        every few seconds, and reaching the transition's goal state counts as success."""
        if transition not in TRANSITIONS:
            raise ValueError(f"unknown transition {transition!r}; expected one of {', '.join(TRANSITIONS)}")
        deadline = time.monotonic() + timeout
        start = self.state(timeout=min(timeout, 5.0))
        req = self._ChangeState.Request()
        req.transition.label = transition
        if not self.change_client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
            return None
        future = self.change_client.call_async(req)

        def reached() -> bool:  # the goal state, reached from another one: the lost answer was a yes
            now = self.state(timeout=max(0.1, min(QUERY_RESEND_S, deadline - time.monotonic())))
            return now is not None and now != start and now == GOALS[transition]

        while not future.done() and time.monotonic() < deadline:
            _wait_any([future], min(deadline, time.monotonic() + QUERY_RESEND_S), self.executor)
            if not future.done() and reached():
                self.change_client.remove_pending_request(future)
                return True
        if future.done() and future.result() is not None:
            return bool(future.result().success)
        if not future.done():
            self.change_client.remove_pending_request(future)
        return True if reached() else None

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
