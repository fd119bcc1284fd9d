"""Our run events as AG-UI events (docs/protocol.md, "AG-UI").

`AguiRun` is the renderer of one run's AG-UI stream (chat/sse.py): fed the thread's events
in seq order, it writes those of its run as AG-UI events, built with the `ag-ui-protocol`
models and encoded by its EventEncoder, each with `id: <seq>` (one of our events may become
several AG-UI events; they share its seq). The mapping:

| our event            | AG-UI                                                          |
|----------------------|----------------------------------------------------------------|
| `agent_started`      | RUN_STARTED                                                    |
| `agent_thinking`     | REASONING_START, REASONING_MESSAGE_START/CONTENT/END, REASONING_END |
| `tool_executing`     | TOOL_CALL_START, TOOL_CALL_ARGS (the call stays open)          |
| `tool_completed`     | TOOL_CALL_END, TOOL_CALL_RESULT                                |
| `approval_requested` | CUSTOM `on_interrupt` (an AG-UI Interrupt as its value)        |
| `partial_result`     | TEXT_MESSAGE_START (first), TEXT_MESSAGE_CONTENT               |
| `agent_error`        | RUN_ERROR                                                      |
| `agent_completed`    | TEXT_MESSAGE_END, then RUN_FINISHED (outcome `cancelled` for a |
|                      | cancel); failed: RUN_ERROR, unless agent_error sent it         |
| anything else        | CUSTOM `netra.<type>` with our event as its value              |

A tool call is open from its `tool_executing` to its `tool_completed` and the answer text
from the first `partial_result` to `agent_completed`, exactly what `fold_run` reports as
open, so a rejoin (`reopen`) re-sends RUN_STARTED and the START of each of them.
"""

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from ag_ui.core import (
    BaseEvent,
    CustomEvent,
    Interrupt,
    ReasoningEndEvent,
    ReasoningMessageContentEvent,
    ReasoningMessageEndEvent,
    ReasoningMessageStartEvent,
    ReasoningStartEvent,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder

from chat.runevents import EventType, RunState

ENCODER = EventEncoder()
INTERRUPT_EVENT = "on_interrupt"  # the CUSTOM name AG-UI front ends handle as an interrupt


def _ms(ts: Any) -> int | None:
    """The envelope's ISO timestamp as AG-UI's epoch milliseconds."""
    if not isinstance(ts, str):
        return None
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class AguiRun:
    """The AG-UI stream of one run: `thread_id` and `run_id` are the AG-UI ids (the run id
    the client chose), `netra_run_id` ours; events of other runs are not written."""

    def __init__(self, *, thread_id: str, run_id: str, netra_run_id: str) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.netra_run_id = netra_run_id
        self.started = False
        self.over = False  # RUN_FINISHED or RUN_ERROR was written
        self.open_calls: dict[str, str] = {}  # tool_call_id -> tool
        self.text_id: str | None = None
        self._handlers: dict[str, Callable[[Mapping[str, Any], int], list[BaseEvent]]] = {
            EventType.AGENT_STARTED: self._started,
            EventType.AGENT_THINKING: self._thinking,
            EventType.TOOL_EXECUTING: self._tool_executing,
            EventType.TOOL_COMPLETED: self._tool_completed,
            EventType.APPROVAL_REQUESTED: self._approval_requested,
            EventType.PARTIAL_RESULT: self._partial,
            EventType.AGENT_ERROR: self._error,
            EventType.AGENT_COMPLETED: self._completed,
        }

    # --- the Renderer of chat/sse.py ------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once RUN_FINISHED or RUN_ERROR was written: the stream ends."""
        return self.over

    def event(self, seq: int, event_type: str, text: str) -> str:
        """The SSE text of one of our events (its envelope JSON)."""
        envelope = json.loads(text)
        return self.encode(self.map(envelope), seq)

    def frame(self, text: str) -> str:
        """Frames that are not run events (`resume_complete`) have no AG-UI form."""
        return ""

    def encode(self, events: Iterable[BaseEvent], seq: int) -> str:
        """The SSE text of AG-UI events, each with `id: <seq>`."""
        return "".join(f"id: {seq}\n{ENCODER.encode(event)}" for event in events)

    # --- the mapping ----------------------------------------------------------------------

    def map(self, envelope: Mapping[str, Any]) -> list[BaseEvent]:
        """The AG-UI events of one of our events (none for another run's, or after the end)."""
        if self.over or str(envelope.get("run_id")) != self.netra_run_id:
            return []
        kind = str(envelope.get("type"))
        if not self.started and kind != EventType.AGENT_STARTED:
            return []  # a verifier needs RUN_STARTED first; only a rejoin starts mid-run
        handler = self._handlers.get(kind)
        if handler is None:
            events: list[BaseEvent] = [CustomEvent(name=f"netra.{kind}", value=dict(envelope))]
        else:
            events = handler(envelope.get("data") or {}, int(envelope.get("seq", 0)))
        timestamp = _ms(envelope.get("ts"))
        for event in events:
            event.timestamp = timestamp
        return events

    def _started(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        if self.started:
            return []
        self.started = True
        return [RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)]

    def _thinking(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        reasoning_id = f"{self.netra_run_id}-reasoning-{seq}"
        text = str(data.get("text") or "")
        events: list[BaseEvent] = [
            ReasoningStartEvent(message_id=reasoning_id),
            ReasoningMessageStartEvent(message_id=reasoning_id, role="reasoning"),
        ]
        if text:
            events.append(ReasoningMessageContentEvent(message_id=reasoning_id, delta=text))
        events += [
            ReasoningMessageEndEvent(message_id=reasoning_id),
            ReasoningEndEvent(message_id=reasoning_id),
        ]
        return events

    def _tool_executing(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        call_id, tool = str(data.get("tool_call_id")), str(data.get("tool"))
        if call_id in self.open_calls:
            return []
        self.open_calls[call_id] = tool
        return [
            ToolCallStartEvent(tool_call_id=call_id, tool_call_name=tool),
            ToolCallArgsEvent(tool_call_id=call_id, delta=_json(data.get("args", {}))),
        ]

    def _tool_completed(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        call_id = str(data.get("tool_call_id"))
        events: list[BaseEvent] = []
        if self.open_calls.pop(call_id, None) is not None:
            events.append(ToolCallEndEvent(tool_call_id=call_id))
        outcome = {"status": data.get("status")}
        if "result" in data:
            outcome["result"] = data.get("result")
        if data.get("error") is not None:
            outcome["error"] = data.get("error")
        events.append(
            ToolCallResultEvent(
                message_id=f"{call_id}-result",
                tool_call_id=call_id,
                content=_json(outcome),
                role="tool",
            )
        )
        return events

    def _approval_requested(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        interrupt = Interrupt(
            id=str(data.get("approval_id")),
            reason=str(data.get("reason") or "approval required"),
            message=f"Approve the call of {data.get('tool')}?",
            tool_call_id=str(data.get("tool_call_id")),
            expires_at=data.get("expires_at"),
            metadata={"tool": data.get("tool"), "args": data.get("args")},
        )
        value = interrupt.model_dump(mode="json", by_alias=True, exclude_none=True)
        return [CustomEvent(name=INTERRUPT_EVENT, value=value)]

    def _partial(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        events: list[BaseEvent] = []
        if self.text_id is None:
            self.text_id = str(data.get("message_id"))
            events.append(TextMessageStartEvent(message_id=self.text_id, role="assistant"))
        text = str(data.get("text") or "")
        if text:
            events.append(TextMessageContentEvent(message_id=self.text_id, delta=text))
        return events

    def _error(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        self.over = True
        return [
            RunErrorEvent(
                message=str(data.get("message") or "The run failed."), code=data.get("code")
            )
        ]

    def _completed(self, data: Mapping[str, Any], seq: int) -> list[BaseEvent]:
        events: list[BaseEvent] = []
        if self.text_id is not None:
            events.append(TextMessageEndEvent(message_id=self.text_id))
            self.text_id = None
        events += [ToolCallEndEvent(tool_call_id=call_id) for call_id in self.open_calls]
        self.open_calls.clear()
        self.over = True
        status = data.get("status")
        if status == "failed":
            events.append(RunErrorEvent(message="The run failed.", code="run_failed"))
            return events
        result = {"status": status, "message_id": data.get("message_id"), "text": data.get("text")}
        outcome = RunFinishedCancelledOutcome() if status == "cancelled" else None
        events.append(
            RunFinishedEvent(
                thread_id=self.thread_id, run_id=self.run_id, result=result, outcome=outcome
            )
        )
        return events

    # --- rejoin ---------------------------------------------------------------------------

    def reopen(self, state: RunState, *, text_message_id: str | None, seq: int) -> str:
        """Takes up the run where a client's stream was cut (`state` folds the events it
        had) and returns the SSE text that re-opens it: RUN_STARTED and the START of every
        tool call and message still open, with `id: <seq>`; '' for a run that is over."""
        if not state.started or state.completed or state.error is not None:
            self.started = state.started
            self.over = state.completed or state.error is not None
            return ""
        self.started = True
        events: list[BaseEvent] = [RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id)]
        for call in state.open_calls.values():
            self.open_calls[call.tool_call_id] = call.tool
            events.append(
                ToolCallStartEvent(tool_call_id=call.tool_call_id, tool_call_name=call.tool)
            )
        if state.text_parts and text_message_id is not None:
            self.text_id = text_message_id
            events.append(TextMessageStartEvent(message_id=text_message_id, role="assistant"))
        return self.encode(events, seq)
