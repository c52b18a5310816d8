"""LifecycleClient when DDS drops a service's answer: queries are sent again, a transition is never
sent twice and is confirmed from the node's state. Fake clients stand in for DDS so that the lost
answer happens every time (over real DDS it is rare: test_lifecycle_cli.py covers the real path)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

pytest.importorskip("lifecycle_msgs")

from pvrnn_ros.ros import lifecycle  # noqa: E402
from pvrnn_ros.ros.lifecycle import LifecycleClient, call  # noqa: E402


class _Future:
    def __init__(self):
        self._result = None

    def done(self):
        return self._result is not None

    def result(self):
        return self._result


class _FakeClient:
    """Answers each request with `answer(request)` unless the request's index is in `lose`."""

    def __init__(self, answer, lose=()):
        self.answer, self.lose, self.sent, self.removed = answer, set(lose), [], 0

    def wait_for_service(self, timeout_sec):
        return True

    def call_async(self, request):
        f = _Future()
        if len(self.sent) not in self.lose:
            f._result = self.answer(request)
        self.sent.append(request)
        return f

    def remove_pending_request(self, future):
        self.removed += 1


def _state_answer(label):
    return SimpleNamespace(current_state=SimpleNamespace(label=label))


def test_a_query_whose_answer_is_lost_is_sent_again(monkeypatch):
    client = _FakeClient(lambda r: _state_answer("inactive"), lose={0})
    t0 = time.monotonic()
    r = call(None, client, object(), timeout=5.0, resend=0.2)
    assert r is not None and r.current_state.label == "inactive"
    assert len(client.sent) == 2 and client.removed == 1  # the lost one is dropped, not leaked
    assert time.monotonic() - t0 < 2.0


def test_without_resend_a_lost_answer_times_out_once():
    client = _FakeClient(lambda r: _state_answer("inactive"), lose={0})
    t0 = time.monotonic()
    assert call(None, client, object(), timeout=0.3) is None
    assert len(client.sent) == 1 and 0.25 < time.monotonic() - t0 < 2.0


def _client_with(change_answer_lost: bool, states: list[str], success=True):
    """A LifecycleClient on fakes: get_state answers the labels in `states` one after another (the
    last one repeats); change_state answers `success` or loses its answer."""
    node = SimpleNamespace(create_client=lambda *a, **k: None)
    lc = LifecycleClient(node, "/er_node")
    it = iter(states)
    last = [states[0]]

    def next_state(_):
        last[0] = next(it, last[0])
        return _state_answer(last[0])

    lc.state_client = _FakeClient(next_state)
    lc.change_client = _FakeClient(lambda r: SimpleNamespace(success=success),
                                   lose={0} if change_answer_lost else ())
    return lc


def test_a_transition_whose_answer_is_lost_is_confirmed_from_the_state(monkeypatch):
    monkeypatch.setattr(lifecycle, "QUERY_RESEND_S", 0.1)
    lc = _client_with(True, ["inactive", "inactive", "active"])
    assert lc.change("activate", timeout=5.0) is True
    assert len(lc.change_client.sent) == 1  # never sent twice


def test_a_lost_answer_without_the_goal_state_is_no_answer(monkeypatch):
    monkeypatch.setattr(lifecycle, "QUERY_RESEND_S", 0.1)
    lc = _client_with(True, ["unconfigured"])  # the node never moves
    t0 = time.monotonic()
    assert lc.change("activate", timeout=0.6) is None
    assert len(lc.change_client.sent) == 1 and time.monotonic() - t0 < 3.0


def test_answers_that_arrive_are_taken_as_they_are(monkeypatch):
    monkeypatch.setattr(lifecycle, "QUERY_RESEND_S", 0.1)
    assert _client_with(False, ["inactive", "active"]).change("activate", timeout=2.0) is True
    refused = _client_with(False, ["unconfigured"], success=False)
    assert refused.change("activate", timeout=2.0) is False
    with pytest.raises(ValueError, match="unknown transition 'jump'"):
        refused.change("jump")
