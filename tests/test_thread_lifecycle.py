"""A resume from before the first kept event says recovered:false (socket and HTTP);
DELETE /api/threads/<id>/ removes the thread, closes its sockets with 4404 and keeps the
connection state log; a deletion racing an active run leaves no orphan event."""

import asyncio
import logging
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from agents.models import AgentRun
from agents.runtime import RunHandle
from chat import pruning
from chat.models import Connection, ConnectionStateLog, Event, Message, Thread
from tests import helpers, lifecycle_scenario

pytestmark = [pytest.mark.django_db(transaction=True)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def resumed(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "resume_complete"


async def pruned_thread(thread: Any) -> tuple[int, int]:
    """Two old finished runs on `thread`, the first pruned; returns (its last seq, last seq)."""

    def build() -> tuple[int, int]:
        first = lifecycle_scenario.make_run(thread, age=lifecycle_scenario.OLD)
        lifecycle_scenario.make_run(thread, age=lifecycle_scenario.OLD)
        first_last = Event.objects.filter(run_id=first).order_by("-seq").first()
        assert first_last is not None
        pruning.run_prune()
        assert not Event.objects.filter(run_id=first).exists()
        return first_last.seq, Thread.objects.get(pk=thread.pk).last_seq

    return await database_sync_to_async(build)()


async def test_resume_from_pruned_events_says_recovered_false_on_the_socket(
    thread: Any, token: str, service: Any
) -> None:
    pruned_up_to, last_seq = await pruned_thread(thread)
    comm, first = await helpers.open_socket(thread.id, token=token, query="after_seq=0")
    assert first["type"] == "connection_established"
    frames = await helpers.receive_until(comm, resumed)
    events = helpers.run_events(frames)
    assert [e["seq"] for e in events] == list(range(pruned_up_to + 1, last_seq + 1))
    assert frames[-1] == {
        "type": "resume_complete",
        "after_seq": 0,
        "last_seq": last_seq,
        "recovered": False,
    }
    # From inside the pruned run: still not recovered.
    await helpers.send(comm, {"type": "resume", "after_seq": 2})
    assert (await helpers.receive_until(comm, resumed))[-1]["recovered"] is False
    # Past the pruned run, the resume works.
    await helpers.send(comm, {"type": "resume", "after_seq": pruned_up_to})
    frames = await helpers.receive_until(comm, resumed)
    assert helpers.run_events(frames) == events
    assert frames[-1]["recovered"] is True
    await comm.disconnect()


async def test_events_api_says_recovered_false_for_pruned_events(thread: Any, token: str) -> None:
    pruned_up_to, last_seq = await pruned_thread(thread)
    client, auth = AsyncClient(), bearer(token)
    url = f"/api/threads/{thread.id}/events/"
    body = (await client.get(url, {"after_seq": 0}, headers=auth)).json()
    assert body["recovered"] is False
    assert body["events"][0]["seq"] == pruned_up_to + 1
    body = (await client.get(url, {"after_seq": pruned_up_to}, headers=auth)).json()
    assert body["recovered"] is True and len(body["events"]) == last_seq - pruned_up_to
    body = (await client.get(url, {"after_seq": last_seq}, headers=auth)).json()
    assert (body["recovered"], body["events"]) == (True, [])


# --- DELETE /api/threads/<id>/ ---------------------------------------------------------------


async def test_delete_thread_closes_its_sockets_and_keeps_the_state_log(
    thread: Any, token: str, other_user: Any, service: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+2"))
    await helpers.receive_until(comm, helpers.completed)
    watcher, _ = await helpers.open_socket(thread.id, token=token)
    url = f"/api/threads/{thread.id}/"

    mallory = await database_sync_to_async(helpers.make_token)(other_user)
    refused = await AsyncClient().delete(url, headers=bearer(mallory))
    assert refused.status_code == 404
    assert (await AsyncClient().delete(url)).status_code == 401

    response = await AsyncClient().delete(url, headers=bearer(token))
    assert response.status_code == 204
    for socket in (comm, watcher):
        error = await socket.receive_json_from(timeout=5)
        assert (error["type"], error["code"], error["close_code"]) == (
            "error",
            "thread_not_found",
            4404,
        )
        assert await helpers.expect_close(socket) == 4404
        await socket.disconnect()

    def left() -> dict[str, Any]:
        return {
            "thread": Thread.objects.filter(pk=thread.pk).exists(),
            "events": Event.objects.filter(thread_id=thread.pk).count(),
            "messages": Message.objects.filter(thread_id=thread.pk).count(),
            "runs": AgentRun.objects.filter(thread_id=thread.pk).count(),
            "connections": list(
                Connection.objects.filter(requested_thread=str(thread.pk)).values_list(
                    "thread_id", "close_code"
                )
            ),
            "state_log": ConnectionStateLog.objects.filter(
                connection__requested_thread=str(thread.pk)
            ).count(),
        }

    after = await database_sync_to_async(left)()
    assert (after["thread"], after["events"], after["messages"], after["runs"]) == (
        False,
        0,
        0,
        0,
    )
    assert sorted(after["connections"]) == [(None, 4404), (None, 4404)]
    assert after["state_log"] >= 8  # both sockets' whole lives, closing included
    gone = await AsyncClient().delete(url, headers=bearer(token))
    assert gone.status_code == 404


async def test_delete_with_a_session_needs_csrf(thread: Any, user: Any) -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    await database_sync_to_async(client.force_login)(user)
    response = await client.delete(f"/api/threads/{thread.id}/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert await database_sync_to_async(Thread.objects.filter(pk=thread.pk).exists)()


async def test_deleting_a_thread_cancels_its_active_run_first(
    thread: Any, token: str, service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 10 seconds"))
    ack = await comm.receive_json_from(timeout=5)
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    with caplog.at_level(logging.WARNING):
        response = await AsyncClient().delete(f"/api/threads/{thread.id}/", headers=bearer(token))
    assert response.status_code == 204
    frames = await helpers.receive_until(comm, lambda f: f.get("type") == "error")
    done = [f for f in frames if f.get("type") == "agent_completed"]
    assert [(d["run_id"], d["data"]["status"]) for d in done] == [(ack["run_id"], "cancelled")]
    assert frames[-1]["code"] == "thread_not_found"
    assert await helpers.expect_close(comm) == 4404
    await service.wait_idle(timeout=5)
    assert await database_sync_to_async(Event.objects.filter(thread_id=thread.pk).count)() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await comm.disconnect()


async def test_a_run_that_ignores_the_cancel_stops_at_its_next_event(
    thread: Any,
    token: str,
    service: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As a run on a worker that has not seen the cancel yet: the thread is deleted under
    it; its next event finds no thread, and it stops without writing anything."""
    settings.THREAD_DELETE_CANCEL_WAIT = 0.2
    monkeypatch.setattr(RunHandle, "request_cancel", lambda self: None)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 1 seconds"))
    await comm.receive_json_from(timeout=5)
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    with caplog.at_level(logging.WARNING):
        response = await AsyncClient().delete(f"/api/threads/{thread.id}/", headers=bearer(token))
        assert response.status_code == 204
        frames = await helpers.receive_until(comm, lambda f: f.get("type") == "error")
        assert frames[-1]["code"] == "thread_not_found"
        assert await helpers.expect_close(comm) == 4404
        await service.wait_idle(timeout=10)
    assert await database_sync_to_async(Event.objects.filter(thread_id=thread.pk).count)() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "thread deleted during the run" in messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], messages
    await comm.disconnect()
    await asyncio.sleep(0)
