"""The vocabulary of run events and the one fold over a run (docs/protocol.md).

`EventType` names every run event; it is a `StrEnum`, so a member is equal to, hashes like
and serialises (JSON, database) as its plain string. `fold_run` reads one run's events, as
clients see them (dicts with `type`, `seq`, `data`, and maybe `ts`), in seq order, into a
`RunState`: status, open tool calls, pending approvals, the answer text so far, the last
step, and where the events break the pairing rules. It is pure: no database, no clock.

Every reader of a run goes through it: rebuilding an emitter to close a run out, the
invariant check, the operations page's unpaired tool calls, the event-flow check.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """The type of a run event, as it stands in the log and on the wire."""

    AGENT_STARTED = "agent_started"
    AGENT_THINKING = "agent_thinking"
    TOOL_EXECUTING = "tool_executing"
    TOOL_COMPLETED = "tool_completed"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_RESOLVED = "approval_resolved"
    PARTIAL_RESULT = "partial_result"
    AGENT_ERROR = "agent_error"
    AGENT_COMPLETED = "agent_completed"


# The statuses agent_completed may carry.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
# What `RunState.status` is before agent_completed: no agent_started yet, going, or
# waiting for a human (an approval is pending).
NOT_STARTED = "not_started"
RUNNING = "running"
WAITING = "waiting"


@dataclass(frozen=True)
class ToolCall:
    """A tool call opened by tool_executing; `ts` is passed through as given (the wire's
    ISO text, or the log's datetime)."""

    tool_call_id: str
    tool: str
    args: Any
    seq: int | None = None
    ts: Any = None


@dataclass(frozen=True)
class FinishedCall:
    """A tool call closed by its tool_completed: `status`, and `result` or `error`."""

    call: ToolCall
    status: str
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class Approval:
    """An approval_requested not yet answered by its approval_resolved."""

    approval_id: str
    tool_call_id: str
    tool: str
    args: Any
    reason: str
    expires_at: str | None
    seq: int | None = None


@dataclass
class RunState:
    """What a run's events say about it so far."""

    started: bool = False
    completed: bool = False
    agent: str | None = None
    message_id: str | None = None
    step: int = 0
    thought: bool = False
    text_parts: list[str] = field(default_factory=list)
    open_calls: dict[str, ToolCall] = field(default_factory=dict)
    # The calls completed so far, in the order they completed (a continued run reuses them).
    finished_calls: list[FinishedCall] = field(default_factory=list)
    # How many times the run was continued by another worker (agent_thinking{resumed}).
    resumes: int = 0
    pending_approvals: dict[str, Approval] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    last_seq: int | None = None
    count: int = 0
    # Where the events break the pairing rules, in the order they were found.
    anomalies: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The answer so far: the partial_result texts, concatenated."""
        return "".join(self.text_parts)

    @property
    def status(self) -> str:
        """`not_started`, `running`, `waiting`, or the status agent_completed carried."""
        if self.final is not None:
            return str(self.final.get("status"))
        if not self.started:
            return NOT_STARTED
        return WAITING if self.pending_approvals else RUNNING


def fold_run(events: Iterable[Mapping[str, Any]], state: RunState | None = None) -> RunState:
    """Folds one run's events (in seq order) into its state; continues `state` if given.

    Event types it does not know are counted and otherwise ignored (forward compatibility).
    """
    state = RunState() if state is None else state
    for event in events:
        apply_event(state, event)
    return state


def apply_event(state: RunState, event: Mapping[str, Any]) -> None:
    """Applies one event to `state` (the step of `fold_run`)."""
    kind = event.get("type")
    data: Mapping[str, Any] = event.get("data") or {}
    state.count += 1
    if state.completed:
        state.anomalies.append(f"{kind} after agent_completed")
    if event.get("seq") is not None:
        state.last_seq = int(event["seq"])
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is not None:
        handler(state, event, data)


def _started(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    state.started = True
    state.agent = data.get("agent")
    state.message_id = data.get("message_id")


def _thinking(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    if data.get("resumed") is True:
        state.resumes += 1
        if not state.started:
            state.anomalies.append("a resumed agent_thinking before agent_started")
    state.thought = True
    state.step = max(state.step, int(data.get("step", 0)))


def _tool_executing(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    call_id = str(data.get("tool_call_id"))
    if not state.thought:
        state.anomalies.append("tool_executing before any agent_thinking")
    if call_id in state.open_calls:
        state.anomalies.append(f"tool call {call_id} executing twice")
    state.open_calls[call_id] = ToolCall(
        tool_call_id=call_id,
        tool=str(data.get("tool")),
        args=data.get("args"),
        seq=event.get("seq"),
        ts=event.get("ts"),
    )


def _tool_completed(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    call_id = str(data.get("tool_call_id"))
    call = state.open_calls.pop(call_id, None)
    if call is None:
        state.anomalies.append(f"tool_completed without tool_executing: {call_id}")
    else:
        state.finished_calls.append(
            FinishedCall(
                call=call,
                status=str(data.get("status")),
                result=data.get("result"),
                error=data.get("error"),
            )
        )
    if any(approval.tool_call_id == call_id for approval in state.pending_approvals.values()):
        state.anomalies.append(f"tool_completed of {call_id} before its approval_resolved")


def _approval_requested(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    approval_id = str(data.get("approval_id"))
    call_id = str(data.get("tool_call_id"))
    if approval_id in state.pending_approvals:
        state.anomalies.append(f"approval {approval_id} requested twice")
    if call_id not in state.open_calls:
        state.anomalies.append(f"approval_requested for a call not executing: {call_id}")
    state.pending_approvals[approval_id] = Approval(
        approval_id=approval_id,
        tool_call_id=call_id,
        tool=str(data.get("tool")),
        args=data.get("args"),
        reason=str(data.get("reason", "")),
        expires_at=data.get("expires_at"),
        seq=event.get("seq"),
    )


def _approval_resolved(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    approval_id = str(data.get("approval_id"))
    if state.pending_approvals.pop(approval_id, None) is None:
        state.anomalies.append(f"approval_resolved without approval_requested: {approval_id}")


def _partial(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    if not state.thought:
        state.anomalies.append("partial_result before any agent_thinking")
    state.text_parts.append(str(data.get("text", "")))


def _error(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    state.error = dict(data)


def _completed(state: RunState, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    if state.open_calls:
        state.anomalies.append(
            f"agent_completed with unpaired tool calls: {sorted(state.open_calls)}"
        )
    if state.pending_approvals:
        state.anomalies.append(
            f"agent_completed with unresolved approvals: {sorted(state.pending_approvals)}"
        )
    if data.get("status") not in TERMINAL_STATUSES:
        state.anomalies.append(f"agent_completed has status {data.get('status')!r}")
    if data.get("text") != state.text:
        state.anomalies.append("partial_result texts do not add up to agent_completed.text")
    if data.get("status") == "failed" and state.error is None:
        state.anomalies.append("a failed run has no agent_error")
    state.completed = True
    state.final = dict(data)


_Handler = Callable[[RunState, Mapping[str, Any], Mapping[str, Any]], None]
_HANDLERS: dict[str, _Handler] = {
    EventType.AGENT_STARTED: _started,
    EventType.AGENT_THINKING: _thinking,
    EventType.TOOL_EXECUTING: _tool_executing,
    EventType.TOOL_COMPLETED: _tool_completed,
    EventType.APPROVAL_REQUESTED: _approval_requested,
    EventType.APPROVAL_RESOLVED: _approval_resolved,
    EventType.PARTIAL_RESULT: _partial,
    EventType.AGENT_ERROR: _error,
    EventType.AGENT_COMPLETED: _completed,
}
