"""The run-event vocabulary and the fold over a run, and the readers built on it."""

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.invariants import run_violations
from chat.runevents import (
    NOT_STARTED,
    RUNNING,
    WAITING,
    EventType,
    RunState,
    fold_run,
)
from tests import helpers

# --- building runs --------------------------------------------------------------------------


class Run:
    """Writes the events of one well-formed run, numbering seqs from 1."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, type: str, **data: Any) -> "Run":
        self.events.append({"type": type, "seq": len(self.events) + 1, "data": data})
        return self

    def started(self) -> "Run":
        return self.add(EventType.AGENT_STARTED, agent="builtin", message_id="m1")

    def thinking(self, step: int) -> "Run":
        return self.add(EventType.AGENT_THINKING, text="hm", step=step)

    def executing(self, call: str, tool: str = "calculator") -> "Run":
        return self.add(EventType.TOOL_EXECUTING, tool_call_id=call, tool=tool, args={"x": 1})

    def tool_done(self, call: str, tool: str = "calculator") -> "Run":
        return self.add(
            EventType.TOOL_COMPLETED,
            tool_call_id=call,
            tool=tool,
            status="ok",
            result=1,
            duration_ms=1,
        )

    def requested(self, approval: str, call: str) -> "Run":
        return self.add(
            EventType.APPROVAL_REQUESTED,
            approval_id=approval,
            tool_call_id=call,
            tool="calculator",
            args={"x": 1},
            reason="it asks",
            expires_at="2026-01-01T00:00:00Z",
        )

    def resolved(self, approval: str, decision: str = "approved") -> "Run":
        return self.add(
            EventType.APPROVAL_RESOLVED, approval_id=approval, decision=decision, comment=""
        )

    def partial(self, text: str) -> "Run":
        return self.add(EventType.PARTIAL_RESULT, message_id="a1", text=text)

    def error(self) -> "Run":
        return self.add(EventType.AGENT_ERROR, code="boom", message="it broke", retryable=True)

    def completed(self, status: str, text: str) -> "Run":
        return self.add(
            EventType.AGENT_COMPLETED, status=status, message_id=None, text=text, duration_ms=5
        )


# --- the vocabulary -------------------------------------------------------------------------


def test_event_types_are_their_strings_in_json_and_comparisons() -> None:
    assert [t.value for t in EventType] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "approval_requested",
        "approval_resolved",
        "partial_result",
        "agent_error",
        "agent_completed",
    ]
    assert EventType.AGENT_COMPLETED == "agent_completed"
    assert f"{EventType.TOOL_EXECUTING}" == "tool_executing"
    assert json.dumps({"type": EventType.PARTIAL_RESULT}) == '{"type": "partial_result"}'
    assert {"agent_error": 1}[EventType.AGENT_ERROR] == 1


# --- the fold -------------------------------------------------------------------------------


def test_fold_of_a_whole_run() -> None:
    run = (
        Run()
        .started()
        .thinking(1)
        .executing("c1")
        .tool_done("c1")
        .thinking(2)
        .partial("4")
        .partial("2")
        .completed("completed", "42")
    )
    state = fold_run(run.events)
    assert state.status == "completed"
    assert (state.started, state.completed) == (True, True)
    assert (state.agent, state.message_id) == ("builtin", "m1")
    assert (state.step, state.text, state.last_seq, state.count) == (2, "42", 8, 8)
    assert state.open_calls == {} and state.pending_approvals == {}
    assert state.error is None and state.final is not None
    assert state.anomalies == []


def test_fold_of_a_run_in_progress_keeps_its_open_calls() -> None:
    assert fold_run([]).status == NOT_STARTED
    run = Run().started().thinking(1).executing("c1", "clock").executing("c2")
    run.events[-1]["ts"] = "2026-01-01T00:00:00Z"
    state = fold_run(run.events)
    assert state.status == RUNNING
    assert list(state.open_calls) == ["c1", "c2"]
    call = state.open_calls["c2"]
    assert (call.tool, call.args, call.seq) == ("calculator", {"x": 1}, 4)
    assert call.ts == "2026-01-01T00:00:00Z"  # passed through as given


def test_fold_of_approvals_waits_then_goes_on() -> None:
    run = Run().started().thinking(1).executing("c1").requested("a1", "c1")
    state = fold_run(run.events)
    assert state.status == WAITING
    approval = state.pending_approvals["a1"]
    assert (approval.tool_call_id, approval.reason, approval.seq) == ("c1", "it asks", 4)
    run.resolved("a1").tool_done("c1").completed("completed", "")
    state = fold_run(run.events)
    assert state.status == "completed" and state.pending_approvals == {}
    assert run_violations(run.events) == []


def test_fold_of_a_failed_run_keeps_the_error() -> None:
    run = Run().started().thinking(1).partial("par").error().completed("failed", "par")
    state = fold_run(run.events)
    assert state.status == "failed"
    assert state.error == {"code": "boom", "message": "it broke", "retryable": True}
    assert run_violations(run.events) == []


def test_fold_continues_a_state_and_ignores_unknown_types() -> None:
    run = Run().started().thinking(1).add("something_new", x=1).partial("a").partial("b")
    whole = fold_run(run.events)
    halves = fold_run(run.events[3:], fold_run(run.events[:3]))
    assert whole == halves
    assert (whole.count, whole.text, whole.anomalies) == (5, "ab", [])


@pytest.mark.parametrize(
    ("build", "anomaly"),
    [
        (lambda r: r.started().executing("c1"), "tool_executing before any agent_thinking"),
        (lambda r: r.started().partial("x"), "partial_result before any agent_thinking"),
        (lambda r: r.started().thinking(1).executing("c").executing("c"), "executing twice"),
        (lambda r: r.started().thinking(1).tool_done("c9"), "without tool_executing: c9"),
        (
            lambda r: r.started().thinking(1).executing("c").completed("completed", ""),
            "unpaired tool calls: ['c']",
        ),
        (lambda r: r.started().completed("done", ""), "has status 'done'"),
        (lambda r: r.started().thinking(1).partial("a").completed("completed", "b"), "add up"),
        (lambda r: r.started().completed("failed", ""), "a failed run has no agent_error"),
        (
            lambda r: r.started().thinking(1).executing("c").requested("a", "c").tool_done("c"),
            "tool_completed of c before its approval_resolved",
        ),
        (lambda r: r.started().thinking(1).resolved("a"), "without approval_requested: a"),
        (lambda r: r.started().thinking(1).requested("a", "c"), "for a call not executing: c"),
        (
            lambda r: (
                r.started()
                .thinking(1)
                .executing("c")
                .requested("a", "c")
                .completed("cancelled", "")
            ),
            "unresolved approvals: ['a']",
        ),
    ],
)
def test_fold_notes_where_the_pairing_breaks(build: Any, anomaly: str) -> None:
    events = build(Run()).events
    anomalies = fold_run(events).anomalies
    assert any(anomaly in found for found in anomalies), anomalies
    assert any(anomaly in found for found in run_violations(events))


# --- generated runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A run to generate: per step, its tool calls (True: needs approval) and answer text."""

    steps: list[tuple[list[bool], list[str]]]
    status: str
    stop_at: int


texts = st.text(alphabet="abc 42", min_size=1, max_size=4)
steps = st.tuples(st.lists(st.booleans(), max_size=3), st.lists(texts, max_size=3))
plans = st.builds(
    Plan,
    st.lists(steps, min_size=1, max_size=4),
    st.sampled_from(["completed", "failed", "cancelled"]),
    st.integers(min_value=0, max_value=60),
)


def build(plan: Plan) -> tuple[Run, str]:
    """Writes the plan as a well-formed run; returns it and its answer text."""
    run, calls = Run().started(), 0
    for number, (tools, parts) in enumerate(plan.steps, start=1):
        run.thinking(number)
        for needs_approval in tools:
            calls += 1
            run.executing(f"c{calls}")
            if needs_approval:
                run.requested(f"a{calls}", f"c{calls}").resolved(f"a{calls}")
            run.tool_done(f"c{calls}")
        for part in parts:
            run.partial(part)
    text = "".join(e["data"]["text"] for e in run.events if e["type"] == "partial_result")
    if plan.status == "failed":
        run.error()
    run.completed(plan.status, text)
    return run, text


@given(plans)
def test_generated_runs_fold_whole_and_keep_the_invariants(plan: Plan) -> None:
    run, text = build(plan)
    state = fold_run(run.events)
    assert state.anomalies == [] and run_violations(run.events) == []
    assert (state.status, state.text, state.step) == (plan.status, text, len(plan.steps))
    assert state.open_calls == {} and state.pending_approvals == {}
    assert (state.error is not None) == (plan.status == "failed")


@given(plans)
def test_every_prefix_of_a_run_folds_to_what_it_has_opened(plan: Plan) -> None:
    run, _ = build(plan)
    prefix = run.events[: plan.stop_at]
    state = fold_run(prefix)
    opened = {e["data"]["tool_call_id"] for e in prefix if e["type"] == "tool_executing"}
    closed = {e["data"]["tool_call_id"] for e in prefix if e["type"] == "tool_completed"}
    asked = {e["data"]["approval_id"] for e in prefix if e["type"] == "approval_requested"}
    answered = {e["data"]["approval_id"] for e in prefix if e["type"] == "approval_resolved"}
    assert set(state.open_calls) == opened - closed
    assert set(state.pending_approvals) == asked - answered
    assert state.anomalies == []
    assert state.count == len(prefix)
    if prefix and prefix[-1]["type"] != "agent_completed":
        assert state.status == (WAITING if asked - answered else RUNNING)
    assert state == fold_run(prefix[len(prefix) // 2 :], fold_run(prefix[: len(prefix) // 2]))


@given(plans, st.data())
def test_a_run_missing_one_pairing_event_is_caught(plan: Plan, data: st.DataObject) -> None:
    run, _ = build(plan)
    pairing = [
        i
        for i, e in enumerate(run.events)
        if e["type"] in {EventType.TOOL_COMPLETED, EventType.APPROVAL_RESOLVED}
    ]
    if not pairing:
        return
    drop = data.draw(st.sampled_from(pairing))
    events = run.events[:drop] + run.events[drop + 1 :]
    events = [{**e, "seq": seq} for seq, e in enumerate(events, start=1)]
    assert fold_run(events).anomalies != []
    assert run_violations(events) != []


def test_a_fresh_state_is_empty() -> None:
    assert fold_run([]) == RunState()


# --- the readers built on the fold (database) -------------------------------------------


@pytest.mark.django_db
def test_ops_page_and_the_reaper_read_a_run_through_the_fold() -> None:
    from agents.models import AgentRun, RunStatus
    from agents.ops import ops_overview
    from agents.selectors import emitter_from_log
    from agents.services import RunSpec
    from chat.events import event_append
    from chat.models import Message

    user = helpers.make_user("folder")
    thread = helpers.make_thread(user)
    message = Message.objects.create(thread=thread, role="user", text="what is 6*7")
    run = AgentRun.objects.create(
        thread=thread, user=user, message=message, agent="builtin", status=RunStatus.RUNNING
    )
    events = Run().started().thinking(1).executing("c1").executing("c2").tool_done("c2")
    events.partial("so far").error()
    for event in events.events:
        event_append(thread_id=thread.id, run_id=run.id, type=event["type"], data=event["data"])

    unpaired = ops_overview()["unpaired"]
    assert [(u["run"].id, u["tool_call_id"], u["tool"]) for u in unpaired] == [
        (run.id, "c1", "calculator")
    ]
    assert unpaired[0]["since"] is not None and unpaired[0]["since"].tzinfo is not None

    spec = RunSpec(
        run_id=run.id,
        thread_id=thread.id,
        message_id=message.id,
        assistant_message_id=run.assistant_message_id,
        user_id=user.id,
        text=message.text,
        agent="builtin",
    )
    emitter = emitter_from_log(broadcaster=None, spec=spec)
    assert (emitter.is_started, emitter.is_completed, emitter.step) == (True, False, 1)
    assert emitter.open_calls == {"c1": "calculator"}
    assert emitter.text == "so far"
    assert emitter.error is not None
    assert (emitter.error.code, emitter.error.retryable) == ("boom", True)
    assert uuid.UUID(str(emitter.run_id)) == run.id


# --- the client's mirror --------------------------------------------------------------------

PROTOCOL_JS = Path(__file__).resolve().parent.parent / "chat" / "static" / "chat" / "protocol.js"


def js_table(name: str) -> dict[str, str]:
    """The `NAME: value` pairs of one `export const <name> = Object.freeze({...})`."""
    source = PROTOCOL_JS.read_text()
    body = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", source, re.S)
    assert body is not None, name
    return dict(re.findall(r"(\w+): \"?([\w.]+)\"?,", body.group(1)))


def test_the_client_names_the_same_event_types_and_close_codes() -> None:
    assert js_table("EventType") == {t.name: t.value for t in EventType}
    assert js_table("CloseCode") == {
        "NORMAL": "1000",
        "ABNORMAL": "1006",
        "PROTOCOL_ERROR": "4400",
        "UNAUTHENTICATED": "4401",
        "FORBIDDEN": "4403",
        "THREAD_NOT_FOUND": "4404",
        "AUTH_TIMEOUT": "4408",
        "RATE_LIMITED": "4429",
        "INTERNAL_ERROR": "4500",
        "UNAVAILABLE": "4503",
    }
    for module in ("chat.js", "socket.js", "runs.js"):
        source = (PROTOCOL_JS.parent / module).read_text()
        named = [t.value for t in EventType if f'"{t.value}"' in source]
        codes = re.findall(r"\b4[45]\d\d\b", source)
        assert (named, codes) == ([], []), f"{module} names the protocol outside protocol.js"
