"""`GET /api/threads/<id>/stream/` against real servers: a real EventSource (npm
`eventsource`) that resumes with nothing lost, the resume point, keep-alives, auth, and a
client that stops reading (under uvicorn, which applies back-pressure) (docs/protocol.md)."""

import asyncio
import http.client
import json
import threading
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest

from chat.sse import EventStream, StreamOverflowError, ThreadRenderer
from tests.httpstreams import (
    BackgroundSse,
    UvicornServer,
    agui_input,
    node,
    parse_sse,
    read_sse,
    rss_kib,
    stalled_stream,
    validate_agui,
)
from tests.servers import Server, Servers

SERVER_ENV = {"WS_RATE_MESSAGES_PER_MINUTE": "1000", "SSE_KEEPALIVE_SECONDS": "0.3"}
LONG_ANSWER = "hello there"  # the built-in agent answers with what it can do (a long text)
# About 1 MB of events: 300 tool calls, each result and its sentence 1233 digits long. The
# kernel alone buffers ~1.6 MB of an unread loopback connection before writes stall.
BIG_RUN = "what is " + " and ".join(["2**4095"] * 300)


@pytest.fixture(scope="module")
def alice(server: Server) -> str:
    return server.make_user("alice")


def new_thread(server: Server, token: str) -> str:
    status, thread = server.api("POST", "/api/threads/", token, {"title": "sse"})
    assert status == 201
    return str(thread["id"])


def ask(server: Server, token: str, thread_id: str, text: str, timeout: float = 30) -> str:
    """Posts a message and waits for its run to complete; returns the run id."""
    status, answer = server.api(
        "POST",
        f"/api/threads/{thread_id}/messages/",
        token,
        {"text": text, "client_msg_id": str(uuid.uuid4())},
    )
    assert status == 202, answer
    deadline = time.monotonic() + timeout
    after = 0
    while time.monotonic() < deadline:
        _, page = server.api(
            "GET", f"/api/threads/{thread_id}/events/?after_seq={after}&limit=5000", token
        )
        for event in page["events"]:
            after = event["seq"]
            if event["type"] == "agent_completed" and event["run_id"] == answer["run_id"]:
                return str(answer["run_id"])
        time.sleep(0.1)
    raise AssertionError("the run did not complete")


def log_of(server: Server, token: str, thread_id: str) -> list[dict[str, Any]]:
    _, page = server.api("GET", f"/api/threads/{thread_id}/events/?limit=5000", token)
    events: list[dict[str, Any]] = page["events"]
    return events


def test_an_eventsource_that_reconnects_resumes_with_nothing_lost(servers: Servers) -> None:
    # Each stream ends after ~2 KB (its size limit), so the EventSource reconnects with
    # Last-Event-ID many times during three runs.
    server = servers.start(env={**SERVER_ENV, "SSE_MAX_STREAM_BYTES": "2000"})
    token = server.make_user("erin")
    thread_id = new_thread(server, token)
    ask(server, token, thread_id, "what is 1+1")  # before the client: replayed by after_seq
    result: dict[str, Any] = {}
    client = threading.Thread(
        target=lambda: result.update(
            node(
                {
                    "mode": "eventsource",
                    "url": f"{server.http}/api/threads/{thread_id}/stream/?after_seq=0",
                    "token": token,
                    "untilCompleted": 3,
                    "timeoutMs": 40000,
                }
            )
        )
    )
    client.start()
    ask(server, token, thread_id, "what is 12*7 and 2**10")
    ask(server, token, thread_id, LONG_ANSWER)
    client.join(timeout=60)
    assert not result["timedOut"], result
    assert result["opens"] >= 3, "the server ended streams and the client came back"
    logged = log_of(server, token, thread_id)
    assert [e["id"] for e in result["events"]] == [e["seq"] for e in logged]
    assert [e["data"] for e in result["events"]] == logged


def test_last_event_id_wins_over_after_seq_and_replay_ends_with_resume_complete(
    server: Server, alice: str
) -> None:
    thread_id = new_thread(server, alice)
    ask(server, alice, thread_id, "what is 2*3")
    logged = log_of(server, alice, thread_id)
    read = read_sse(
        server,
        f"/api/threads/{thread_id}/stream/?after_seq=0",
        token=alice,
        headers={"Last-Event-ID": "3"},
        seconds=1.5,
    )
    assert read.status == 200
    events = [e for e in read.events if e.id is not None]
    assert [e.id for e in events] == [e["seq"] for e in logged[3:]]
    assert [e.event for e in events] == [e["type"] for e in logged[3:]]
    assert [e.json for e in events] == logged[3:]
    complete = next(e for e in read.events if e.event == "resume_complete")
    assert complete.json["recovered"] is True and complete.json["after_seq"] == 3
    by_query = read_sse(
        server, f"/api/threads/{thread_id}/stream/?after_seq=5", token=alice, seconds=1
    )
    assert [e.id for e in by_query.events if e.id is not None] == [e["seq"] for e in logged[5:]]


def test_idle_streams_get_keep_alive_comments_and_live_events(server: Server, alice: str) -> None:
    thread_id = new_thread(server, alice)
    reader = BackgroundSse(
        server,
        f"/api/threads/{thread_id}/stream/",
        token=alice,
        seconds=20,
        until='"type":"agent_completed"',
    )
    time.sleep(1.2)
    ask(server, alice, thread_id, "what is 4*4")
    read = reader.result()
    assert read.comments.count("keep-alive") >= 2
    assert [e.id for e in read.events] == [e["seq"] for e in log_of(server, alice, thread_id)]


def test_auth_401_without_credentials_404_for_another_users_thread_400_bad_resume(
    server: Server, alice: str
) -> None:
    thread_id = new_thread(server, alice)
    path = f"/api/threads/{thread_id}/stream/"
    anonymous = read_sse(server, path, token=None, seconds=3)
    assert anonymous.status == 401
    assert json.loads(anonymous.body)["error"]["code"] == "unauthenticated"
    mallory = server.make_user("mallory")
    theirs = read_sse(server, path, token=mallory, seconds=3)
    assert theirs.status == 404
    assert json.loads(theirs.body)["error"]["code"] == "thread_not_found"
    missing = read_sse(server, f"/api/threads/{uuid.uuid4()}/stream/", token=alice, seconds=3)
    assert missing.status == 404
    bad = read_sse(server, path, token=alice, headers={"Last-Event-ID": "x"}, seconds=3)
    assert bad.status == 400


# --- under uvicorn --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_server(servers: Servers) -> Server:
    server = UvicornServer(
        env={
            **SERVER_ENV,
            "SSE_MAX_BUFFERED_EVENTS": "50",
            "SSE_STALL_TIMEOUT": "1",
            "AGENT_STREAM_DELAY": "0",
            "AGENT_STREAM_CHUNK": "1000000",  # the whole answer in one event
        }
    )
    servers.made.append(server)
    return server.start()


def test_the_official_agui_client_under_uvicorn(uvicorn_server: Server) -> None:
    token = uvicorn_server.make_user("uma")
    thread_id = new_thread(uvicorn_server, token)
    result = node(
        {
            "mode": "run",
            "url": f"{uvicorn_server.http}/api/agui/",
            "token": token,
            "threadId": thread_id,
            "runId": "uvicorn-run",
            "text": "what is 12*7 and 2**10",
        }
    )
    assert result["error"] is None, result["stderr"]
    assert result["events"][-1]["type"] == "RUN_FINISHED"
    again = read_sse(
        uvicorn_server,
        "/api/agui/",
        token=token,
        method="POST",
        body=agui_input(thread_id, "uvicorn-run", "what is 12*7 and 2**10"),
        seconds=10,
    )
    assert [m.type.value for m in validate_agui(again.events)] == [
        e["type"] for e in result["events"]
    ]


class Follower(threading.Thread):
    """A client that reads a stream as fast as it comes, until told to stop."""

    def __init__(self, server: Server, path: str, token: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=1)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        self.response = self.conn.getresponse()
        self.body = b""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                chunk = self.response.read1(65536)
            except TimeoutError:
                continue
            except (http.client.HTTPException, OSError):
                return  # the server went away (the module's end)
            if not chunk:
                return
            self.body += chunk

    def ids(self) -> list[int]:
        events, _ = parse_sse(self.body.decode())
        return [e.id for e in events if e.id is not None]


@pytest.mark.timeout(300)
def test_a_client_that_stops_reading_is_bounded_and_blocks_no_other_stream(
    uvicorn_server: Server,
) -> None:
    server = uvicorn_server
    assert server.proc is not None
    token = server.make_user("sid")
    thread_id = new_thread(server, token)
    path = f"/api/threads/{thread_id}/stream/?after_seq=0"
    follower = Follower(server, path, token)
    follower.start()
    ask(server, token, thread_id, BIG_RUN, timeout=60)  # warms the server up
    slow = stalled_stream(server, path, token=token)  # replays that run, then follows
    memory_before = rss_kib(server.proc.pid)
    runs = 1
    while "reads too slowly" not in server.log_text() and runs < 8:
        ask(server, token, thread_id, BIG_RUN, timeout=60)  # each completes: nothing blocks
        runs += 1
    assert "reads too slowly" in server.log_text(), f"no overflow after {runs} runs"
    memory_after = rss_kib(server.proc.pid)
    logged = [e["seq"] for e in log_of(server, token, thread_id)]
    deadline = time.monotonic() + 10
    while follower.ids() != logged and time.monotonic() < deadline:
        time.sleep(0.1)
    follower.stop.set()
    assert follower.ids() == logged, "the fast client got every event, in order"
    # The slow client reads at last: what was buffered, then the end of its stream.
    slow.settimeout(15)
    received = b""
    while True:
        try:
            chunk = slow.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    slow.close()
    text = received.decode(errors="replace").split("\r\n\r\n", 1)[1]
    events, comments = parse_sse(text)
    had = [e.id for e in events if e.id is not None]
    assert had == logged[: len(had)] and len(had) < len(logged)
    assert any("not reading fast enough" in c for c in comments) or "dropping" in server.log_text()
    resumed = read_sse(
        server,
        f"/api/threads/{thread_id}/stream/",
        token=token,
        headers={"Last-Event-ID": str(had[-1] if had else 0)},
        seconds=3,
    )
    assert had + [e.id for e in resumed.events if e.id is not None] == logged
    assert memory_after - memory_before < 64 * 1024, "the server did not buffer without bound"


def _threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_open_streams_hold_no_thread(server: Server, alice: str) -> None:
    assert server.proc is not None
    thread_id = new_thread(server, alice)
    threads_before = _threads_of(server.proc.pid)
    streams = [
        stalled_stream(server, f"/api/threads/{thread_id}/stream/", token=alice) for _ in range(40)
    ]
    received = {}
    for sock in streams:  # `: stream open` comes once the stream is in its thread's groups
        sock.settimeout(10)
        received[sock] = b""
        while b": stream open" not in received[sock]:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended before it opened"
            received[sock] += chunk
    ask(server, alice, thread_id, "what is 8*8")  # answered while 40 streams are open
    assert _threads_of(server.proc.pid) - threads_before < 10
    for sock in streams:
        while b'"type":"agent_completed"' not in received[sock]:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended early"
            received[sock] += chunk
        sock.close()


# --- the bounded sink, in process ----------------------------------------------------------


async def test_the_sink_waits_for_room_then_overflows_and_ends_with_a_comment(
    settings: Any,
) -> None:
    settings.SSE_MAX_BUFFERED_EVENTS = 3
    settings.SSE_STALL_TIMEOUT = 0.05
    stream = EventStream(
        thread_id=uuid.uuid4(), token_id=None, renderer=ThreadRenderer(), after_seq=None
    )
    for seq in (1, 2, 3):
        await stream.send_event(seq, "agent_thinking", "{}")
    # Room made while it waits: the fourth event gets in.
    waiting = asyncio.create_task(stream.send_event(4, "agent_thinking", "{}"))
    await asyncio.sleep(0.01)
    stream.queue.get_nowait()
    stream.space.set()
    await waiting
    assert stream.queue.qsize() == 3
    with pytest.raises(StreamOverflowError):  # no room made within SSE_STALL_TIMEOUT
        await stream.send_event(5, "agent_thinking", "{}")
    stream._end("the client is not reading fast enough")
    left = [stream.queue.get_nowait() for _ in range(stream.queue.qsize())]
    assert left == [": closing: the client is not reading fast enough\n\n", None]


@pytest.mark.django_db(transaction=True)
async def test_the_stream_opens_only_once_it_is_in_its_threads_groups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`: stream open` means subscribed: a client that read it and then asks sees the run."""
    from asgiref.sync import sync_to_async

    from chat.delivery import Delivery
    from tests import helpers

    user = await sync_to_async(helpers.make_user)("opener")
    thread = await sync_to_async(helpers.make_thread)(user)
    real_join, gate, joined = Delivery.join, asyncio.Event(), asyncio.Event()

    async def slow_join(self: Delivery) -> None:
        await gate.wait()
        await real_join(self)
        joined.set()

    monkeypatch.setattr(Delivery, "join", slow_join)
    stream = EventStream(
        thread_id=thread.id, token_id=None, renderer=ThreadRenderer(), after_seq=None
    )
    chunks = cast(AsyncGenerator[str, None], stream.chunks())  # an async generator
    first = asyncio.ensure_future(chunks.__anext__())
    await asyncio.sleep(0.2)
    assert not first.done()  # not before the join
    gate.set()
    assert ": stream open" in await asyncio.wait_for(first, 5)
    assert joined.is_set()
    await chunks.aclose()
