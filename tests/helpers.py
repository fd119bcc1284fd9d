"""Test helpers: real sockets through the real ASGI application, run collection, metrics."""

import asyncio
import json
import os
import shutil
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from prometheus_client import REGISTRY, Metric
from prometheus_client.parser import text_string_to_metric_families

from chat.models import Thread
from chat.services import thread_create, token_create
from tests.servers import Server

ORIGIN = "http://127.0.0.1:8000"


def require(service: str, available: bool, reason: str) -> None:
    """Skips loudly when a service is missing, or fails if NETRA_REQUIRE names it."""
    if available:
        return
    required = {s.strip() for s in os.environ.get("NETRA_REQUIRE", "").split(",") if s.strip()}
    if service in required:
        pytest.fail(f"NETRA_REQUIRE names {service}, but {reason}")
    pytest.skip(f"SKIPPED LOUDLY: {service} unavailable: {reason}")


def have_binary(name: str) -> bool:
    """True if an executable is on PATH."""
    return shutil.which(name) is not None


def make_user(username: str, *, active: bool = True, password: str = "pw-Secret-123") -> Any:
    """Creates a user (sync)."""
    user = get_user_model().objects.create_user(username=username, password=password)
    if not active:
        user.is_active = False
        user.save()
    return user


def make_thread(user: Any, title: str = "test", agent: str | None = None) -> Thread:
    """Creates a thread (sync), answered by `agent` (default: the default agent); a named
    agent need not be configured yet (a fixture may register it later)."""
    if agent is None:
        return thread_create(owner=user, title=title)
    return Thread.objects.create(owner=user, title=title, agent=agent)


def make_token(user: Any) -> str:
    """Creates an API token and returns it raw (sync)."""
    return token_create(user=user, name="test")[1]


def session_cookie(user: Any) -> str:
    """Logs the user in through Django's test client and returns the Cookie header (sync)."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


def communicator(
    thread_id: Any,
    *,
    token: str | None = None,
    cookie: str | None = None,
    origin: str | None = ORIGIN,
    query: str = "",
) -> WebsocketCommunicator:
    """Returns a communicator on the full ASGI application (Origin check, sessions, routing)."""
    from netra_site.asgi import application

    headers: list[tuple[bytes, bytes]] = []
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    path = f"/ws/chat/{thread_id}/" + (f"?{query}" if query else "")
    return WebsocketCommunicator(application, path, headers=headers)


async def open_socket(thread_id: Any, **kwargs: Any) -> tuple[WebsocketCommunicator, dict]:
    """Connects and returns the communicator and its first frame."""
    comm = communicator(thread_id, **kwargs)
    connected, _ = await comm.connect(timeout=10)
    assert connected, "the handshake was refused before accept"
    first = await comm.receive_json_from(timeout=10)
    return comm, first


async def expect_close(comm: WebsocketCommunicator, timeout: float = 5) -> int:
    """Waits for the server's close and returns its code."""
    message = await comm.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", message
    return int(message.get("code", 1000))


async def receive_until(
    comm: WebsocketCommunicator, predicate: Any, timeout: float = 15
) -> list[dict[str, Any]]:
    """Receives frames until one satisfies `predicate`; returns all of them."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out; got {[f.get('type') for f in frames]}")
        frame = await comm.receive_json_from(timeout=remaining)
        frames.append(frame)
        if predicate(frame):
            return frames


def completed(frame: dict[str, Any]) -> bool:
    """True for agent_completed."""
    return frame.get("type") == "agent_completed"


def run_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run events among frames (those with a seq)."""
    return [f for f in frames if "seq" in f]


async def send(comm: WebsocketCommunicator, frame: dict[str, Any]) -> None:
    """Sends one JSON frame."""
    await comm.send_to(text_data=json.dumps(frame))


def message(text: str, client_msg_id: str | None = None) -> dict[str, Any]:
    """A user_message frame."""
    return {
        "type": "user_message",
        "text": text,
        "client_msg_id": client_msg_id or uuid.uuid4().hex,
    }


def make_sockets_slow(monkeypatch: pytest.MonkeyPatch, delay: float = 0.02) -> None:
    """Makes every socket write take `delay`, like a client on a slow network, so that the
    channel layer's queue fills up during a burst and drops messages at capacity."""
    from chat.consumers import ChatConsumer

    real_send = ChatConsumer.send

    async def slow_send(self: Any, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(delay)
        await real_send(self, *args, **kwargs)

    monkeypatch.setattr(ChatConsumer, "send", slow_send)


def break_layer_receive(monkeypatch: pytest.MonkeyPatch, layer: Any) -> asyncio.Event:
    """Makes `layer`'s receive fail like a channel-layer server that went away, from the
    moment the returned event is set: a receive under way then raises ConnectionError."""
    real_receive = layer.receive
    broken = asyncio.Event()

    async def receive(channel: str) -> Any:
        message = asyncio.ensure_future(real_receive(channel))
        failure = asyncio.ensure_future(broken.wait())
        done, _ = await asyncio.wait({message, failure}, return_when=asyncio.FIRST_COMPLETED)
        if message in done:
            failure.cancel()
            return message.result()
        message.cancel()
        raise ConnectionError("the channel layer's server went away")

    monkeypatch.setattr(layer, "receive", receive)
    return broken


def fail_event_writes(
    monkeypatch: pytest.MonkeyPatch,
    failures: dict[str, int],
    message: str = "connection lost",
    *,
    skip: int = 0,
) -> list[str]:
    """Makes the database refuse `failures[type]` events of each type, after letting the
    first `skip` of that type through: every attempt to insert such an event raises
    OperationalError (its batch is then retried event by event, and the doomed one fails
    alone, as a real failed write does; on SQLite, the in-process suite's database). Returns
    the types of the refusals, in order."""
    from django.db import OperationalError, connection

    from chat import events as event_log

    # PostgreSQL writes through chat.events._pipelined_rows and _insert instead: there this
    # helper would refuse nothing, and a test relying on it would check no failure at all.
    assert connection.vendor == "sqlite", "fail_event_writes refuses SQLite writes only"
    real_block = event_log._sqlite_block
    doomed: set[int] = set()
    seen: dict[str, set[int]] = {}
    refused: list[str] = []
    kept: list[Any] = []  # every event seen stays alive, so that no id is reused

    def check(event: Any) -> None:
        of_type = seen.setdefault(event.type, set())
        if id(event) not in of_type:
            of_type.add(id(event))
            kept.append(event)
        if id(event) not in doomed and len(of_type) > skip and failures.get(event.type, 0) > 0:
            failures[event.type] -= 1
            doomed.add(id(event))
        if id(event) in doomed:
            refused.append(event.type)
            raise OperationalError(message)

    def failing_block(cursor: Any, block: list[Any]) -> Any:
        # Every SQLite write of an event goes through here, alone or in a thread's block.
        for event, _ in block:
            check(event)
        return real_block(cursor, block)

    monkeypatch.setattr(event_log, "_sqlite_block", failing_block)
    return refused


def slow_event_writes(monkeypatch: pytest.MonkeyPatch, delay: float) -> None:
    """Makes every commit of the log writer take `delay` longer to come back."""
    from chat import broadcaster

    real_append_many = broadcaster._append_many

    async def slow_append_many(events: Any) -> Any:
        results = await real_append_many(events)
        await asyncio.sleep(delay)  # the rows are in; the commit is slow to come back
        return results

    monkeypatch.setattr(broadcaster, "_append_many", slow_append_many)


def metric(name: str, server: Server | None = None, /, **labels: str) -> float:
    """A metric's value: the sum of the samples called `name` whose labels include `labels`
    (all of them without labels). Read from this process's registry, or from the /metrics
    of `server` (a real server process) when given; 0.0 when nothing was recorded."""
    families: Iterable[Metric]
    if server is None:
        families = REGISTRY.collect()
    else:
        with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as response:
            families = text_string_to_metric_families(response.read().decode())
    return sum(
        (
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        ),
        0.0,
    )
