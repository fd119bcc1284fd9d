"""The emitter's pipeline (agents/emitter.py): queued events are committed before any
socket sees them, in order; a failed queued write fails the run at its next emit or at its
end, never silently; a full pipeline holds the producer back."""

import asyncio
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.invariants import run_violations
from agents.models import AgentRun
from agents.pipeline import MAX_IN_FLIGHT
from chat import broadcaster as broadcaster_module
from chat.broadcaster import Broadcaster, EventLogError, thread_group
from chat.events import events_after
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def new_emitter(thread: Any) -> RunEmitter:
    """An emitter of a new run in `thread`, writing through a real Broadcaster."""
    return RunEmitter(
        Broadcaster(),
        thread_id=thread.id,
        run_id=uuid.uuid4(),
        message_id=uuid.uuid4(),
        assistant_message_id=uuid.uuid4(),
        agent="builtin",
    )


async def logged(thread: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = await database_sync_to_async(events_after)(
        thread_id=thread.id, after_seq=0
    )
    return events


async def test_a_failed_queued_write_fails_the_run_at_its_next_emit(
    thread: Any, token: str, service: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second delta of the answer is refused by the database: the emits after it raise
    its failure, so the run ends with agent_error{unavailable} and agent_completed{failed},
    whose text is what the log holds."""
    settings.AGENT_STREAM_CHUNK = 2
    refused = helpers.fail_event_writes(monkeypatch, {"partial_result": 1}, skip=1)
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+3"))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=10)
    await comm.disconnect()
    assert refused and set(refused) == {"partial_result"}
    events = await logged(thread)
    types = [e["type"] for e in events]
    assert types[-2:] == ["agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == "unavailable"
    assert events[-1]["data"]["status"] == "failed"
    texts = [e["data"]["text"] for e in events if e["type"] == "partial_result"]
    assert events[-1]["data"]["text"] == "".join(texts)
    assert run_violations(events) == []
    assert helpers.run_events(frames) == events  # the socket saw the log, nothing else
    run = await database_sync_to_async(AgentRun.objects.get)(pk=events[0]["run_id"])
    assert (run.status, run.error_code) == ("failed", "unavailable")


async def test_a_failed_write_of_the_last_queued_event_fails_the_run(
    thread: Any, token: str, service: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer's only delta is refused and the agent emits nothing after it: the run
    does not complete; its end raises the failure (agents/runtime.py settles first)."""
    settings.AGENT_STREAM_CHUNK = 10_000  # one partial_result for the whole answer
    refused = helpers.fail_event_writes(monkeypatch, {"partial_result": 1})
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("what is 2+3"))
    await helpers.receive_until(comm, helpers.completed, timeout=10)
    await comm.disconnect()
    assert refused == ["partial_result"] * len(refused) and refused
    events = await logged(thread)
    assert "partial_result" not in [e["type"] for e in events]
    assert [e["type"] for e in events][-2:] == ["agent_error", "agent_completed"]
    assert events[-1]["data"] == {**events[-1]["data"], "status": "failed", "text": ""}
    assert run_violations(events) == []


async def test_a_full_pipeline_holds_the_producer_back_and_nothing_is_sent_uncommitted(
    thread: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the database does not answer, a run may queue MAX_IN_FLIGHT events; the next
    emit waits for room, and no socket gets any of them before its commit. Once the
    database answers, every event is logged and sent, in order, gapless."""
    gate = asyncio.Event()
    real_append_many = broadcaster_module._append_many

    async def stalled(events: Any) -> Any:
        await gate.wait()
        return await real_append_many(events)

    layer = get_channel_layer()
    listener = await layer.new_channel()
    await layer.group_add(thread_group(thread.id), listener)
    emitter = new_emitter(thread)
    await emitter.started()
    await emitter.thinking("Writing the answer.")
    await emitter.settle()
    first = [await asyncio.wait_for(layer.receive(listener), timeout=2) for _ in range(2)]
    assert [m["seq"] for m in first] == [1, 2]  # sent once committed
    monkeypatch.setattr(broadcaster_module, "_append_many", stalled)
    for n in range(MAX_IN_FLIGHT):
        await asyncio.wait_for(emitter.partial(f"{n} "), timeout=1)  # returns at once
    blocked = asyncio.ensure_future(emitter.partial("last"))
    await asyncio.sleep(0.3)
    assert not blocked.done()  # the producer waits for room
    assert len(await logged(thread)) == 2
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(listener), timeout=0.05)  # nothing uncommitted
    gate.set()
    await asyncio.wait_for(blocked, timeout=5)
    await emitter.completed("completed")
    events = await logged(thread)
    assert [e["seq"] for e in events] == list(range(1, MAX_IN_FLIGHT + 5))
    answer = "".join(f"{n} " for n in range(MAX_IN_FLIGHT)) + "last"
    assert events[-1]["data"]["text"] == answer
    assert run_violations(events) == []
    received = first
    while len(received) < len(events):
        received.append(await asyncio.wait_for(layer.receive(listener), timeout=2))
    assert [m["seq"] for m in received] == [e["seq"] for e in events]


async def test_a_refused_queued_write_is_raised_once_then_the_close_out_may_write(
    thread: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The emitter's own account: the failure of a queued event reaches the next emit (as
    EventLogError, chained to the database's error) and only it; the tool call whose
    tool_completed was refused is open again, for the close-out to complete."""
    emitter = new_emitter(thread)
    await emitter.started()
    await emitter.tool_executing(tool_call_id="c1", tool="calculator", args={"expression": "1"})
    helpers.fail_event_writes(monkeypatch, {"tool_completed": 1})
    await emitter.tool_completed(
        tool_call_id="c1", tool="calculator", status="ok", result=1, duration_ms=1
    )
    assert emitter.open_calls == {}  # recorded when queued
    await asyncio.sleep(0.2)
    with pytest.raises(EventLogError) as raised:
        await emitter.partial("x")
    assert type(raised.value.__cause__).__name__ == "OperationalError"
    assert emitter.open_calls == {"c1": "calculator"}  # taken back: it is not in the log
    await emitter.tool_completed(
        tool_call_id="c1",
        tool="calculator",
        status="error",
        error={"code": "unavailable", "message": "The call was interrupted."},
        duration_ms=0,
    )
    await emitter.failed(AgentFailure("unavailable", "The database failed.", retryable=True))
    await emitter.completed("failed")
    events = await logged(thread)
    assert [e["type"] for e in events] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_error",
        "agent_completed",
    ]
    assert events[3]["data"]["status"] == "error"
    assert run_violations(events) == []


async def test_a_stopped_runs_failed_write_is_logged_its_fenced_one_is_not(
    thread: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`drain` (a run released, taken over or deleted) raises nothing; a database failure
    among its queued writes is logged with the run, a fenced write is expected there."""
    helpers.fail_event_writes(monkeypatch, {"partial_result": 1})
    emitter = new_emitter(thread)
    await emitter.started()
    await emitter.partial("lost ")
    with caplog.at_level("WARNING", logger="netra.runs"):
        await emitter.drain()
    failed = [r for r in caplog.records if "queued write of a stopped run" in r.getMessage()]
    assert len(failed) == 1 and failed[0].run_id == emitter.run_id  # type: ignore[attr-defined]
    assert isinstance(failed[0].exc_info[1], EventLogError)  # type: ignore[index]
    caplog.clear()
    fenced = new_emitter(thread)
    fenced.attempt = 1  # a run that is not active at attempt 1: its writes are fenced
    fenced.is_started = True
    await fenced.partial("refused ")
    with caplog.at_level("WARNING", logger="netra.runs"):
        await fenced.drain()
    assert fenced.halted
    assert not [r for r in caplog.records if "queued write" in r.getMessage()]
