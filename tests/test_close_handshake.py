"""A close the server starts reaches a client that is slow to answer it, with its code and
its `error` frame (netra_site/autobahn_timers.py), on a real daphne server; and the timer fix
itself, in-process."""

import json
import math
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from txaio._common import _BatchedTimer
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from chat.checks import check_daphne_timers
from netra_site import autobahn_timers
from tests.servers import Server

# The first invalid frame is refused with 4400: the close comes at a time the test picks.
SERVER_ENV = {"WS_MAX_INVALID_FRAMES": "1"}


class SlowClient:
    """A WebSocket client that reads only when told to (websockets' sans-I/O protocol on a
    blocking socket), so that it can be late with its close reply on purpose."""

    def __init__(self, server: Server, thread_id: str, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        self.protocol = ClientProtocol(parse_uri(f"{server.ws}/ws/chat/{thread_id}/"))
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        self.protocol.send_request(request)
        self.flush()
        self.texts: list[str] = []
        self.read_until(lambda: bool(self.texts))  # connection_established

    def flush(self) -> None:
        """Sends what the protocol has queued (frames, a close reply)."""
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def read_until(self, done: Any) -> None:
        """Reads and handles frames until `done()` or the connection ends."""
        while not done():
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    self.texts.append(bytes(event.data).decode())
            self.flush()
            if not data:
                return

    def close_received(self) -> Close | None:
        """The server's close frame, once read."""
        return self.protocol.close_rcvd


@pytest.fixture
def slow_client(server: Server) -> Iterator[SlowClient]:
    token = server.make_user("slow-closer")
    status, thread = server.api("POST", "/api/threads/", token, {"title": "slow close"})
    assert status == 201
    client = SlowClient(server, thread["id"], token)
    yield client
    client.sock.close()


def test_a_client_slow_to_answer_the_close_still_gets_the_code_and_the_error(
    slow_client: SlowClient,
) -> None:
    """The refusal goes out at .3 of a second; the client reads it 0.95 s later. Before the
    fix, daphne reset the connection at the next whole second, 0.7 s after the close, and
    the client lost both the `error` frame and the 4400 (it saw 1006)."""
    while not 0.25 <= time.time() % 1 <= 0.35:
        time.sleep(0.01)
    sent = time.time()
    slow_client.protocol.send_text(b"not json")
    slow_client.flush()
    time.sleep(max(0.0, math.floor(sent) + 1.25 - time.time()))
    try:
        slow_client.read_until(lambda: slow_client.close_received() is not None)
    except ConnectionResetError as exc:
        raise AssertionError(
            "daphne reset the connection before the client read the close: its closing "
            "handshake timed out in less than the 1 s it is set to"
        ) from exc
    close = slow_client.close_received()
    assert close is not None and close.code == 4400, close
    errors = [frame for frame in map(json.loads, slow_client.texts) if frame["type"] == "error"]
    assert [frame["code"] for frame in errors] == ["protocol_error"], slow_client.texts


def test_the_timer_waits_at_least_as_long_as_asked_once_installed() -> None:
    asked = _BatchedTimer.call_later
    try:
        autobahn_timers.install()
        assert autobahn_timers.shortest_wait(_BatchedTimer) >= 1.0
        assert autobahn_timers.install() is False  # once is enough
    finally:
        _BatchedTimer.call_later = asked  # type: ignore[method-assign]


def test_a_timer_that_already_waits_long_enough_is_left_alone() -> None:
    class Exact:
        def __init__(self, bucket_ms: float, chunk: int, **clock: Any) -> None:
            self.clock = clock

        def call_later(self, delay: float, func: Any) -> Any:
            return self.clock["delayed_call_creator"](delay, func)

    assert autobahn_timers.shortest_wait(Exact) == 1.0
    assert autobahn_timers.install(Exact) is False


def test_the_installed_txaio_is_the_timer_the_check_knows() -> None:
    assert check_daphne_timers() == []


def test_a_timer_that_changed_its_arguments_is_check_error_e003(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Changed:
        def __init__(self, bucket_ms: float) -> None:
            self.bucket_ms = bucket_ms

    monkeypatch.setattr(autobahn_timers, "batched_timer", lambda: Changed)
    errors = check_daphne_timers()
    assert [e.id for e in errors] == ["netra.E003"]
    assert "Changed no longer takes the probe" in errors[0].msg
    with pytest.raises(autobahn_timers.TimerChanged):
        autobahn_timers.install(Changed)
