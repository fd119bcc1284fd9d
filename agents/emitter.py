"""The emitter of one run: every event of a run goes through it, and it keeps the invariants.

Invariants kept here (docs/protocol.md): agent_started first and agent_completed last,
each once; an agent_thinking before the first tool call or answer text; every
tool_executing paired (the dispatcher closes calls from a `finally`); the concatenated
partial_result texts equal agent_completed.data.text.

An emitter writes for one attempt of its run (`attempt`): once a write is fenced (the run
was adopted elsewhere) or the emitter is halted (its worker released the run), it writes
nothing more and every emit raises RunFencedError.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.errors import AgentFailure
from chat.events import RunFencedError
from chat.runevents import EventType

InTransaction = Callable[[], None]


class EmitterStateError(RuntimeError):
    """An event out of the run's order: a bug in the agent code."""


@dataclass
class RunEmitter:
    """Emits the events of one run through the broadcaster."""

    broadcaster: Any
    thread_id: uuid.UUID
    run_id: uuid.UUID
    message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    agent: str
    started_at: float = field(default_factory=time.monotonic)
    step: int = 0
    text_parts: list[str] = field(default_factory=list)
    open_calls: dict[str, str] = field(default_factory=dict)
    is_started: bool = False
    is_completed: bool = False
    error: AgentFailure | None = None
    attempt: int | None = None
    halted: bool = False
    # Calls opened by an earlier attempt that run again here under the same id: their
    # tool_executing is in the log already, so it is not written a second time.
    reopened: set[str] = field(default_factory=set)
    # Approvals asked and not yet resolved: approval_id -> tool_call_id (invariant 6).
    pending_approvals: dict[str, str] = field(default_factory=dict)

    def halt(self) -> None:
        """Stops every further write of this emitter (its run was released or taken over)."""
        self.halted = True

    def reopen(self, tool_call_id: str) -> None:
        """Marks an open call of an earlier attempt to be run again under its id."""
        if tool_call_id not in self.open_calls:
            raise EmitterStateError(f"reopen of a call that is not open: {tool_call_id}")
        self.reopened.add(tool_call_id)

    async def _emit(
        self,
        type: EventType,
        data: dict[str, Any],
        in_transaction: InTransaction | None = None,
        *,
        logged: Callable[[], object] | None = None,
    ) -> None:
        """Emits one event and then applies `logged`, the emitter's own record of it.

        A cancel that arrives while the event is being written does not interrupt the
        write: the database commits it anyway, so the emitter waits for the outcome and
        keeps its record in step with the log before it lets the cancel through.
        """
        if self.halted:
            raise RunFencedError(f"run {self.run_id} is no longer written by this worker")
        if self.is_completed:
            raise EmitterStateError(f"{type} after agent_completed in run {self.run_id}")
        if not self.is_started and type != EventType.AGENT_STARTED:
            raise EmitterStateError(f"{type} before agent_started in run {self.run_id}")
        write = asyncio.ensure_future(
            self.broadcaster.emit(
                thread_id=self.thread_id,
                run_id=self.run_id,
                type=type.value,
                data=data,
                in_transaction=in_transaction,
                attempt=self.attempt,
            )
        )
        try:
            await asyncio.shield(write)
        except RunFencedError:
            self.halted = True
            raise
        except asyncio.CancelledError:
            await asyncio.wait([write])
            if not write.cancelled() and write.exception() is None and logged is not None:
                logged()
            raise
        if logged is not None:
            logged()

    async def started(self, in_transaction: InTransaction | None = None) -> None:
        """Emits agent_started."""
        if self.is_started:
            raise EmitterStateError(f"agent_started twice in run {self.run_id}")
        await self._emit(
            EventType.AGENT_STARTED,
            {"agent": self.agent, "message_id": str(self.message_id)},
            in_transaction,
            logged=lambda: setattr(self, "is_started", True),
        )

    async def thinking(self, text: str) -> None:
        """Emits agent_thinking with the next step number."""
        step = self.step + 1
        await self._emit(
            EventType.AGENT_THINKING,
            {"text": text, "step": step},
            logged=lambda: setattr(self, "step", step),
        )

    async def resumed(self, text: str) -> None:
        """Emits the agent_thinking{resumed: true} that marks where a continued run goes on."""
        step = self.step + 1
        await self._emit(
            EventType.AGENT_THINKING,
            {"text": text, "step": step, "resumed": True},
            logged=lambda: setattr(self, "step", step),
        )

    async def _ensure_thought(self) -> None:
        if self.step == 0:
            await self.thinking("Working on it.")

    async def tool_executing(self, *, tool_call_id: str, tool: str, args: Any) -> None:
        """Emits tool_executing; the call stays open until tool_completed. A reopened call
        (see `reopen`) is not announced again."""
        if tool_call_id in self.reopened and self.open_calls.get(tool_call_id) == tool:
            self.reopened.discard(tool_call_id)
            return
        await self._ensure_thought()
        await self._emit(
            EventType.TOOL_EXECUTING,
            {"tool_call_id": tool_call_id, "tool": tool, "args": args},
            logged=lambda: self.open_calls.__setitem__(tool_call_id, tool),
        )

    async def tool_completed(
        self,
        *,
        tool_call_id: str,
        tool: str,
        status: str,
        result: Any = None,
        error: dict[str, str] | None = None,
        duration_ms: int,
    ) -> None:
        """Emits tool_completed for an open call."""
        if tool_call_id not in self.open_calls:
            raise EmitterStateError(f"tool_completed for unknown call {tool_call_id}")
        if tool_call_id in self.pending_approvals.values():
            raise EmitterStateError(f"tool_completed of {tool_call_id} before its approval")
        data: dict[str, Any] = {
            "tool_call_id": tool_call_id,
            "tool": tool,
            "status": status,
            "duration_ms": duration_ms,
        }
        if status == "ok":
            data["result"] = result
        else:
            data["error"] = error
        await self._emit(
            EventType.TOOL_COMPLETED, data, logged=lambda: self.open_calls.pop(tool_call_id, None)
        )

    async def approval_requested(
        self,
        *,
        approval_id: str,
        tool_call_id: str,
        tool: str,
        args: Any,
        reason: str,
        expires_at: str,
        in_transaction: InTransaction | None = None,
    ) -> None:
        """Emits approval_requested for an open call; its tool_completed must wait for the
        approval_resolved (invariant 6)."""
        if self.open_calls.get(tool_call_id) != tool:
            raise EmitterStateError(f"approval_requested for a call not open: {tool_call_id}")
        await self._emit(
            EventType.APPROVAL_REQUESTED,
            {
                "approval_id": approval_id,
                "tool_call_id": tool_call_id,
                "tool": tool,
                "args": args,
                "reason": reason,
                "expires_at": expires_at,
            },
            in_transaction,
            logged=lambda: self.pending_approvals.__setitem__(approval_id, tool_call_id),
        )

    async def approval_resolved(self, *, approval_id: str, decision: str, comment: str) -> None:
        """Emits approval_resolved (approved, denied or expired) for a pending approval."""
        if approval_id not in self.pending_approvals:
            raise EmitterStateError(f"approval_resolved for unknown approval {approval_id}")
        await self._emit(
            EventType.APPROVAL_RESOLVED,
            {"approval_id": approval_id, "decision": decision, "comment": comment},
            logged=lambda: self.pending_approvals.pop(approval_id, None),
        )

    async def partial(self, text: str) -> None:
        """Emits one delta of the answer."""
        if not text:
            return
        await self._ensure_thought()
        await self._emit(
            EventType.PARTIAL_RESULT,
            {"message_id": str(self.assistant_message_id), "text": text},
            logged=lambda: self.text_parts.append(text),
        )

    async def failed(self, failure: AgentFailure) -> None:
        """Emits agent_error; agent_completed{failed} follows from `completed`."""
        await self._emit(
            EventType.AGENT_ERROR,
            {"code": failure.code, "message": failure.message, "retryable": failure.retryable},
            logged=lambda: setattr(self, "error", failure),
        )

    @property
    def text(self) -> str:
        """The answer so far."""
        return "".join(self.text_parts)

    @property
    def duration_ms(self) -> int:
        """Milliseconds since the run started."""
        return int((time.monotonic() - self.started_at) * 1000)

    async def completed(self, status: str, in_transaction: InTransaction | None = None) -> None:
        """Emits agent_completed, the last event of the run."""
        if self.open_calls:
            raise EmitterStateError(f"agent_completed with open tool calls {self.open_calls}")
        text = self.text
        await self._emit(
            EventType.AGENT_COMPLETED,
            {
                "status": status,
                "message_id": str(self.assistant_message_id) if text else None,
                "text": text,
                "duration_ms": self.duration_ms,
            },
            in_transaction,
            logged=lambda: setattr(self, "is_completed", True),
        )
