"""Per-user limits and token revocation: typed answers, counted, nothing lost."""

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from chat import auth, handshake, selectors, services
from chat.models import ApiToken, Connection, ConnectionState
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_sockets_over_the_per_user_limit_close_4429(
    thread: Any, token: str, service: Any, settings: Any
) -> None:
    settings.WS_MAX_SOCKETS_PER_USER = 2
    before = helpers.metric("netra_rate_limited_total", kind="sockets")
    first, _ = await helpers.open_socket(thread.id, token=token)
    second, _ = await helpers.open_socket(thread.id, token=token)
    third = helpers.communicator(thread.id, token=token)
    connected, _ = await third.connect()
    assert connected
    frame = await third.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("rate_limited", 4429)
    assert frame["retry_after"] > 0
    assert await helpers.expect_close(third) == 4429
    await third.disconnect()
    after = helpers.metric("netra_rate_limited_total", kind="sockets")
    assert after == before + 1
    await first.disconnect()
    again, hello = await helpers.open_socket(thread.id, token=token)
    assert hello["type"] == "connection_established"
    for comm in (second, again):
        await comm.disconnect()


async def test_a_handshake_refused_after_registering_leaves_no_counted_socket(
    thread: Any, token: str, service: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket's row counts from the atomic registration on, before accept; a refusal
    # after it (here: no agent service) must move it out of the counted states.
    settings.WS_MAX_SOCKETS_PER_USER = 1
    monkeypatch.setattr(handshake, "agent_service", lambda: None)
    for _ in range(2):
        refused = helpers.communicator(thread.id, token=token)
        await refused.connect()
        assert (await refused.receive_json_from(timeout=5))["close_code"] == 4503
        await refused.disconnect()
    rows = Connection.objects.filter(user_id=thread.owner_id)
    assert await database_sync_to_async(selectors.open_sockets)(user_id=thread.owner_id) == 0
    assert {c.state async for c in rows} == {ConnectionState.CLOSED}
    monkeypatch.undo()
    comm, hello = await helpers.open_socket(thread.id, token=token)
    assert hello["type"] == "connection_established"
    await comm.disconnect()


async def test_messages_over_the_rate_get_rate_limited_and_the_socket_stays(
    thread: Any, token: str, service: Any, settings: Any
) -> None:
    settings.WS_RATE_MESSAGES_PER_MINUTE = 2
    comm, _ = await helpers.open_socket(thread.id, token=token)
    for i in range(2):
        await helpers.send(comm, helpers.message("what is 1+1", f"ok-{i}"))
        await helpers.receive_until(comm, helpers.completed)
        await service.wait_idle()
    await helpers.send(comm, helpers.message("what is 1+1", "ok-0"))
    duplicate = await comm.receive_json_from(timeout=5)
    assert duplicate["type"] == "ack" and duplicate["duplicate"] is True
    await helpers.send(comm, helpers.message("what is 1+1", "third"))
    frame = await comm.receive_json_from(timeout=5)
    assert (frame["code"], frame["ref"]) == ("rate_limited", "third")
    assert 0 < frame["retry_after"] <= 60 and "close_code" not in frame
    await helpers.send(comm, {"type": "ping"})
    assert await comm.receive_json_from(timeout=5) == {"type": "pong"}
    await comm.disconnect()
    response = await AsyncClient().post(
        f"/api/threads/{thread.id}/messages/",
        data={"text": "hi", "client_msg_id": "http"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1


async def test_a_rate_of_zero_turns_the_message_rate_check_off(
    thread: Any, token: str, service: Any, settings: Any
) -> None:
    settings.WS_RATE_MESSAGES_PER_MINUTE = 0
    comm, _ = await helpers.open_socket(thread.id, token=token)
    for i in range(3):
        await helpers.send(comm, helpers.message("what is 1+1", f"free-{i}"))
        assert (await comm.receive_json_from(timeout=5))["type"] == "ack"
        await helpers.receive_until(comm, helpers.completed)
        await service.wait_idle()
    await comm.disconnect()


async def test_revoking_a_token_closes_its_sockets_with_4401(
    thread: Any, user: Any, service: Any
) -> None:
    def two_tokens() -> tuple[ApiToken, str, str]:
        doomed, doomed_raw = services.token_create(user=user)
        _, kept_raw = services.token_create(user=user)
        return doomed, doomed_raw, kept_raw

    doomed, doomed_raw, kept_raw = await database_sync_to_async(two_tokens)()
    victim, _ = await helpers.open_socket(thread.id, token=doomed_raw)
    bystander, _ = await helpers.open_socket(thread.id, token=kept_raw)
    await database_sync_to_async(services.token_revoke)(token=doomed)
    frame = await victim.receive_json_from(timeout=5)
    assert (frame["code"], frame["close_code"]) == ("unauthenticated", 4401)
    assert "revoked" in frame["message"]
    assert await helpers.expect_close(victim) == 4401
    await victim.disconnect()
    await helpers.send(bystander, {"type": "ping"})
    assert await bystander.receive_json_from(timeout=5) == {"type": "pong"}
    await bystander.disconnect()
    refused = helpers.communicator(thread.id, token=doomed_raw)
    await refused.connect()
    assert (await refused.receive_json_from(timeout=5))["close_code"] == 4401
    await refused.disconnect()


async def test_tokens_are_stored_only_hashed(user: Any) -> None:
    _, raw = await database_sync_to_async(services.token_create)(user=user)
    stored = await database_sync_to_async(
        lambda: list(ApiToken.objects.values_list("digest", "prefix", "name"))
    )()
    assert all(raw not in str(value) for row in stored for value in row)
    assert stored[0][0] == auth.hash_token(raw) and len(raw) > 40
