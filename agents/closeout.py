"""Closing runs out: the events a run still owes at its end (its own worker's or, for a run
that cannot be continued, the adopting worker's), retried while the database is down."""

import asyncio
import functools
import logging

from channels.db import database_sync_to_async
from django.db import DatabaseError

from agents import selectors, services
from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.services import RunOwnershipLostError, RunSpec
from chat import metrics
from chat.broadcaster import Broadcaster, EventLogError
from chat.events import RunFencedError, ThreadGoneError

logger = logging.getLogger("netra.runs")

CLOSE_OUT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
WORKER_LOST = AgentFailure(
    "worker_lost",
    "The server process running this answer stopped; send the message again.",
    retryable=True,
)


async def close_out(
    emitter: RunEmitter, spec: RunSpec, *, worker_id: str, status: str, failure: AgentFailure | None
) -> bool:
    """Emits what the run still owes (agent_started, tool_completed for open calls,
    agent_error, agent_completed), retrying while the database is down; True when done.
    """
    final = "failed" if failure is not None else status
    for attempt, delay in enumerate(CLOSE_OUT_DELAYS):
        if delay:
            await asyncio.sleep(delay)
        try:
            await _emit_what_is_owed(
                emitter, spec, worker_id=worker_id, final=final, failure=failure
            )
        except RunOwnershipLostError:
            logger.warning("run was closed by another worker", extra={"run_id": spec.run_id})
            return False
        except RunFencedError:
            metrics.RUNS_FENCED.inc()
            logger.warning(
                "run %s was taken over by another worker while closing; stopped here",
                spec.run_id,
                extra={"run_id": spec.run_id, "attempt": spec.attempt},
            )
            return False
        except ThreadGoneError:
            logger.warning("thread deleted during the run", extra={"run_id": spec.run_id})
            return False
        except (DatabaseError, EventLogError) as exc:
            logger.warning(
                "could not close out run (attempt %d): %s",
                attempt + 1,
                exc,
                extra={"run_id": spec.run_id, "thread_id": spec.thread_id},
            )
            continue
        metrics.RUNS_TOTAL.labels(status=final).inc()
        logger.info(
            "run %s %s",
            spec.run_id,
            final,
            extra={
                "run_id": spec.run_id,
                "thread_id": spec.thread_id,
                "code": failure.code if failure else None,
            },
        )
        return True
    logger.error(
        "gave up closing out run; the reaper will close it",
        extra={"run_id": spec.run_id, "thread_id": spec.thread_id},
    )
    return False


async def _emit_what_is_owed(
    emitter: RunEmitter, spec: RunSpec, *, worker_id: str, final: str, failure: AgentFailure | None
) -> None:
    """One try of the close-out: each step is skipped once the emitter has it logged, so a
    retry after a database error picks up where the last try stopped. It starts from what
    is logged: the run's queued events settle first."""
    await emitter.settle()
    if not emitter.is_started:
        await emitter.started(
            in_transaction=functools.partial(
                services.run_mark_running, run_id=spec.run_id, worker_id=worker_id
            )
        )
    for approval_id in list(emitter.pending_approvals):  # invariant 6, even now
        await emitter.approval_resolved(
            approval_id=approval_id, decision="denied", comment="The run ended."
        )
    for call_id, tool in list(emitter.open_calls.items()):
        await emitter.tool_completed(
            tool_call_id=call_id,
            tool=tool,
            status="error",
            duration_ms=0,
            error={
                "code": failure.code if failure else "interrupted",
                "message": "The call was interrupted.",
            },
        )
    if failure is not None and emitter.error is None:
        await emitter.failed(failure)
    await emitter.completed(
        final,
        in_transaction=functools.partial(
            services.run_mark_finished,
            spec=spec,
            worker_id=worker_id,
            status=final,
            text=emitter.text,
            error_code=failure.code if failure else "",
            error_message=failure.message if failure else "",
        ),
    )


async def reap_stale_runs(broadcaster: Broadcaster, *, worker_id: str, stale_after: float) -> int:
    """Closes every run whose heartbeat is older than `stale_after` with agent_error
    {code: worker_lost} and agent_completed{failed}, without continuing it;
    returns how many it closed. For `manage.py reap_runs`, a process that runs no agent;
    a serving worker continues such runs instead (agents/continuation.py)."""
    closed = 0
    for run in await database_sync_to_async(selectors.stale_runs)(stale_after=stale_after):
        adoption = await database_sync_to_async(services.run_adopt)(
            run_id=run.id, stale_after=stale_after, worker_id=worker_id
        )
        if adoption is None:
            continue
        spec = adoption.spec
        emitter = await database_sync_to_async(selectors.emitter_from_log)(
            broadcaster=broadcaster, spec=spec
        )
        logger.warning(
            "reaping run whose worker stopped heartbeating",
            extra={"run_id": spec.run_id, "thread_id": spec.thread_id},
        )
        if await close_out(
            emitter, spec, worker_id=worker_id, status="failed", failure=WORKER_LOST
        ):
            closed += 1
    return closed
