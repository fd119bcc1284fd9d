"""The agent service: submits runs, executes them detached from sockets, heartbeats them,
cancels them, and closes out runs whose worker died (the reaper)."""

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from agents import selectors, services
from agents.dispatcher import ToolDispatcher
from agents.emitter import RunEmitter
from agents.errors import AgentFailure, agent_unavailable
from agents.providers.base import RunInput
from agents.registry import AgentRegistry
from agents.services import RunOwnershipLostError, RunSpec
from chat import housekeeping, metrics
from chat.broadcaster import Broadcaster, EventLogError
from chat.connections import WORKER_ID
from chat.errors import report_exception
from chat.events import ThreadGoneError
from chat.ports import SubmitResult

logger = logging.getLogger("netra.runs")

CLOSE_OUT_DELAYS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
WORKER_LOST = AgentFailure(
    "worker_lost",
    "The server process running this answer stopped; send the message again.",
    retryable=True,
)


@dataclass
class RunHandle:
    """A run executing in this process."""

    spec: RunSpec
    task: asyncio.Task[None] | None = None
    started: bool = False
    cancel_requested: bool = False
    lost: bool = False
    closing: bool = False

    def request_cancel(self) -> None:
        """Stops the run; it ends with agent_completed{status: cancelled}. A run already
        emitting its end is left to finish it."""
        if self.cancel_requested or self.lost:
            return
        self.cancel_requested = True
        if self.started and not self.closing and self.task is not None:
            self.task.cancel()

    def abandon(self) -> None:
        """Stops the run silently: someone else (the reaper) has closed it."""
        self.lost = True
        if not self.closing and self.task is not None:
            self.task.cancel()


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
            if not emitter.is_started:
                await emitter.started(
                    in_transaction=functools.partial(
                        services.run_mark_running, run_id=spec.run_id, worker_id=worker_id
                    )
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
        except RunOwnershipLostError:
            logger.warning("run was closed by another worker", extra={"run_id": spec.run_id})
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


@dataclass
class AgentService:
    """Runs agents for user messages; reached by the chat layer through the app registry."""

    broadcaster: Broadcaster
    agents: AgentRegistry
    dispatcher: ToolDispatcher
    worker_id: str = WORKER_ID
    runs: dict[uuid.UUID, RunHandle] = field(default_factory=dict)
    _background: asyncio.Task[None] | None = None
    _background_loop: asyncio.AbstractEventLoop | None = None
    _idle: asyncio.Event | None = None

    @property
    def agent_names(self) -> list[str]:
        """The names of the agents a thread may choose."""
        return self.agents.names

    # --- commands -------------------------------------------------------------------------

    async def submit(
        self,
        *,
        thread_id: uuid.UUID,
        user: Any,
        text: str,
        client_msg_id: str,
        probe: bool = False,
    ) -> SubmitResult:
        """Records the message and starts its run; a retry returns the same ids.

        `probe` runs on an internal health-check thread instead of a user's.
        """
        result, spec = await database_sync_to_async(services.run_create)(
            thread_id=thread_id,
            user=user,
            text=text,
            client_msg_id=client_msg_id,
            worker_id=self.worker_id,
            probe=probe,
        )
        if spec is not None:
            self._start(spec)
        return result

    async def cancel(self, *, run_id: uuid.UUID, user: Any) -> None:
        """Stops a run: here at once, on another worker at its next heartbeat."""
        await database_sync_to_async(services.run_request_cancel)(run_id=run_id, user=user)
        handle = self.runs.get(run_id)
        if handle is not None:
            handle.request_cancel()

    def _start(self, spec: RunSpec) -> None:
        self.ensure_background()
        handle = RunHandle(spec=spec)
        self.runs[spec.run_id] = handle
        # A fresh context: the run must not inherit the request's thread-sensitive executor
        # (asgiref ends it with the HTTP request, long before the run is over).
        handle.task = asyncio.get_running_loop().create_task(
            self._execute(handle), name=f"run-{spec.run_id}", context=contextvars.Context()
        )
        handle.task.add_done_callback(functools.partial(self._forget, spec.run_id))

    def _forget(self, run_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        self.runs.pop(run_id, None)
        crash = None if task.cancelled() else task.exception()
        if crash is not None:
            report_exception(crash, "run task crashed", run_id=run_id)
        if not self.runs and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Waits until no run executes in this process (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.runs:
            self._idle = asyncio.Event()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"runs still active: {list(self.runs)}")
            await asyncio.wait_for(self._idle.wait(), timeout=remaining)

    # --- one run --------------------------------------------------------------------------

    async def _execute(self, handle: RunHandle) -> None:
        spec = handle.spec
        emitter = RunEmitter(
            self.broadcaster,
            thread_id=spec.thread_id,
            run_id=spec.run_id,
            message_id=spec.message_id,
            assistant_message_id=spec.assistant_message_id,
            agent=spec.agent,
        )
        metrics.RUNS_ACTIVE.inc()
        status, failure = "failed", None
        try:
            await emitter.started(
                in_transaction=functools.partial(
                    services.run_mark_running, run_id=spec.run_id, worker_id=self.worker_id
                )
            )
            handle.started = True
            if handle.cancel_requested:
                raise asyncio.CancelledError
            agent = self.agents.get(spec.agent)
            if agent is None:
                raise agent_unavailable(spec.agent)
            history = await database_sync_to_async(selectors.run_history)(spec=spec)
            async with self.dispatcher.run_scope(
                emitter, user_id=spec.user_id, tools=getattr(agent, "tools", None)
            ) as tools:
                await agent.run(RunInput(text=spec.text, history=history), emitter, tools)
            status = "completed"
        except asyncio.CancelledError:
            if handle.lost:
                return
            if handle.cancel_requested:
                status = "cancelled"
            else:
                failure = AgentFailure(
                    "worker_shutdown",
                    "The server stopped during the run; send the message again.",
                    retryable=True,
                )
        except AgentFailure as exc:
            failure = exc
        except RunOwnershipLostError:
            logger.warning("run taken over before it started", extra={"run_id": spec.run_id})
            return
        except ThreadGoneError:
            logger.warning("thread deleted during the run", extra={"run_id": spec.run_id})
            return
        except (DatabaseError, EventLogError) as exc:
            report_exception(
                exc,
                "database failure during run",
                run_id=spec.run_id,
                thread_id=spec.thread_id,
                user_id=spec.user_id,
            )
            failure = AgentFailure(
                "unavailable",
                "The database failed during the run; send the message again.",
                retryable=True,
            )
        except Exception as exc:  # noqa: BLE001 - reported; the run still ends visibly
            report_exception(
                exc,
                "agent run failed",
                run_id=spec.run_id,
                thread_id=spec.thread_id,
                user_id=spec.user_id,
            )
            failure = AgentFailure(
                "internal_error",
                "The agent failed unexpectedly; it has been reported.",
                retryable=True,
            )
        finally:
            metrics.RUNS_ACTIVE.dec()
        handle.closing = True
        await close_out(emitter, spec, worker_id=self.worker_id, status=status, failure=failure)

    # --- background: heartbeat, remote cancel, reaper ------------------------------------------

    def ensure_background(self) -> None:
        """Starts every background loop of this process on the running event loop, unless
        BACKGROUND_TASKS is off: the run heartbeat and reaper, and housekeeping (process
        heartbeat, held-back state log rows, connection reaper). Loops start here only."""
        if not settings.BACKGROUND_TASKS:
            return
        housekeeping.ensure_started()
        loop = asyncio.get_running_loop()
        if self._background is None or self._background.done() or self._background_loop is not loop:
            self._background_loop = loop
            self._background = loop.create_task(
                self._background_loop_body(),
                name="netra-agent-background",
                context=contextvars.Context(),
            )

    async def stop_background(self) -> None:
        """Stops the background loops (tests, shutdown)."""
        task, self._background = self._background, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await housekeeping.stop()

    async def _background_loop_body(self) -> None:
        next_reap = time.monotonic() + settings.RUN_REAPER_INTERVAL
        while True:
            await asyncio.sleep(settings.RUN_HEARTBEAT_INTERVAL)
            try:
                await self.beat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + settings.RUN_REAPER_INTERVAL
                    await reap_stale_runs(
                        self.broadcaster,
                        worker_id=self.worker_id,
                        stale_after=settings.RUN_STALE_AFTER,
                    )
            except DatabaseError as exc:
                logger.warning("heartbeat or reaper sweep failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - reported; the loop must keep beating
                report_exception(exc, "agent background loop failed")

    async def beat(self) -> None:
        """Refreshes this worker's run heartbeats and applies cancels asked elsewhere."""
        metrics.UNPAIRED_TOOL_CALLS.set(self.dispatcher.unpaired_now())
        if not self.runs:
            return
        cancel, lost = await database_sync_to_async(services.run_heartbeat)(
            run_ids=list(self.runs), worker_id=self.worker_id
        )
        for run_id in cancel:
            if run_id in self.runs:
                self.runs[run_id].request_cancel()
        for run_id in lost:
            if run_id in self.runs:
                logger.warning("run was taken over; stopping it here", extra={"run_id": run_id})
                self.runs[run_id].abandon()


async def reap_stale_runs(broadcaster: Broadcaster, *, worker_id: str, stale_after: float) -> int:
    """Closes every run whose heartbeat is older than `stale_after` with agent_error
    {code: worker_lost} and agent_completed{failed}; returns how many it closed."""
    closed = 0
    for run in await database_sync_to_async(selectors.stale_runs)(stale_after=stale_after):
        adopted = await database_sync_to_async(services.run_adopt)(
            run_id=run.id, stale_after=stale_after, worker_id=worker_id
        )
        if not adopted:
            continue
        spec = RunSpec(
            run_id=run.id,
            thread_id=run.thread_id,
            message_id=run.message_id,
            assistant_message_id=run.assistant_message_id,
            user_id=run.user_id,
            text=run.message.text,
            agent=run.agent,
        )
        emitter = await database_sync_to_async(selectors.emitter_from_log)(
            broadcaster=broadcaster, spec=spec
        )
        logger.warning(
            "reaping run whose worker stopped heartbeating",
            extra={"run_id": run.id, "thread_id": run.thread_id, "worker_id": run.worker_id},
        )
        if await close_out(
            emitter, spec, worker_id=worker_id, status="failed", failure=WORKER_LOST
        ):
            closed += 1
    return closed
