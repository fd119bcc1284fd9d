"""Runs that outlive their worker, in one process: fencing in the event write, continuation
from the journal (built-in and OpenAI-compatible agents), idempotent and interrupted tool
calls, RUN_MAX_RESUMES and agents that cannot continue, messages reaching a draining worker.

A worker "dies" here by `RunHandle.abandon()` (its task stops without another write) and
an old heartbeat; the adoption sweep of the same service then continues the run at the
next attempt. The multi-process versions are in tests/test_drain.py.
"""

import asyncio
import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents import continuation
from agents.invariants import run_violations
from agents.models import AgentRun, RunAttempt, RunStatus
from chat import metrics
from chat.events import PendingEvent, RunFencedError, event_append, event_append_many, events_after
from chat.models import Message
from chat.runevents import fold_run
from tests import helpers
from tests.cluster import check_on_postgresql

pytestmark = [pytest.mark.django_db(transaction=True)]


# --- fencing in the event write ---------------------------------------------------------------


def fencing_check() -> dict[str, Any]:
    """Writes a run's events at its attempt, then at an older one, alone and in a batch,
    then after the run ended; returns what each write came to (run on SQLite in-process,
    and on PostgreSQL in a subprocess)."""
    user = helpers.make_user(f"fence-{uuid.uuid4().hex[:6]}")
    thread = helpers.make_thread(user)
    message = Message.objects.create(thread=thread, role="user", text="x")
    run = AgentRun.objects.create(
        thread=thread, user=user, message=message, agent="builtin", status=RunStatus.RUNNING
    )

    def write(attempt: int) -> str:
        try:
            event_append(
                thread_id=thread.id,
                run_id=run.id,
                type="agent_thinking",
                data={"text": "t", "step": 1},
                attempt=attempt,
            )
        except RunFencedError:
            return "fenced"
        return "written"

    outcome: dict[str, Any] = {"first": write(1)}
    AgentRun.objects.filter(pk=run.pk).update(attempt=2)
    outcome["stale"] = write(1)
    outcome["current"] = write(2)
    batch = event_append_many(
        [
            PendingEvent(thread.id, run.id, "agent_thinking", {"text": "old"}, attempt=1),
            PendingEvent(thread.id, run.id, "agent_thinking", {"text": "new"}, attempt=2),
        ]
    )
    outcome["batch"] = [type(r).__name__ if isinstance(r, Exception) else "written" for r in batch]
    AgentRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    outcome["after_end"] = write(2)
    outcome["seqs"] = [e["seq"] for e in events_after(thread_id=thread.id, after_seq=0)]
    return outcome


EXPECTED_FENCING = {
    "first": "written",
    "stale": "fenced",
    "current": "written",
    "batch": ["RunFencedError", "written"],
    "after_end": "fenced",
    "seqs": [1, 2, 3],
}


def test_a_stale_attempt_cannot_write_and_fails_alone_in_its_batch() -> None:
    assert fencing_check() == EXPECTED_FENCING


@pytest.mark.postgres
def test_fencing_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_outlive", "fencing_check") == EXPECTED_FENCING


# --- continuation in one process ------------------------------------------------------------


async def logged(thread: Any) -> list[dict[str, Any]]:
    """The thread's event log."""
    return await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)


async def wait_logged(thread: Any, predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
    """Polls the log until `predicate(events)`; returns the events."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = await logged(thread)
        if predicate(events):
            return events
        assert asyncio.get_running_loop().time() < deadline, [e["type"] for e in events]
        await asyncio.sleep(0.02)


async def kill_and_continue(service: Any, run_id: uuid.UUID) -> int:
    """The run's worker dies (no more writes, no heartbeat); the sweep continues it here."""
    service.runs[run_id].abandon()
    await service.wait_idle()
    await database_sync_to_async(AgentRun.objects.filter(pk=run_id).update)(
        heartbeat_at=timezone.now() - timedelta(seconds=600)
    )
    taken: int = await continuation.adopt_runs(service)
    await service.wait_idle()
    return taken


def resumed_count(events: list[dict[str, Any]]) -> int:
    """How many agent_thinking{resumed: true} the events hold."""
    return fold_run(events).resumes


async def test_killed_mid_tool_completes_the_call_as_interrupted_and_continues(
    thread: Any, user: Any, service: Any
) -> None:
    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 1 seconds and what is 6*7", client_msg_id="k"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    assert await kill_and_continue(service, result.run_id) == 1
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert resumed_count(events) == 1
    waits = [e for e in events if e["data"].get("tool") == "wait"]
    first_id = waits[0]["data"]["tool_call_id"]
    first = [e for e in waits if e["data"]["tool_call_id"] == first_id]
    assert [(e["type"], e["data"].get("error", {}).get("code")) for e in first] == [
        ("tool_executing", None),
        ("tool_completed", "interrupted"),
    ]
    final = events[-1]["data"]
    assert final["status"] == "completed" and "`6*7` = 42." in final["text"]
    run = await database_sync_to_async(AgentRun.objects.get)(pk=result.run_id)
    assert (run.attempt, run.resumes, run.worker_id) == (2, 1, service.worker_id)
    reasons = await database_sync_to_async(
        lambda: list(RunAttempt.objects.filter(run=run).values_list("number", "reason"))
    )()
    assert reasons == [(1, "submitted"), (2, "worker_lost")]


async def test_killed_mid_answer_does_not_repeat_the_text(
    thread: Any, user: Any, service: Any, settings: Any
) -> None:
    settings.AGENT_STREAM_DELAY = 0.05
    settings.AGENT_STREAM_CHUNK = 8
    result = await service.submit(
        thread_id=thread.id, user=user, text="hello there", client_msg_id="m"
    )
    before = await wait_logged(
        thread, lambda es: sum(e["type"] == "partial_result" for e in es) >= 3
    )
    await kill_and_continue(service, result.run_id)
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert resumed_count(events) == 1
    texts = [e["data"]["text"] for e in events if e["type"] == "partial_result"]
    final = events[-1]["data"]["text"]
    assert "".join(texts) == final and final.startswith("I am the built-in offline agent.")
    assert final.count("I am the built-in offline agent.") == 1
    resumed_at = next(i for i, e in enumerate(events) if e["data"].get("resumed"))
    assert resumed_at >= len([e for e in before if e["type"] != "agent_completed"])


async def test_an_idempotent_call_runs_again_under_the_same_id(
    thread: Any, user: Any, service: Any
) -> None:
    registry = service.dispatcher.registry
    original = registry.get("wait")
    assert original is not None
    registry.register(dataclasses.replace(original, idempotent=True))  # @tool(idempotent=True)
    try:
        result = await service.submit(
            thread_id=thread.id, user=user, text="wait 0.5 seconds", client_msg_id="i"
        )
        await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
        await kill_and_continue(service, result.run_id)
    finally:
        registry.register(original)
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    calls = [(e["type"], e["data"].get("status")) for e in events if e["data"].get("tool")]
    assert calls == [("tool_executing", None), ("tool_completed", "ok")]
    assert events[-1]["data"]["text"] == "I waited as asked."


async def test_past_run_max_resumes_the_run_ends_with_worker_lost(
    thread: Any, user: Any, service: Any, settings: Any
) -> None:
    settings.RUN_MAX_RESUMES = 0
    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 5 seconds", client_msg_id="x"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    await kill_and_continue(service, result.run_id)
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert resumed_count(events) == 0
    assert [(e["type"], e["data"].get("code")) for e in events[-2:]] == [
        ("agent_error", "worker_lost"),
        ("agent_completed", None),
    ]
    assert events[-1]["data"]["status"] == "failed"


async def test_an_agent_that_cannot_continue_ends_with_worker_lost(
    thread: Any, user: Any, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(service.agents.get("builtin")), "can_continue", False)
    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 5 seconds", client_msg_id="n"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    await kill_and_continue(service, result.run_id)
    events = await logged(thread)
    assert run_violations(events) == []
    assert events[-2]["data"]["code"] == "worker_lost"


async def test_a_stale_worker_that_wakes_up_is_fenced(thread: Any, user: Any, service: Any) -> None:
    """Another worker adopts the run while this one still runs it: this one's next write is
    refused, the run stops here without a word, and the fenced counter moves."""
    fenced_before = metrics.RUNS_FENCED._value.get()
    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 0.5 seconds", client_msg_id="f"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    await database_sync_to_async(AgentRun.objects.filter(pk=result.run_id).update)(
        attempt=2, worker_id="another-worker"
    )
    await service.wait_idle()
    events = await logged(thread)
    assert events[-1]["type"] == "tool_executing"  # nothing written after the adoption
    assert metrics.RUNS_FENCED._value.get() == fenced_before + 1


async def test_a_message_reaching_a_draining_worker_is_accepted_and_released(
    thread: Any, user: Any, service: Any
) -> None:
    service.draining = True
    try:
        result = await service.submit(
            thread_id=thread.id, user=user, text="what is 2+2", client_msg_id="d"
        )
    finally:
        service.draining = False
    assert not service.runs
    run = await database_sync_to_async(AgentRun.objects.get)(pk=result.run_id)
    assert (run.status, run.released) == ("queued", True)
    assert await continuation.adopt_runs(service) == 1
    await service.wait_idle()
    events = await logged(thread)
    assert run_violations(events) == []
    assert events[-1]["data"]["text"] == "`2+2` = 4."
    run = await database_sync_to_async(AgentRun.objects.get)(pk=result.run_id)
    assert (run.attempt, run.resumes, run.released) == (2, 0, False)


async def test_a_run_that_was_failing_is_closed_out_not_continued(
    thread: Any, user: Any, service: Any
) -> None:
    """Its worker logged agent_error and died before agent_completed: the adopting worker
    ends it as failed with that error (agent_error stays directly before agent_completed)."""
    from agents.errors import AgentFailure

    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 5 seconds", client_msg_id="e"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    handle = service.runs[result.run_id]
    handle.abandon()
    await service.wait_idle()
    handle.emitter.halted = False  # it closes its tool call and logs the failure, then dies
    (call_id,) = handle.emitter.open_calls
    await handle.emitter.tool_completed(
        tool_call_id=call_id, tool="wait", status="error", error={"code": "x"}, duration_ms=0
    )
    await handle.emitter.failed(AgentFailure("unavailable", "The database failed.", retryable=True))
    await database_sync_to_async(AgentRun.objects.filter(pk=result.run_id).update)(
        heartbeat_at=timezone.now() - timedelta(seconds=600)
    )
    await continuation.adopt_runs(service)
    await service.wait_idle()
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert [e["type"] for e in events[-3:]] == ["tool_completed", "agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == "unavailable" and resumed_count(events) == 0


# --- operations -----------------------------------------------------------------------------


def test_the_admin_run_view_shows_each_attempt_and_its_worker(django_user_model: Any) -> None:
    from django.test import Client

    admin = django_user_model.objects.create_superuser(username="root", password="pw-Root-123")
    client = Client()
    client.force_login(admin)
    user = helpers.make_user("attempts")
    thread = helpers.make_thread(user)
    message = Message.objects.create(thread=thread, role="user", text="x")
    run = AgentRun.objects.create(
        thread=thread, user=user, message=message, agent="builtin", attempt=2, resumes=1
    )
    RunAttempt.objects.create(run=run, number=1, worker_id="host:1:first", reason="submitted")
    RunAttempt.objects.create(run=run, number=2, worker_id="host:2:second", reason="shutdown")
    page = client.get(f"/admin/agents/agentrun/{run.pk}/change/").content.decode()
    assert "host:1:first" in page and "host:2:second" in page and "shutdown" in page


def event_(type: str, **data: Any) -> dict[str, Any]:
    """A journal entry."""
    return {"type": type, "seq": 0, "data": data}


def test_the_fold_flags_what_continuation_must_never_do() -> None:

    started = event_("agent_started", agent="builtin", message_id="m")
    thought = event_("agent_thinking", text="t", step=1)
    resumed = event_("agent_thinking", text="again", step=2, resumed=True)
    done = event_("agent_completed", status="completed", text="", message_id=None)
    for seq, e in enumerate([started, thought, resumed, done], start=1):
        e["seq"] = seq
    assert run_violations([started, thought, resumed, done]) == []
    late = {**event_("partial_result", text="late"), "seq": 5}
    assert "partial_result after agent_completed" in fold_run([started, done, late]).anomalies
    assert "a resumed agent_thinking before agent_started" in fold_run([resumed]).anomalies
