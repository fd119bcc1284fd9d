"""Continuation: a run whose worker is gone (released by a draining worker, dead, or
silent for RUN_STALE_AFTER) is adopted by this worker and continued from its journal.

Adoption increments the run's attempt (fencing the former worker, chat.events). The
continuing worker first emits agent_thinking{resumed: true}, then settles the tool calls
left open: an idempotent tool runs again under the same tool_call_id (no second
tool_executing), any other call completes with error{code: interrupted}. Then the agent
runs again with `run_input.journal`. A run past RUN_MAX_RESUMES continuations, or whose
agent cannot continue, ends with agent_error{code: worker_lost} instead.
"""

import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from agents import selectors, services
from agents.approval_flow import logged_journal, settle_pending
from agents.closeout import WORKER_LOST
from agents.dispatcher import ToolDispatcher
from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.providers.base import can_continue
from agents.services import Adoption
from chat import metrics
from chat.runevents import fold_run

if TYPE_CHECKING:
    from agents.runtime import AgentService

logger = logging.getLogger("netra.runs")

RESUMED_TEXT = {
    "shutdown": "Continuing on another server: the one running this answer was restarted.",
    "worker_lost": "Continuing on another server: the one running this answer stopped.",
}
INTERRUPTED = {
    "code": "interrupted",
    "message": "The call was interrupted when its server stopped; it may be called again.",
}


async def adopt_runs(service: "AgentService") -> int:
    """Takes over every run another worker left (released or stale) and starts continuing
    it here; returns how many it took. A draining worker takes none."""
    taken = 0
    candidates = await database_sync_to_async(selectors.adoptable_runs)(
        stale_after=settings.RUN_STALE_AFTER
    )
    for run_id in candidates:
        if service.draining:
            break
        if run_id in service.runs:  # ours and alive: its heartbeat was only late
            continue
        adoption = await database_sync_to_async(services.run_adopt)(
            run_id=run_id, stale_after=settings.RUN_STALE_AFTER, worker_id=service.worker_id
        )
        if adoption is None:
            continue
        journal = await database_sync_to_async(selectors.run_journal)(spec=adoption.spec)
        emitter = selectors.emitter_from_journal(
            broadcaster=service.broadcaster, spec=adoption.spec, journal=journal
        )
        logger.warning(
            "adopting run (%s, attempt %d)",
            adoption.reason,
            adoption.spec.attempt,
            extra={
                "run_id": adoption.spec.run_id,
                "thread_id": adoption.spec.thread_id,
                "reason": adoption.reason,
                "attempt": adoption.spec.attempt,
            },
        )
        service.start_adopted(adoption, emitter)
        taken += 1
    return taken


CANNOT_CONTINUE = AgentFailure(
    "agent_unavailable",
    "This agent cannot continue a run after an approval; send the message again.",
    retryable=False,
)


async def resume(
    *,
    agent: Any,
    adoption: Adoption,
    emitter: RunEmitter,
    dispatcher: ToolDispatcher,
    allowed: frozenset[str] | None = None,
) -> list[dict[str, Any]]:
    """Prepares a started run for its agent to go on; returns the journal to give it.

    A run taken over with an approval's answer (reason `approval`) settles that approval
    (agents/approval_flow.py) and goes on without a resumed agent_thinking; it is not a
    continuation after a lost worker. Raises WORKER_LOST (an AgentFailure: the run then
    closes out as failed) when the run cannot be continued, and the logged failure of a
    run that was already failing."""
    spec = adoption.spec
    if emitter.error is not None:  # it was failing when its worker stopped: it still fails
        raise emitter.error
    if adoption.reason == "approval":
        await settle_pending(emitter=emitter, spec=spec, dispatcher=dispatcher, allowed=allowed)
        if not can_continue(agent):
            raise CANNOT_CONTINUE
        return await logged_journal(emitter, spec)
    if not can_continue(agent) or adoption.resumes > settings.RUN_MAX_RESUMES:
        logger.warning(
            "run cannot be continued (%s); ending it with worker_lost",
            "its agent cannot continue"
            if not can_continue(agent)
            else f"{adoption.resumes - 1} continuations already",
            extra={"run_id": spec.run_id, "thread_id": spec.thread_id},
        )
        raise WORKER_LOST
    metrics.RUNS_RESUMED.labels(reason=adoption.reason).inc()
    await emitter.resumed(RESUMED_TEXT.get(adoption.reason, RESUMED_TEXT["worker_lost"]))
    # An answer recorded just before the former worker stopped is settled first.
    await settle_pending(emitter=emitter, spec=spec, dispatcher=dispatcher, allowed=allowed)
    journal = await logged_journal(emitter, spec)
    for call in fold_run(journal).open_calls.values():
        tool = dispatcher.registry.get(call.tool)
        if tool is not None and tool.idempotent:
            emitter.reopen(call.tool_call_id)
            await dispatcher.call(emitter, call.tool, call.args, call.tool_call_id)
        else:
            await emitter.tool_completed(
                tool_call_id=call.tool_call_id,
                tool=call.tool,
                status="error",
                error=dict(INTERRUPTED),
                duration_ms=0,
            )
    return await logged_journal(emitter, spec)
