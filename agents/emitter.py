"""The emitter of one run: every event of a run goes through it, and it keeps the invariants.

Invariants kept here (docs/protocol.md): agent_started first and agent_completed last,
each once; an agent_thinking before the first tool call or answer text; every
tool_executing paired (the dispatcher closes calls from a `finally`); the concatenated
partial_result texts equal agent_completed.data.text.

An emitter writes for one attempt of its run (`attempt`): once a write is fenced (the run
was adopted elsewhere) or the emitter is halted (its worker released the run), it writes
nothing more and every emit raises RunFencedError.

The pipeline (agents/pipeline.py; docs/architecture.md, "Where each guarantee is kept"):
every event is queued for the log in order; the log writer commits them in batches and only
then are they sent, in order. agent_thinking, partial_result and tool_completed are
pipelined: their emit returns once queued. Every other event (agent_started, tool_executing,
approvals, agent_error, agent_completed) returns once it and all before it are committed: a
tool runs only once its tool_executing is in the log. At most MAX_IN_FLIGHT of a run's
events wait at once; the next emit waits for room. A failed write is raised by the run's
next emit (or by `settle`, which the run awaits before it ends and the close-out before it
closes), never dropped.
"""

import asyncio
import functools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.errors import AgentFailure
from agents.pipeline import EventPipeline, InTransaction
from chat.events import RunFencedError
from chat.runevents import EventType

# The events that are queued for the log without waiting for their commit.
PIPELINED = frozenset(
    {EventType.AGENT_THINKING, EventType.PARTIAL_RESULT, EventType.TOOL_COMPLETED}
)


class EmitterStateError(RuntimeError):
    """An event out of the run's order: a bug in the agent code."""


@dataclass
class RunEmitter(EventPipeline):
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
    # The pipeline: queued events whose write and send have not finished, oldest first,
    # and the first write failure among them, for the next emit or `settle` to raise.
    in_flight: dict["asyncio.Task[None]", Callable[[bool], object] | None] = field(
        default_factory=dict
    )
    write_failure: BaseException | None = None

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
        settled: Callable[[bool], object] | None = None,
    ) -> None:
        """Emits one event and applies `logged`, the emitter's own record of it.

        Every event is queued for the log in order. A pipelined one (PIPELINED, without
        `in_transaction`) is recorded when it is queued, and the emit returns; `settled(ok)`
        runs once its write has committed (True) or failed (False), to complete or take
        back that record. Any other event is recorded once committed, and its emit returns
        then (everything before it is committed too, in the same batch or an earlier one),
        raising its own failure or the first one of an event before it. A cancel that
        arrives meanwhile does not interrupt the write: the database commits it anyway, so
        the emitter waits for the outcome and keeps its record in step with the log before
        it lets the cancel through.
        """
        self._raise_write_failure()
        if self.halted:
            raise RunFencedError(f"run {self.run_id} is no longer written by this worker")
        if self.is_completed:
            raise EmitterStateError(f"{type} after agent_completed in run {self.run_id}")
        if not self.is_started and type != EventType.AGENT_STARTED:
            raise EmitterStateError(f"{type} before agent_started in run {self.run_id}")
        if type in PIPELINED and in_transaction is None:
            await self._queue(type, data, logged=logged, settled=settled)
            return
        record = logged
        task = await self._queue(
            type,
            data,
            in_transaction=in_transaction,
            settled=lambda ok: ok and record is not None and record(),
        )
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            await asyncio.wait([task])  # the write goes on; the record follows its outcome
            raise
        for done in [t for t in self.in_flight if t.done()]:  # all up to this one
            self._retire(done)
        own = None if task.cancelled() else task.exception()
        if own is not None:
            self.write_failure = None  # its own failure says more than an earlier one
            raise own
        self._raise_write_failure()

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
            EventType.TOOL_COMPLETED,
            data,
            logged=lambda: self.open_calls.pop(tool_call_id, None),
            settled=lambda ok: ok or self.open_calls.setdefault(tool_call_id, tool),
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
            settled=functools.partial(self._answered, text),
        )

    def _answered(self, text: str, ok: bool) -> None:
        if ok:  # the answer is what the log holds
            self.text_parts.append(text)

    async def failed(self, failure: AgentFailure) -> None:
        """Emits agent_error; agent_completed{failed} follows from `completed`."""
        await self._emit(
            EventType.AGENT_ERROR,
            {"code": failure.code, "message": failure.message, "retryable": failure.retryable},
            logged=lambda: setattr(self, "error", failure),
        )

    @property
    def text(self) -> str:
        """The answer so far, as logged (a queued partial_result counts once committed)."""
        return "".join(self.text_parts)

    @property
    def duration_ms(self) -> int:
        """Milliseconds since the run started."""
        return int((time.monotonic() - self.started_at) * 1000)

    async def completed(self, status: str, in_transaction: InTransaction | None = None) -> None:
        """Emits agent_completed, the last event of the run, once all before it are logged."""
        await self.settle()
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
