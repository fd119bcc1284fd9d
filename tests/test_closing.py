"""The table of how a socket ends, applied to a tracker (in memory, no socket)."""

import pytest
from prometheus_client import REGISTRY

from chat.closing import ENDINGS, End, record_ending
from chat.connections import TRANSITIONS, ConnectionTracker
from chat.errors import auth_timeout, internal_error, protocol_error, unavailable
from chat.models import ConnectionState as S

PATHS: dict[str, list[str]] = {
    S.CONNECTING: [],
    S.AUTHENTICATING: [S.AUTHENTICATING],
    S.CONNECTED: [S.AUTHENTICATING, S.CONNECTED],
    S.CLOSING: [S.AUTHENTICATING, S.CONNECTED, S.CLOSING],
    S.REJECTED: [S.AUTHENTICATING, S.REJECTED],
    S.FAILED: [S.AUTHENTICATING, S.CONNECTED, S.FAILED],
}


def tracker_in(state: str, close_code: int | None = None) -> ConnectionTracker:
    tracker = ConnectionTracker()
    for step in PATHS[state]:
        tracker.transition(step, "test")
    tracker.close_code = close_code
    return tracker


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_move_of_the_table_is_a_valid_transition() -> None:
    for why, ending in ENDINGS.items():
        for from_state, (to_state, _) in ending.moves.items():
            assert to_state in TRANSITIONS[from_state], (why, from_state, to_state)
            if ending.closed is not None:
                assert S.CLOSED in TRANSITIONS[to_state], (why, to_state)


def test_refusal_rejects_and_counts() -> None:
    tracker = tracker_in(S.AUTHENTICATING)
    rejected = sample("netra_ws_connections_total", outcome="rejected")
    timeouts = sample("netra_ws_auth_failures_total", code="auth_timeout")
    err = auth_timeout()
    assert record_ending(tracker, End.REFUSED, close_code=err.close_code, err=err)
    assert (tracker.state, tracker.close_code) == (S.REJECTED, 4408)
    assert sample("netra_ws_connections_total", outcome="rejected") == rejected + 1
    assert sample("netra_ws_auth_failures_total", code="auth_timeout") == timeouts + 1


def test_server_close_of_an_open_socket_waits_for_the_disconnect() -> None:
    tracker = tracker_in(S.CONNECTED)
    err = protocol_error("too many")
    assert record_ending(tracker, End.CLOSED, close_code=err.close_code, err=err)
    assert (tracker.state, tracker.close_code) == (S.CLOSING, 4400)
    assert tracker._pending[-1].reason == "protocol_error: too many"
    later = unavailable()
    assert not record_ending(tracker, End.CLOSED, close_code=later.close_code, err=later)
    assert (tracker.state, tracker.close_code) == (S.CLOSING, 4400)  # the code the client saw


@pytest.mark.parametrize("state", [S.CONNECTED, S.CLOSING, S.REJECTED])
def test_fault_fails_the_connection(state: str) -> None:
    tracker = tracker_in(state, close_code=None)
    assert record_ending(tracker, End.FAULT, close_code=4500, detail="websocket.receive: X")
    assert (tracker.state, tracker.close_code) == (S.FAILED, 4500)
    assert tracker._pending[-1].reason == "internal error during websocket.receive: X"
    assert not record_ending(tracker, End.FAULT, close_code=4500, err=internal_error())


def test_layer_lost_closes_out_at_once_and_counts() -> None:
    tracker = tracker_in(S.CONNECTED)
    before = sample("netra_channel_layer_errors_total", operation="receive")
    assert record_ending(tracker, End.LAYER_LOST, close_code=4503, detail="ConnectionError: x")
    assert (tracker.state, tracker.close_code) == (S.CLOSED, 4503)
    assert [p.to_state for p in tracker._pending[-2:]] == [S.FAILED, S.CLOSED]
    assert sample("netra_channel_layer_errors_total", operation="receive") == before + 1
    failed = tracker_in(S.FAILED, close_code=4500)
    assert record_ending(failed, End.LAYER_LOST, close_code=4503, detail="x")
    assert (failed.state, failed.close_code) == (S.CLOSED, 4500)


@pytest.mark.parametrize(
    ("state", "code", "first_move", "recorded"),
    [
        (S.CONNECTED, None, S.CLOSING, 1000),
        (S.CLOSING, 4400, S.CLOSED, 4400),
        (S.REJECTED, 4401, S.CLOSED, 4401),
        (S.AUTHENTICATING, None, S.FAILED, 1000),
        (S.CONNECTING, None, S.FAILED, 1000),
    ],
)
def test_client_gone_closes_out(
    state: str, code: int | None, first_move: str, recorded: int
) -> None:
    tracker = tracker_in(state, close_code=code)
    assert record_ending(tracker, End.CLIENT_GONE, close_code=1000, detail="1000")
    assert (tracker.state, tracker.close_code) == (S.CLOSED, recorded)
    assert tracker._pending[len(PATHS[state])].to_state == first_move
    assert tracker._pending[-1].reason == "socket closed (1000)"
