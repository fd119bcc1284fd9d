"""Hostile input against a real daphne server: every frame gets a typed answer, the server
never crashes or logs an unhandled exception, and oversized frames are refused."""

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.servers import Server, running

SERVER_FRAMES = {"connection_established", "ack", "resume_complete", "error", "pong"}
RUN_EVENTS = {
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "partial_result",
    "agent_error",
    "agent_completed",
}
ERROR_CODES = {
    "bad_request",
    "protocol_error",
    "run_in_progress",
    "run_not_active",
    "rate_limited",
    "unavailable",
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
frame_types = st.sampled_from(["user_message", "cancel", "resume", "ping", "bogus", "", None, 3])
shaped = st.fixed_dictionaries(
    {"type": frame_types},
    optional={
        "text": json_values | st.text(st.characters(exclude_categories=["Cs"]), max_size=300),
        "client_msg_id": json_values | st.text(max_size=80),
        "run_id": json_values | st.uuids().map(str),
        "after_seq": json_values | st.integers(min_value=-5, max_value=10**20),
    },
)
frames = st.one_of(
    shaped.map(json.dumps),
    json_values.map(json.dumps),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=200),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=5000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=300).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.just(json.dumps({"type": "user_message", "text": "x" * 70_000, "client_msg_id": "big"})),
)


class Socket:
    """A real WebSocket client that reconnects after the server closed it (4400, 4429)."""

    def __init__(self, server: Server, token: str, thread_id: str) -> None:
        self.server = server
        self.url = f"{server.ws}/ws/chat/{thread_id}/"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.ws: ClientConnection | None = None
        self.closes: list[int] = []
        self.stack = contextlib.ExitStack()

    def get(self) -> ClientConnection:
        if self.ws is None:
            self.ws = self.stack.enter_context(
                connect(self.url, additional_headers=self.headers, max_size=None)
            )
            hello = json.loads(self.ws.recv(timeout=10))
            assert hello["type"] == "connection_established"
        return self.ws

    def exchange(self, frame: str | bytes) -> list[dict[str, Any]]:
        """Sends a frame and then a ping; returns every frame received before the pong."""
        ws = self.get()
        answers: list[dict[str, Any]] = []
        try:
            ws.send(frame)
            ws.send('{"type":"ping"}')
            while True:
                answer = json.loads(ws.recv(timeout=10))
                if answer == {"type": "pong"}:
                    return answers
                answers.append(answer)
        except ConnectionClosed:
            assert ws.close_code in (4400, 4429), (ws.close_code, self.server.log_tail(40))
            self.closes.append(ws.close_code)
            self.ws = None
            return answers


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running(env={"WS_RATE_MESSAGES_PER_MINUTE": "1000"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def socket(server: Server) -> Iterator[Socket]:
    token = server.make_user("fuzzer")
    status, thread = server.api("POST", "/api/threads/", token, {"title": "fuzz"})
    assert status == 201
    sock = Socket(server, token, thread["id"])
    with sock.stack:
        yield sock


def typed(answer: dict[str, Any]) -> bool:
    if answer.get("type") in RUN_EVENTS:
        return isinstance(answer.get("seq"), int)
    if answer.get("type") == "error":
        return answer.get("code") in ERROR_CODES and isinstance(answer.get("message"), str)
    return answer.get("type") in SERVER_FRAMES


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(frame=frames)
def test_every_frame_gets_a_typed_answer(socket: Socket, frame: str | bytes) -> None:
    answers = socket.exchange(frame)
    assert all(typed(a) for a in answers), answers


def test_server_survived_without_unhandled_exceptions(server: Server, socket: Socket) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{server.http}/healthz", timeout=5) as response:
        assert response.status == 200
    log = server.log_text()
    at = log.find("Traceback")
    assert at < 0, log[max(0, at - 1500) : at + 3000]
    assert " ERROR " not in log, server.log_tail(60)


def drain(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=10)


def test_oversized_messages_are_refused_by_the_server(server: Server, socket: Socket) -> None:
    if socket.ws is not None:  # a fresh socket: the fuzzing may have used up its invalid frames
        socket.ws.close()
        socket.ws = None
    ws = socket.get()
    ws.send(json.dumps({"type": "user_message", "text": "y" * 100_000, "client_msg_id": "a"}))
    answer = json.loads(ws.recv(timeout=10))
    assert (answer["code"], "65536" in answer["message"]) == ("bad_request", True)
    ws.send("z" * 2_000_000)  # past the server's message limit: the server drops the socket
    with pytest.raises(ConnectionClosed):
        drain(ws)
    # autobahn drops the connection on the oversized message (1009, or 1006 when it does
    # not wait for the close handshake); the server itself lives on:
    assert ws.close_code in (1006, 1009)
    socket.ws = None
    assert socket.exchange('{"type":"ping"}') == []
