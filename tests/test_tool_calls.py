"""Tool calls through the real runtime, dispatcher, emitter and event log: each failure is a
typed tool_completed error, the run still completes, and tools act for the run's user."""

import asyncio
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sentry_sdk
from channels.db import database_sync_to_async
from pydantic import BaseModel

from agents.dispatcher import RunTools, ToolOutcome
from agents.emitter import RunEmitter
from agents.errors import ToolCrashedError, ToolError
from agents.invariants import run_violations
from agents.providers.base import RunInput
from agents.tools import ToolContext, tool
from chat.events import events_after
from chat.models import Thread
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


@dataclass
class CallingAgent:
    """An agent that makes the given tool calls, in order, then answers "done"."""

    calls: list[tuple[str, Any]]
    name: str = "calling"
    outcomes: list[ToolOutcome] = field(default_factory=list)

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        for name, args in self.calls:
            self.outcomes.append(await tools.call(name, args))
        await emitter.partial("done")


async def run_calls(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, calls: list[Any]
) -> tuple[list[dict[str, Any]], list[ToolOutcome]]:
    """Runs one message whose agent makes `calls`; returns the run's events and outcomes."""
    agent = CallingAgent(calls)
    monkeypatch.setitem(service.agents.agents, "builtin", agent)
    await service.submit(thread_id=thread.id, user=user, text="go", client_msg_id=uuid.uuid4().hex)
    await service.wait_idle(timeout=20)
    events = await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    assert run_violations(events) == []
    assert events[-1]["type"] == "agent_completed"
    assert events[-1]["data"]["status"] == "completed"
    return events, agent.outcomes


def completions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["type"] == "tool_completed"]


async def test_invalid_arguments_are_bad_arguments_naming_the_field(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, registry: Any
) -> None:
    @tool
    def lookup_order(order_id: int, verbose: bool = False) -> dict[str, int]:
        """Looks one order up."""
        return {"order_id": order_id}

    calls = [
        ("lookup_order", {"order_id": "seven"}),
        ("lookup_order", {}),
        ("lookup_order", {"order_id": 7, "colour": "red"}),
        ("lookup_order", {"order_id": 7}),
    ]
    events, outcomes = await run_calls(service, monkeypatch, user, thread, calls)
    done = completions(events)
    assert [d["status"] for d in done] == ["error", "error", "error", "ok"]
    assert [d["error"]["code"] for d in done[:3]] == ["bad_arguments"] * 3
    assert "order_id" in done[0]["error"]["message"]
    assert "order_id" in done[1]["error"]["message"]
    assert "colour" in done[2]["error"]["message"]
    assert done[3]["result"] == {"order_id": 7}
    # What the agent gets back (and an LLM agent tells the model) is the same error.
    assert [o.error for o in outcomes[:3]] == [d["error"] for d in done[:3]]


async def test_a_tool_error_keeps_its_own_code(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, registry: Any
) -> None:
    @tool
    async def find_ticket(ticket_id: int) -> dict[str, Any]:
        """Finds a support ticket."""
        raise ToolError("ticket_not_found", f"There is no ticket {ticket_id}.")

    events, outcomes = await run_calls(
        service, monkeypatch, user, thread, [("find_ticket", {"ticket_id": 3})]
    )
    assert completions(events)[0]["error"] == {
        "code": "ticket_not_found",
        "message": "There is no ticket 3.",
    }
    assert outcomes[0].status == "error"


async def test_any_other_exception_is_tool_crashed_and_reported(
    service: Any,
    monkeypatch: pytest.MonkeyPatch,
    user: Any,
    thread: Any,
    registry: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    captured: list[BaseException] = []
    monkeypatch.setattr(sentry_sdk, "capture_exception", captured.append)

    @tool
    def flaky_search(query: str) -> list[str]:
        """Searches the knowledge base."""
        raise ValueError("index corrupted")

    events, _ = await run_calls(
        service, monkeypatch, user, thread, [("flaky_search", {"query": "refund"})]
    )
    assert completions(events)[0]["error"]["code"] == "tool_crashed"
    assert len(captured) == 1
    assert isinstance(captured[0], ToolCrashedError)
    assert isinstance(captured[0].__cause__, ValueError)
    record = next(r for r in caplog.records if r.getMessage().startswith("tool crashed"))
    assert record.tool == "flaky_search"  # type: ignore[attr-defined]


class Receipt(BaseModel):
    order_id: int
    paid_at: datetime


async def test_a_result_that_is_not_json_is_bad_result(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, registry: Any
) -> None:
    @tool
    def raw_time() -> dict[str, Any]:
        """Returns a datetime object."""
        return {"now": datetime.now(UTC)}

    @tool
    def not_a_number() -> float:
        """Returns NaN."""
        return math.nan

    @tool
    def receipt(order_id: int) -> Receipt:
        """Returns a pydantic model, which is JSON once dumped."""
        return Receipt(order_id=order_id, paid_at=datetime(2026, 1, 2, tzinfo=UTC))

    calls = [("raw_time", {}), ("not_a_number", {}), ("receipt", {"order_id": 5})]
    events, _ = await run_calls(service, monkeypatch, user, thread, calls)
    done = completions(events)
    assert [d["error"]["code"] for d in done[:2]] == ["bad_result", "bad_result"]
    assert done[2]["status"] == "ok"
    assert done[2]["result"] == {"order_id": 5, "paid_at": "2026-01-02T00:00:00Z"}


async def test_a_tool_past_its_timeout_is_timeout(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, registry: Any
) -> None:
    @tool(timeout=0.2)
    async def slow_async() -> str:
        """Sleeps too long on the loop."""
        await asyncio.sleep(5)
        return "late"

    @tool(timeout=0.2)
    def slow_sync() -> str:
        """Sleeps too long in its thread."""
        time.sleep(1)
        return "late"

    started = time.monotonic()
    calls: list[tuple[str, Any]] = [("slow_async", {}), ("slow_sync", {}), ("clock", {})]
    events, _ = await run_calls(service, monkeypatch, user, thread, calls)
    done = completions(events)
    assert [d["error"]["code"] for d in done[:2]] == ["timeout", "timeout"]
    assert "0.2 s" in done[0]["error"]["message"]
    assert done[2]["status"] == "ok"  # the overrunning sync tool blocks nothing else
    assert time.monotonic() - started < 5


async def test_the_context_carries_the_run_and_its_user(
    service: Any,
    monkeypatch: pytest.MonkeyPatch,
    user: Any,
    other_user: Any,
    thread: Any,
    registry: Any,
) -> None:
    seen: list[tuple[ToolContext, str]] = []

    @tool
    def my_thread_titles(ctx: ToolContext) -> list[str]:
        """Lists the titles of the signed-in user's threads (a sync ORM tool)."""
        seen.append((ctx, threading.current_thread().name))
        return sorted(Thread.objects.filter(owner_id=ctx.user_id).values_list("title", flat=True))

    await database_sync_to_async(helpers.make_thread)(user, "alice's order 1")
    other_thread = await database_sync_to_async(helpers.make_thread)(other_user, "mallory's")

    events, _ = await run_calls(service, monkeypatch, user, thread, [("my_thread_titles", {})])
    assert completions(events)[0]["result"] == ["alice's order 1", "test"]
    ctx, thread_name = seen[-1]
    executing = next(e for e in events if e["type"] == "tool_executing")
    assert (ctx.user_id, ctx.username) == (user.id, "alice")
    assert (ctx.thread_id, str(ctx.run_id)) == (thread.id, executing["run_id"])
    assert ctx.tool_call_id == executing["data"]["tool_call_id"]
    assert thread_name.startswith("netra-tool")

    events, _ = await run_calls(
        service, monkeypatch, other_user, other_thread, [("my_thread_titles", {})]
    )
    assert completions(events)[0]["result"] == ["mallory's"]
    assert (seen[-1][0].user_id, seen[-1][0].username) == (other_user.id, "mallory")


async def test_a_sync_orm_tool_writes_for_its_user(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any, registry: Any
) -> None:
    @tool
    def open_ticket(ctx: ToolContext, subject: str) -> dict[str, str]:
        """Opens a support ticket (here: a thread) for the signed-in user."""
        created = Thread.objects.create(owner_id=ctx.user_id, title=f"ticket: {subject}")
        return {"ticket": str(created.id)}

    events, _ = await run_calls(
        service, monkeypatch, user, thread, [("open_ticket", {"subject": "refund"})]
    )
    ticket_id = completions(events)[0]["result"]["ticket"]
    ticket = await database_sync_to_async(Thread.objects.get)(pk=ticket_id)
    assert (ticket.owner_id, ticket.title) == (user.id, "ticket: refund")


async def test_run_tools_limit_the_agent_to_its_subset(
    service: Any, monkeypatch: pytest.MonkeyPatch, user: Any, thread: Any
) -> None:
    outcomes: list[ToolOutcome] = []

    @dataclass
    class SubsetAgent:
        name: str = "subset"
        tools: tuple[str, ...] = ("clock",)

        async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
            assert tools.names == ["clock"]
            assert [s["function"]["name"] for s in tools.schemas()] == ["clock"]
            outcomes.append(await tools.call("clock", {}))
            outcomes.append(await tools.call("calculator", {"expression": "1+1"}))
            await emitter.partial("done")

    monkeypatch.setitem(service.agents.agents, "builtin", SubsetAgent())
    await service.submit(thread_id=thread.id, user=user, text="go", client_msg_id="subset")
    await service.wait_idle(timeout=20)
    events = await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    assert run_violations(events) == []
    assert [o.status for o in outcomes] == ["ok", "error"]
    assert outcomes[1].error is not None and outcomes[1].error["code"] == "unknown_tool"
