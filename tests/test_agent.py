"""The agent runtime: invariants over generated messages, tool failures still pair, reaper."""

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents import tools
from agents.invariants import run_violations
from agents.models import AgentRun
from agents.providers.builtin import find_expressions
from agents.runtime import reap_stale_runs
from chat.events import events_after
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]

numbers = st.integers(min_value=0, max_value=10**6).map(str)
operators = st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])
expressions = st.builds(lambda a, op, b: f"{a}{op}{b}", numbers, operators, numbers)
fillers = st.sampled_from(
    [
        "what is",
        "and",
        "please compute",
        "also",
        "what time is it",
        "today's date?",
        "hello there",
        "thanks",
        "wait 0.01 seconds",
        "",
    ]
)
messages = (
    st.lists(st.one_of(expressions, fillers), min_size=1, max_size=6)
    .map(" ".join)
    .filter(lambda text: 0 < len(text.strip()) <= 8000)
)


def run_to_end(user: Any, text: str) -> list[dict[str, Any]]:
    """Submits one message through the real service and returns the run's logged events."""
    from django.apps import apps

    service = apps.get_app_config("agents").service  # type: ignore[attr-defined]
    thread = helpers.make_thread(user)

    async def go() -> None:
        await service.submit(thread_id=thread.id, user=user, text=text.strip(), client_msg_id="h")
        try:
            await service.wait_idle(timeout=20)
        finally:
            await service.stop_background()

    async_to_sync(go)()
    return events_after(thread_id=thread.id, after_seq=0)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=messages)
@override_settings(WS_RATE_MESSAGES_PER_MINUTE=10_000)
def test_invariants_hold_for_generated_messages(django_user_model: Any, text: str) -> None:
    user, _ = django_user_model.objects.get_or_create(username="hypo")
    events = run_to_end(user, text)
    assert run_violations(events) == [], (text, [e["type"] for e in events])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    calls = [e for e in events if e["type"] == "tool_executing"]
    calculator_calls = [c for c in calls if c["data"]["tool"] == "calculator"]
    assert len(calculator_calls) == len(find_expressions(text.strip()))


@pytest.fixture
def slow_wait(service: Any) -> Any:
    """The wait tool with a 0.2 s timeout."""
    registry = service.dispatcher.registry
    registry.register(dataclasses.replace(tools.WAIT, timeout=0.2))
    yield
    registry.register(tools.WAIT)


async def test_tool_timeout_still_pairs(
    thread: Any, token: str, service: Any, slow_wait: Any
) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 5 seconds then what is 1+2"))
    events = helpers.run_events(await helpers.receive_until(comm, helpers.completed))
    done = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert [(d["tool"], d["status"]) for d in done] == [("wait", "error"), ("calculator", "ok")]
    assert done[0]["error"]["code"] == "timeout"
    assert events[-1]["data"]["status"] == "completed"
    assert run_violations(events) == []
    await comm.disconnect()


async def test_crashing_tool_still_pairs_and_is_reported(
    thread: Any, token: str, service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(args: dict[str, Any]) -> Any:
        raise KeyError("a bug inside the tool")

    registry = service.dispatcher.registry
    registry.register(dataclasses.replace(tools.CALCULATOR, func=broken))
    try:
        comm, _ = await helpers.open_socket(thread.id, token=token)
        await helpers.send(comm, helpers.message("what is 2*3"))
        events = helpers.run_events(await helpers.receive_until(comm, helpers.completed))
    finally:
        registry.register(tools.CALCULATOR)
    done = next(e["data"] for e in events if e["type"] == "tool_completed")
    assert (done["status"], done["error"]["code"]) == ("error", "tool_crashed")
    assert events[-1]["data"]["status"] == "completed"
    assert run_violations(events) == []
    crash = next(r for r in caplog.records if r.getMessage().startswith("tool crashed"))
    assert crash.exc_info is not None
    assert isinstance(crash.exc_info[1].__cause__, KeyError)  # type: ignore[union-attr]
    await comm.disconnect()


async def test_reaper_closes_a_run_whose_worker_died(thread: Any, token: str, service: Any) -> None:
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("wait 20 seconds"))
    ack = await comm.receive_json_from(timeout=5)
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
    # The worker dies: its task stops without a word and its heartbeat stops.
    service.runs[uuid.UUID(ack["run_id"])].abandon()
    await service.wait_idle()
    await database_sync_to_async(AgentRun.objects.filter(pk=ack["run_id"]).update)(
        heartbeat_at=timezone.now() - timedelta(seconds=60)
    )
    closed = await reap_stale_runs(service.broadcaster, worker_id="reaper-test", stale_after=30)
    assert closed == 1
    frames = await helpers.receive_until(comm, helpers.completed, timeout=5)
    tail = [
        (e["type"], e["data"].get("status") or e["data"].get("code"))
        for e in helpers.run_events(frames)
    ]
    assert tail == [
        ("tool_completed", "error"),
        ("agent_error", "worker_lost"),
        ("agent_completed", "failed"),
    ]
    everything = await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    assert run_violations(everything) == []
    run = await database_sync_to_async(AgentRun.objects.get)(pk=ack["run_id"])
    assert (run.status, run.error_code) == ("failed", "worker_lost")
    assert await reap_stale_runs(service.broadcaster, worker_id="reaper-test", stale_after=30) == 0
    await comm.disconnect()


async def test_a_live_run_is_not_reaped(thread: Any, token: str, service: Any) -> None:
    """The run heartbeat alone (the other background loops would contend for the in-memory
    test database's table locks): a run that beats every 0.05 s is never 0.8 s silent."""

    async def heartbeat() -> None:
        while True:
            await service.beat()
            await asyncio.sleep(0.05)

    comm, _ = await helpers.open_socket(thread.id, token=token)
    beating = asyncio.create_task(heartbeat())
    try:
        await helpers.send(comm, helpers.message("wait 2 seconds"))
        await helpers.receive_until(comm, lambda f: f.get("type") == "tool_executing")
        await asyncio.sleep(1.0)
        reaped = await reap_stale_runs(
            service.broadcaster, worker_id="reaper-test", stale_after=0.8
        )
        assert reaped == 0
        frames = await helpers.receive_until(comm, helpers.completed)
    finally:
        beating.cancel()
    assert frames[-1]["data"]["status"] == "completed"
    await comm.disconnect()


async def test_cancel_during_event_writes_keeps_the_log_whole(
    thread: Any, token: str, service: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that lands while an event is being written: the write completes, and the
    emitter's record (open calls, answer text) stays in step with the log."""
    settings.AGENT_STREAM_CHUNK = 1
    helpers.slow_event_writes(monkeypatch, 0.03)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 1+1 and 2+2 and 3+3 and 4+4 and 5+5"))
    ack = await comm.receive_json_from(timeout=5)
    # The first call is in; the next ones wait for their tool_executing's slow commit.
    await helpers.receive_until(comm, lambda f: f.get("type") == "tool_completed", timeout=10)
    await helpers.send(comm, {"type": "cancel", "run_id": ack["run_id"]})
    await helpers.receive_until(comm, helpers.completed, timeout=10)
    await comm.disconnect()
    events = await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    assert events[-1]["data"]["status"] == "cancelled"
    assert run_violations(events) == []


async def test_agent_error_survives_a_database_blip_during_close_out(
    thread: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    helpers.fail_event_writes(monkeypatch, {"partial_result": 1, "agent_error": 1})
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+3"))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=10)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert [e["type"] for e in events][-2:] == ["agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == "unavailable"
    assert run_violations(events) == []
