"""Approvals in one process, through the real agent service, dispatcher and event log: the
policy callable, a waiting run that holds no task, each answer continuing the run, the
second answer and another user's approval, expiry by the sweep, the OpenAI-compatible
agent told the outcome, and invariant 6 in the checker. Over real sockets and across a
restart: tests/test_approvals.py."""

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents import approvals, continuation
from agents.dispatcher import RunTools
from agents.emitter import RunEmitter
from agents.invariants import run_violations
from agents.models import AgentRun, Approval, RunStatus
from agents.providers.base import RunInput
from agents.testing import (
    Reply,
    ScriptedLLM,
    call_piece,
    call_start,
    text_chunks,
    tool_chunks,
)
from agents.tools import ToolContext, tool
from chat import metrics
from chat.errors import ErrorCode, NetraError
from chat.events import events_after
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


@dataclass
class RefundAgent:
    """Refunds the amounts it is given (one call each), then says what came of them."""

    amounts: list[float]
    name: str = "refunder"
    can_continue = True

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        done = [e for e in run_input.journal if e["type"] == "tool_completed"]
        if not run_input.journal:
            await emitter.thinking("Refunding.")
        outcomes = []
        for amount in self.amounts[len(done) :]:
            outcomes.append(await tools.call("refund", {"amount": amount}))
        statuses = [e["data"]["status"] for e in done] + [o.status for o in outcomes]
        await emitter.partial(" ".join(statuses))


def big_refunds(args: dict[str, Any], ctx: ToolContext) -> str | None:
    """The policy under test: refunds over 100 need the user's approval."""
    assert ctx.username == "alice" and ctx.tool_call_id
    return f"Refund {args['amount']:g} EUR?" if args["amount"] > 100 else None


@pytest.fixture
def refunder(service: Any, registry: Any, monkeypatch: pytest.MonkeyPatch) -> RefundAgent:
    @tool(requires_approval=big_refunds)
    async def refund(amount: float) -> dict[str, Any]:
        """Refunds an amount."""
        return {"refunded": amount}

    agent = RefundAgent([20.0, 250.0])
    monkeypatch.setitem(service.agents.agents, "builtin", agent)
    return agent


async def thread_events(thread: Any) -> list[dict[str, Any]]:
    return await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)


async def start_waiting(service: Any, user: Any, thread: Any) -> dict[str, Any]:
    """Submits a message whose run stops at an approval; returns the approval_requested."""
    await service.submit(thread_id=thread.id, user=user, text="go", client_msg_id=uuid.uuid4().hex)
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert events[-1]["type"] == "approval_requested", [e["type"] for e in events]
    return events[-1]


async def test_the_policy_asks_only_for_big_refunds_and_the_run_holds_no_task(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    requested = metrics.APPROVALS.labels(decision="requested")._value.get()
    asked = await start_waiting(service, user, thread)
    events = await thread_events(thread)
    assert [e["type"] for e in events] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",  # 20 EUR: the policy returned None
        "tool_executing",
        "approval_requested",
    ]
    assert asked["data"]["reason"] == "Refund 250 EUR?"
    assert asked["data"]["tool_call_id"] == events[-2]["data"]["tool_call_id"]
    assert asked["data"]["args"] == {"amount": 250.0}
    assert service.runs == {}, "a waiting run holds no task"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=asked["run_id"])
    assert run.status == RunStatus.WAITING
    assert metrics.APPROVALS.labels(decision="requested")._value.get() == requested + 1
    await service.beat()  # the heartbeat leaves a waiting run alone
    assert await database_sync_to_async(AgentRun.objects.filter(status="waiting").count)() == 1


async def test_an_approval_continues_the_run_and_a_second_answer_is_409(
    service: Any, user: Any, other_user: Any, thread: Any, refunder: RefundAgent
) -> None:
    asked = await start_waiting(service, user, thread)
    approval_id = uuid.UUID(asked["data"]["approval_id"])
    with pytest.raises(NetraError) as other:
        await service.resolve_approval(approval_id=approval_id, user=other_user, decision="approve")
    assert other.value.code == ErrorCode.APPROVAL_NOT_FOUND and other.value.status == 404
    await service.resolve_approval(approval_id=approval_id, user=user, decision="approve")
    await service.wait_idle(timeout=20)
    with pytest.raises(NetraError) as again:
        await service.resolve_approval(approval_id=approval_id, user=user, decision="deny")
    assert again.value.code == ErrorCode.APPROVAL_RESOLVED and again.value.status == 409
    events = await thread_events(thread)
    assert run_violations(events) == []
    assert [e["type"] for e in events[6:]] == [
        "approval_resolved",
        "tool_completed",
        "partial_result",
        "agent_completed",
    ]
    assert events[6]["data"] == {
        "approval_id": str(approval_id),
        "decision": "approved",
        "comment": "",
    }
    assert events[7]["data"]["status"] == "ok" and events[7]["data"]["result"] == {
        "refunded": 250.0
    }
    assert events[-1]["data"]["text"] == "ok ok"
    row = await database_sync_to_async(Approval.objects.get)(pk=approval_id)
    assert row.decision == "approved" and row.resolved_by_id == user.pk


async def test_a_denial_completes_the_call_denied_with_the_comment(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    asked = await start_waiting(service, user, thread)
    await service.resolve_approval(
        approval_id=uuid.UUID(asked["data"]["approval_id"]),
        user=user,
        decision="deny",
        comment="too much",
    )
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    completed = events[7]
    assert completed["type"] == "tool_completed"
    assert completed["data"]["status"] == "denied"
    assert completed["data"]["error"] == {"code": "denied", "message": "too much"}
    assert events[-1]["data"] == {**events[-1]["data"], "status": "completed", "text": "ok denied"}


async def test_the_sweep_expires_an_unanswered_approval(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    asked = await start_waiting(service, user, thread)
    await database_sync_to_async(Approval.objects.update)(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert await service.expire_approvals() == 1
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    resolved, completed = events[6], events[7]
    assert resolved["data"]["decision"] == "expired"
    assert resolved["data"]["approval_id"] == asked["data"]["approval_id"]
    assert completed["data"]["status"] == "error"
    assert completed["data"]["error"]["code"] == "approval_expired"
    assert events[-1]["data"]["text"] == "ok error"
    assert metrics.APPROVALS_PENDING._value.get() == 0


async def test_a_cancel_of_a_waiting_run_denies_it_and_ends_the_run_cancelled(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    asked = await start_waiting(service, user, thread)
    await service.cancel(run_id=uuid.UUID(asked["run_id"]), user=user)
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    assert [e["type"] for e in events[6:]] == [
        "approval_resolved",
        "tool_completed",
        "agent_completed",
    ]
    assert events[6]["data"]["decision"] == "denied"
    assert events[6]["data"]["comment"] == "run cancelled"
    assert events[7]["data"]["error"] == {"code": "denied", "message": "run cancelled"}
    assert events[-1]["data"]["status"] == "cancelled"
    run = await database_sync_to_async(AgentRun.objects.get)(pk=asked["run_id"])
    assert run.status == RunStatus.CANCELLED


async def test_a_waiting_run_keeps_the_thread_busy(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    await start_waiting(service, user, thread)
    with pytest.raises(NetraError) as busy:
        await service.submit(
            thread_id=thread.id, user=user, text="again", client_msg_id=uuid.uuid4().hex
        )
    assert busy.value.code == ErrorCode.RUN_IN_PROGRESS


def test_the_checker_names_an_unresolved_or_doubly_resolved_approval() -> None:
    def ev(seq: int, type_: str, **data: Any) -> dict[str, Any]:
        return {"type": type_, "seq": seq, "run_id": "r", "data": data}

    head = [
        ev(1, "agent_started", agent="a", message_id="m"),
        ev(2, "agent_thinking", text="t", step=1),
        ev(3, "tool_executing", tool_call_id="c", tool="x", args={}),
        ev(4, "approval_requested", approval_id="a1", tool_call_id="c", tool="x", args={}),
    ]
    done = ev(9, "agent_completed", status="completed", message_id=None, text="")
    early = [*head, ev(5, "tool_completed", tool_call_id="c", tool="x", status="ok"), done]
    assert any("before its approval_resolved" in p for p in run_violations(early))
    twice = [
        *head,
        ev(5, "approval_resolved", approval_id="a1", decision="denied", comment=""),
        ev(6, "approval_resolved", approval_id="a1", decision="approved", comment=""),
        ev(7, "tool_completed", tool_call_id="c", tool="x", status="denied", error={}),
        done,
    ]
    assert any("without approval_requested" in p for p in run_violations(twice))
    wrong = [
        *head,
        ev(5, "approval_resolved", approval_id="a1", decision="denied", comment=""),
        ev(6, "tool_completed", tool_call_id="c", tool="x", status="ok", result=1),
        done,
    ]
    assert "a denied call did not complete as denied" in run_violations(wrong)


async def test_the_builtin_send_note_asks_then_sends(service: Any, user: Any, thread: Any) -> None:
    await service.submit(
        thread_id=thread.id, user=user, text="send a note: hello", client_msg_id="n1"
    )
    await service.wait_idle(timeout=20)
    asked = (await thread_events(thread))[-1]
    assert asked["type"] == "approval_requested" and asked["data"]["tool"] == "send_note"
    assert "hello" in asked["data"]["reason"]
    await service.resolve_approval(
        approval_id=uuid.UUID(asked["data"]["approval_id"]), user=user, decision="approve"
    )
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    assert events[-1]["data"]["text"] == "I sent the note: hello"
    count = AgentRun.objects.filter(thread_id=thread.id).count
    assert await database_sync_to_async(count)() == 1


# --- the OpenAI-compatible agent is told each outcome -----------------------------------------


@pytest.mark.parametrize(
    ("decision", "told"),
    [
        ("approve", {"result": {"sent": True, "note": "hi"}}),
        ("deny", {"error": {"code": "denied", "message": "no thanks"}}),
    ],
)
async def test_the_openai_agent_is_told_the_answer(
    service: Any, user: Any, scripted_llm: ScriptedLLM, decision: str, told: dict[str, Any]
) -> None:
    thread = await database_sync_to_async(helpers.make_thread)(user, agent="openai")
    scripted_llm.script(
        Reply(
            chunks=tool_chunks(
                call_start(0, "call_n", "send_note"), call_piece(0, '{"text": "hi"}')
            )
        ),
        Reply(chunks=text_chunks("Done as you said.")),
    )
    asked = await start_waiting(service, user, thread)
    assert asked["data"]["tool_call_id"] == "call_n"
    assert len(scripted_llm.requests) == 1, "nothing is asked of the model while waiting"
    await service.resolve_approval(
        approval_id=uuid.UUID(asked["data"]["approval_id"]),
        user=user,
        decision=decision,
        comment="no thanks" if decision == "deny" else "",
    )
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    again = scripted_llm.requests[1].body["messages"]
    assert again[-2]["tool_calls"][0]["id"] == "call_n"
    assert again[-1]["role"] == "tool" and again[-1]["tool_call_id"] == "call_n"
    assert json.loads(again[-1]["content"]) == told
    assert events[-1]["data"]["text"] == "Done as you said."


async def test_an_answer_whose_worker_died_before_going_on_is_settled_by_adoption(
    service: Any, user: Any, thread: Any, refunder: RefundAgent
) -> None:
    """The answer was recorded (the run taken over) by a worker that stopped before it
    emitted anything: the adoption sweep continues the run and settles the answer first."""
    asked = await start_waiting(service, user, thread)
    adoption = await database_sync_to_async(approvals.run_resolve_approval)(
        approval_id=uuid.UUID(asked["data"]["approval_id"]),
        user=user,
        decision="approved",
        comment="",
        worker_id="worker-that-died",
    )
    assert adoption is not None
    await database_sync_to_async(AgentRun.objects.filter(pk=asked["run_id"]).update)(
        heartbeat_at=timezone.now() - timedelta(minutes=5)
    )
    assert await continuation.adopt_runs(service) == 1
    await service.wait_idle(timeout=20)
    events = await thread_events(thread)
    assert run_violations(events) == []
    types = [e["type"] for e in events[6:]]
    assert types[:3] == ["agent_thinking", "approval_resolved", "tool_completed"]
    assert events[6]["data"]["resumed"] is True
    assert events[8]["data"]["status"] == "ok"
    assert events[-1]["data"]["text"] == "ok ok"
