"""Approvals end to end over real sockets on real daphne processes (tests/servers.py): the
built-in agent's send_note asks; approve, deny, expire and cancel each end the run whole
(invariants checked); the HTTP answer, 409 and 404; bad approval frames; a pending
approval across a full restart of the server; two sockets of one user on two workers of a
Redis cluster. In one process: tests/test_approval_flow.py."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agents.invariants import run_violations
from tests.cluster import (
    REDIS_URL,
    Cluster,
    postgres_database,
    require_postgres,
    require_redis,
    running_cluster,
)
from tests.servers import Server, Servers
from tests.sockets import Socket, completed_run

SERVER_ENV = {"AGENT_STREAM_DELAY": "0"}


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    """An API token of the user `ada`."""
    return server.make_user("ada")


def new_thread(server: Server, token: str) -> str:
    status, body = server.api("POST", "/api/threads/", token, {"title": "approvals"})
    assert status == 201, body
    return str(body["id"])


def requested(run_id: str) -> Any:
    return lambda f: f.get("type") == "approval_requested" and f.get("run_id") == run_id


def resolved(run_id: str) -> Any:
    return lambda f: f.get("type") == "approval_resolved" and f.get("run_id") == run_id


async def waiting_run(server: Server, token: str, note: str = "hello") -> tuple[Socket, dict]:
    """Opens a socket on a new thread and asks for a note; returns it and the request."""
    sock = Socket(server, new_thread(server, token), token=token)
    assert (await sock.open())["type"] == "connection_established"
    ack = await sock.ask(f"send a note: {note}")
    return sock, await sock.wait_for(requested(ack["run_id"]))


def run_of(sock: Socket, run_id: str) -> list[dict[str, Any]]:
    return [e for e in sock.events if e["run_id"] == run_id]


def stream(events: list[dict[str, Any]]) -> str:
    """The run's events, one line each (shown with -s; the closing note quotes it)."""
    return "\n".join(f"{e['seq']:>3} {e['type']:<19} {json.dumps(e['data'])}" for e in events)


async def test_approved_on_the_socket_the_note_is_sent(server: Server, token: str) -> None:
    sock, asked = await waiting_run(server, token)
    run_id, approval_id = asked["run_id"], asked["data"]["approval_id"]
    status, thread = server.api("GET", f"/api/threads/{sock.thread_id}/", token)
    assert status == 200 and thread["id"] == sock.thread_id
    assert thread["pending_approvals"] == [
        {
            "approval_id": approval_id,
            "run_id": run_id,
            "tool_call_id": asked["data"]["tool_call_id"],
            "tool": "send_note",
            "args": {"text": "hello"},
            "reason": asked["data"]["reason"],
            "expires_at": asked["data"]["expires_at"],
        }
    ]
    await sock.send({"type": "approval", "approval_id": approval_id, "decision": "approve"})
    done = await sock.wait_for(completed_run(run_id))
    events = run_of(sock, run_id)
    print("\napproved run:\n" + stream(events))
    assert run_violations(events) == []
    types = [e["type"] for e in events]
    at = types.index("tool_executing")
    assert types[at : at + 4] == [
        "tool_executing",
        "approval_requested",
        "approval_resolved",
        "tool_completed",
    ]
    assert events[at + 2]["data"] == {
        "approval_id": approval_id,
        "decision": "approved",
        "comment": "",
    }
    assert events[at + 3]["data"]["status"] == "ok"
    assert done["data"]["status"] == "completed"
    assert done["data"]["text"] == "I sent the note: hello"
    status, thread = server.api("GET", f"/api/threads/{sock.thread_id}/", token)
    assert thread["pending_approvals"] == []
    await sock.close()


async def test_denied_on_the_socket_the_comment_reaches_the_answer(
    server: Server, token: str
) -> None:
    sock, asked = await waiting_run(server, token, note="buy milk")
    run_id, approval_id = asked["run_id"], asked["data"]["approval_id"]
    await sock.send(
        {"type": "approval", "approval_id": approval_id, "decision": "deny", "comment": "not now"}
    )
    done = await sock.wait_for(completed_run(run_id))
    events = run_of(sock, run_id)
    print("\ndenied run:\n" + stream(events))
    assert run_violations(events) == []
    (answer,) = [e for e in events if e["type"] == "approval_resolved"]
    assert answer["data"] == {
        "approval_id": approval_id,
        "decision": "denied",
        "comment": "not now",
    }
    (call,) = [e for e in events if e["type"] == "tool_completed"]
    assert call["data"]["status"] == "denied"
    assert call["data"]["error"] == {"code": "denied", "message": "not now"}
    assert done["data"]["text"] == "I did not send the note: you declined (not now)."
    await sock.close()


async def test_http_answer_then_409_and_another_users_404(server: Server, token: str) -> None:
    sock, asked = await waiting_run(server, token)
    approval_id = asked["data"]["approval_id"]
    other = server.make_user("eve")
    status, body = server.api(
        "POST", f"/api/approvals/{approval_id}/", other, {"decision": "approve"}
    )
    assert (status, body["error"]["code"]) == (404, "approval_not_found")
    status, body = server.api("GET", f"/api/threads/{sock.thread_id}/", other)
    assert (status, body["error"]["code"]) == (404, "thread_not_found")
    status, body = server.api(
        "POST", f"/api/approvals/{approval_id}/", token, {"decision": "approve", "comment": "ok"}
    )
    assert status == 202 and body == {"approval_id": approval_id, "decision": "approve"}
    await sock.wait_for(completed_run(asked["run_id"]))
    status, body = server.api("POST", f"/api/approvals/{approval_id}/", token, {"decision": "deny"})
    assert (status, body["error"]["code"]) == (409, "approval_resolved")
    frames = await sock.exchange(
        json.dumps({"type": "approval", "approval_id": approval_id, "decision": "deny"})
    )
    assert [(f["code"], f["ref"]) for f in frames if f["type"] == "error"] == [
        ("approval_resolved", approval_id)
    ]
    frames = await sock.exchange(
        json.dumps({"type": "approval", "approval_id": str(uuid.uuid4()), "decision": "deny"})
    )
    assert [f.get("code") for f in frames] == ["approval_not_found"]
    assert run_violations(run_of(sock, asked["run_id"])) == []
    await sock.close()


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "approval", "approval_id": "nope", "decision": "approve"},
        {"type": "approval", "approval_id": str(uuid.uuid4()), "decision": "maybe"},
        {
            "type": "approval",
            "approval_id": str(uuid.uuid4()),
            "decision": "deny",
            "comment": "x" * 2001,
        },
        {"type": "approval", "decision": "approve"},
    ],
    ids=["bad-id", "bad-decision", "long-comment", "no-id"],
)
async def test_a_bad_approval_frame_is_bad_request_and_the_socket_stays(
    server: Server, token: str, frame: dict[str, Any]
) -> None:
    sock = Socket(server, new_thread(server, token), token=token)
    frames = await sock.exchange(json.dumps(frame))
    assert [(f["type"], f["code"]) for f in frames] == [("error", "bad_request")]
    assert sock.is_open
    assert await sock.exchange('{"type":"ping"}') == []  # still answering
    await sock.close()


async def test_cancel_while_waiting_denies_and_ends_cancelled(server: Server, token: str) -> None:
    sock, asked = await waiting_run(server, token)
    await sock.send({"type": "cancel", "run_id": asked["run_id"]})
    done = await sock.wait_for(completed_run(asked["run_id"]))
    events = run_of(sock, asked["run_id"])
    assert run_violations(events) == []
    (answer,) = [e for e in events if e["type"] == "approval_resolved"]
    assert answer["data"]["decision"] == "denied" and answer["data"]["comment"] == "run cancelled"
    (call,) = [e for e in events if e["type"] == "tool_completed"]
    assert call["data"]["status"] == "denied"
    assert done["data"]["status"] == "cancelled"
    await sock.close()


async def test_an_unanswered_approval_expires(servers: Servers) -> None:
    server = servers.start(
        env={**SERVER_ENV, "APPROVAL_TIMEOUT": "1", "RUN_REAPER_INTERVAL": "0.3"}
    )
    token = server.make_user("ida")
    sock, asked = await waiting_run(server, token)
    done = await sock.wait_for(completed_run(asked["run_id"]), timeout=30)
    events = run_of(sock, asked["run_id"])
    assert run_violations(events) == []
    (answer,) = [e for e in events if e["type"] == "approval_resolved"]
    assert answer["data"]["decision"] == "expired"
    (call,) = [e for e in events if e["type"] == "tool_completed"]
    assert call["data"]["status"] == "error"
    assert call["data"]["error"]["code"] == "approval_expired"
    assert done["data"]["text"] == "I did not send the note: nobody approved it in time."
    await sock.close()
    server.stop()


async def test_a_pending_approval_survives_a_restart_of_the_server(servers: Servers) -> None:
    server = servers.start(env=dict(SERVER_ENV))
    token = server.make_user("rex")
    sock, asked = await waiting_run(server, token)
    await sock.close()
    server.stop()
    server.start()
    _status, thread = server.api("GET", f"/api/threads/{sock.thread_id}/", token)
    assert [p["approval_id"] for p in thread["pending_approvals"]] == [asked["data"]["approval_id"]]
    again = Socket(server, sock.thread_id, token=token)
    assert (await again.open(after_seq=0))["type"] == "connection_established"
    await again.wait_for(requested(asked["run_id"]))  # the request is in the log, replayed
    await again.send(
        {"type": "approval", "approval_id": asked["data"]["approval_id"], "decision": "approve"}
    )
    done = await again.wait_for(completed_run(asked["run_id"]))
    assert done["data"]["text"] == "I sent the note: hello"
    assert run_violations(run_of(again, asked["run_id"])) == []
    await again.close()
    server.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Two daphne workers on the shared Redis and a fresh PostgreSQL database."""
    require_redis()
    require_postgres()
    with (
        postgres_database() as database_url,
        running_cluster(
            database_url=database_url, redis_url=REDIS_URL, workers=2, server="daphne"
        ) as running,
    ):
        yield running


async def test_two_sockets_on_two_workers_see_the_request_and_the_answer(
    cluster: Cluster,
) -> None:
    token = cluster.make_users("pair", 1)[0]
    thread_id = cluster.new_thread(token)
    phone = Socket(cluster[0], thread_id, token=token)
    laptop = Socket(cluster[1], thread_id, token=token)
    assert (await phone.open())["type"] == "connection_established"
    assert (await laptop.open())["type"] == "connection_established"
    ack = await phone.ask("send a note: from the phone")
    asks = await asyncio.gather(*(s.wait_for(requested(ack["run_id"])) for s in (phone, laptop)))
    assert asks[0] == asks[1]
    await laptop.send(
        {"type": "approval", "approval_id": asks[0]["data"]["approval_id"], "decision": "approve"}
    )
    for sock in (phone, laptop):
        await sock.wait_for(resolved(ack["run_id"]))
        done = await sock.wait_for(completed_run(ack["run_id"]))
        assert done["data"]["text"] == "I sent the note: from the phone"
    logged = [e for e in cluster.logged_events(thread_id) if e["run_id"] == ack["run_id"]]
    assert run_violations(logged) == []
    assert [e["seq"] for e in run_of(phone, ack["run_id"])] == [e["seq"] for e in logged]
    await asyncio.gather(phone.close(), laptop.close())
