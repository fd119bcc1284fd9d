"""The socket's front door: every refusal explicit, bad frames answered, state logged."""

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels import consumer as channels_consumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import auth, services
from chat.broadcaster import Broadcaster, thread_group
from chat.models import Connection, ConnectionStateLog
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def states(connection_id: str) -> list[tuple[str, str]]:
    rows = ConnectionStateLog.objects.filter(connection_id=connection_id).order_by("id")
    return [(r.from_state, r.to_state) for r in rows]


def only_connection() -> Connection:
    return Connection.objects.get()


async def refused(comm: Any) -> tuple[dict[str, Any], int]:
    connected, _ = await comm.connect(timeout=10)
    assert connected, "refusals must accept first, so that the close code reaches the client"
    frame = await comm.receive_json_from(timeout=5)
    code = await helpers.expect_close(comm)
    await comm.disconnect()
    return frame, code


async def test_token_connects_and_is_greeted(thread: Any, token: str, service: Any) -> None:
    comm, first = await helpers.open_socket(thread.id, token=token, origin=None)
    assert first == {
        "type": "connection_established",
        "connection_id": first["connection_id"],
        "thread_id": str(thread.id),
        "last_seq": 0,
        "protocol": 1,
    }
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()
    rows = await database_sync_to_async(states)(first["connection_id"])
    assert rows == [
        ("CONNECTING", "AUTHENTICATING"),
        ("AUTHENTICATING", "CONNECTED"),
        ("CONNECTED", "CLOSING"),
        ("CLOSING", "CLOSED"),
    ]
    conn = await database_sync_to_async(only_connection)()
    assert conn.state == "CLOSED" and conn.closed_at is not None
    assert conn.token_id is not None


async def test_session_cookie_connects(user: Any, thread: Any, service: Any) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    comm, first = await helpers.open_socket(thread.id, cookie=cookie)
    assert first["type"] == "connection_established"
    await comm.disconnect()


async def test_foreign_origin_with_cookie_is_refused_at_handshake(user: Any, thread: Any) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    comm = helpers.communicator(thread.id, cookie=cookie, origin="https://evil.example")
    connected, _ = await comm.connect(timeout=5)
    assert not connected  # closed before accept: HTTP 403 at the handshake
    await comm.disconnect()


async def test_cookie_without_origin_is_refused_at_handshake(user: Any, thread: Any) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    comm = helpers.communicator(thread.id, cookie=cookie, origin=None)
    connected, _ = await comm.connect(timeout=5)
    assert not connected
    await comm.disconnect()


@pytest.mark.parametrize(
    ("credentials", "code", "error_code"),
    [
        ({}, 4401, "unauthenticated"),
        ({"token": "nt_not-a-real-token"}, 4401, "unauthenticated"),
        ({"token": ""}, 4401, "unauthenticated"),
    ],
)
async def test_missing_or_bad_credentials_close_4401(
    thread: Any, credentials: dict[str, str], code: int, error_code: str
) -> None:
    frame, closed = await refused(helpers.communicator(thread.id, **credentials))
    assert closed == code
    assert frame["type"] == "error" and frame["code"] == error_code
    assert frame["close_code"] == code and frame["message"]
    conn = await database_sync_to_async(only_connection)()
    assert conn.state == "CLOSED" and conn.close_code == code
    rows = await database_sync_to_async(states)(str(conn.id))
    assert rows == [
        ("CONNECTING", "AUTHENTICATING"),
        ("AUTHENTICATING", "REJECTED"),
        ("REJECTED", "CLOSED"),
    ]


async def test_bad_token_wins_over_valid_cookie(user: Any, thread: Any) -> None:
    cookie = await database_sync_to_async(helpers.session_cookie)(user)
    frame, closed = await refused(helpers.communicator(thread.id, token="nt_bogus", cookie=cookie))
    assert (closed, frame["code"]) == (4401, "unauthenticated")


async def test_revoked_token_closes_4401(user: Any, thread: Any) -> None:
    def revoked() -> str:
        token, raw = services.token_create(user=user)
        services.token_revoke(token=token)
        return raw

    raw = await database_sync_to_async(revoked)()
    frame, closed = await refused(helpers.communicator(thread.id, token=raw))
    assert (closed, frame["code"]) == (4401, "unauthenticated")


async def test_inactive_user_closes_4403(thread: Any) -> None:
    def inactive_token() -> tuple[Any, str]:
        user = helpers.make_user("sleeper")
        raw = helpers.make_token(user)
        user.is_active = False
        user.save()
        return user, raw

    _, raw = await database_sync_to_async(inactive_token)()
    frame, closed = await refused(helpers.communicator(thread.id, token=raw))
    assert (closed, frame["code"]) == (4403, "forbidden")


async def test_inactive_session_user_closes_4403(user: Any, thread: Any) -> None:
    def deactivated_cookie() -> str:
        cookie = helpers.session_cookie(user)
        user.is_active = False
        user.save()
        return cookie

    cookie = await database_sync_to_async(deactivated_cookie)()
    frame, closed = await refused(helpers.communicator(thread.id, cookie=cookie))
    assert (closed, frame["code"]) == (4403, "forbidden")
    rows = await database_sync_to_async(states)(
        str((await database_sync_to_async(only_connection)()).id)
    )
    assert ("AUTHENTICATING", "REJECTED") in rows


@pytest.mark.parametrize("which", ["missing", "foreign", "not-a-uuid"])
async def test_unknown_or_foreign_thread_closes_4404(
    which: str, token: str, other_user: Any
) -> None:
    thread_id: Any = {"missing": uuid.uuid4(), "not-a-uuid": "nope"}.get(which)
    if which == "foreign":
        thread_id = (await database_sync_to_async(helpers.make_thread)(other_user)).id
    frame, closed = await refused(helpers.communicator(thread_id, token=token))
    assert closed == 4404
    assert frame == {
        "type": "error",
        "code": "thread_not_found",
        "message": "No such thread.",
        "close_code": 4404,
    }


async def test_slow_credential_lookup_closes_4408(
    thread: Any, token: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.WS_AUTH_TIMEOUT = 0.3
    real = auth.principal_from_token
    release = asyncio.Event()

    def hung_lookup(raw: str) -> Any:
        import time

        time.sleep(1.0)  # a database that answers too late
        return real(raw)

    monkeypatch.setattr(auth, "principal_from_token", hung_lookup)
    frame, closed = await refused(helpers.communicator(thread.id, token=token))
    release.set()
    assert (closed, frame["code"]) == (4408, "auth_timeout")
    await asyncio.sleep(1.0)  # let the late lookup finish before the database is torn down


async def test_service_missing_at_connect_closes_4503(
    thread: Any, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.apps import apps

    monkeypatch.setattr(apps.get_app_config("agents"), "service", None)
    frame, closed = await refused(helpers.communicator(thread.id, token=token))
    assert (closed, frame["code"]) == (4503, "unavailable")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "launch_missiles"}', "Unknown or missing frame type"),
        ('{"text": "hi"}', "Unknown or missing frame type"),
        ('{"type": "user_message", "client_msg_id": "a"}', "text"),
        ('{"type": "user_message", "text": "", "client_msg_id": "a"}', "text"),
        ('{"type": "user_message", "text": 5, "client_msg_id": "a"}', "text"),
        (
            '{"type": "user_message", "text": "hi", "client_msg_id": "' + "x" * 65 + '"}',
            "client_msg_id",
        ),
        ('{"type": "cancel", "run_id": "not-a-uuid"}', "run_id"),
        ('{"type": "resume", "after_seq": -1}', "after_seq"),
        ('{"type": "resume", "after_seq": "3"}', "after_seq"),
        ('{"type": "resume", "after_seq": 100000000000000000000}', "after_seq"),
    ],
)
async def test_bad_frame_gets_bad_request_and_socket_stays(
    raw: str, fragment: str, thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await comm.send_to(text_data=raw)
    frame = await comm.receive_json_from(timeout=5)
    assert frame["type"] == "error" and frame["code"] == "bad_request"
    assert fragment in frame["message"]
    assert "close_code" not in frame
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()


async def test_bad_frame_names_its_ref(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, {"type": "user_message", "text": "", "client_msg_id": "m-1"})
    frame = await comm.receive_json_from(timeout=5)
    assert frame["ref"] == "m-1"
    await comm.disconnect()


async def test_binary_and_oversized_frames_get_bad_request(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await comm.send_to(bytes_data=b"\x00\x01binary")
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], "Binary" in frame["message"]) == ("bad_request", True)
    big = json.dumps({"type": "user_message", "text": "x" * 70000, "client_msg_id": "big"})
    await comm.send_to(text_data=big)
    frame = await comm.receive_json_from(timeout=5)
    assert frame["code"] == "bad_request" and "65536 bytes" in frame["message"]
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()


async def test_burst_of_bad_frames_closes_4400(thread: Any, token: str, service: Any) -> None:
    comm, first = await helpers.open_socket(thread.id, token=token)
    for _ in range(9):
        await comm.send_to(text_data="{")
        assert (await comm.receive_json_from(timeout=5))["code"] == "bad_request"
    await comm.send_to(text_data="{")
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("protocol_error", 4400)
    assert await helpers.expect_close(comm) == 4400
    await comm.disconnect()
    rows = await database_sync_to_async(states)(first["connection_id"])
    assert rows[-2:] == [("CONNECTED", "CLOSING"), ("CLOSING", "CLOSED")]


async def test_unexpected_exception_ends_in_4500(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chat.consumers import ChatConsumer

    async def broken(self: Any, frame: Any) -> None:
        raise RuntimeError("a bug in the message path")

    monkeypatch.setattr(ChatConsumer, "_user_message", broken)
    comm, first = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("hello"))
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("internal_error", 4500)
    assert await helpers.expect_close(comm) == 4500
    await comm.disconnect()
    rows = await database_sync_to_async(states)(first["connection_id"])
    assert rows[-2:] == [("CONNECTED", "FAILED"), ("FAILED", "CLOSED")]


async def test_a_layer_message_with_no_handler_ends_in_4500(
    thread: Any, token: str, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await get_channel_layer().group_send(thread_group(thread.id), {"type": "no.such.handler"})
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("internal_error", 4500)
    assert await helpers.expect_close(comm) == 4500
    await comm.disconnect()


async def test_delivered_events_make_no_trip_through_the_database_thread(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Channels' own dispatch runs close_old_connections on the database thread before
    every handler; the consumer skips it (chat/consumers.py), so that a socket's events
    do not queue with the log writer's batches. The events still arrive, in order."""
    trips = 0
    real = channels_consumer.aclose_old_connections

    async def counted() -> None:
        nonlocal trips
        trips += 1
        await real()

    monkeypatch.setattr(channels_consumer, "aclose_old_connections", counted)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    broadcaster = Broadcaster()
    run_id = uuid.uuid4()
    for n in range(20):
        await broadcaster.emit(
            thread_id=thread.id,
            run_id=run_id,
            type="agent_thinking",
            data={"text": str(n), "step": n},
        )
    frames = [await comm.receive_json_from(timeout=5) for _ in range(20)]
    assert [f["seq"] for f in frames] == list(range(1, 21))
    assert trips == 0
    await comm.disconnect()


@pytest.mark.parametrize("query", ["after_seq=-1", "after_seq=x", "after_seq=99999999999999999999"])
async def test_bad_after_seq_in_the_url_is_a_bad_request(
    query: str, thread: Any, token: str, service: Any
) -> None:
    comm, first = await helpers.open_socket(thread.id, token=token, query=query)
    assert first["type"] == "connection_established"
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], "after_seq" in frame["message"]) == ("bad_request", True)
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()
