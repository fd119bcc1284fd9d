"""The agent service: submits runs, executes them detached from sockets, cancels them,
continues runs other workers left (agents/continuation.py) and releases its own when it
drains (agents/drain.py). Its heartbeat and adoption sweep are in agents/background.py;
closing a run out is in agents/closeout.py."""

import asyncio
import contextvars
import functools
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.db import DatabaseError

from agents import approvals, continuation, selectors, services
from agents.approval_flow import ApprovalCommands, ApprovalPending
from agents.background import BackgroundLoops
from agents.closeout import WORKER_LOST, close_out, reap_stale_runs
from agents.dispatcher import ToolDispatcher
from agents.emitter import RunEmitter
from agents.errors import AgentFailure, agent_unavailable
from agents.providers.base import RunInput
from agents.registry import AgentRegistry
from agents.services import Adoption, RunOwnershipLostError, RunSpec
from chat import metrics
from chat.broadcaster import Broadcaster, EventLogError
from chat.connections import WORKER_ID
from chat.dbthread import on_submit_thread
from chat.errors import report_exception
from chat.events import RunFencedError, ThreadGoneError
from chat.ports import SubmitResult

logger = logging.getLogger("netra.runs")

__all__ = ["WORKER_LOST", "AgentService", "RunHandle", "close_out", "reap_stale_runs"]


@dataclass
class RunHandle:
    """A run executing in this process."""

    spec: RunSpec
    emitter: RunEmitter
    adoption: Adoption | None = None
    task: asyncio.Task[None] | None = None
    started: bool = False
    cancel_requested: bool = False
    lost: bool = False
    released: bool = False
    closing: bool = False
    # A new run's agent_started, logged with the run and not yet sent, and the thread's
    # history read then (services.run_create).
    announce: dict[str, Any] | None = None
    history: list[dict[str, str]] | None = None

    def request_cancel(self) -> None:
        """Stops the run; it ends with agent_completed{status: cancelled}. A run already
        emitting its end is left to finish it."""
        if self.cancel_requested or self.lost or self.released:
            return
        self.cancel_requested = True
        if self.started and not self.closing and self.task is not None:
            self.task.cancel()

    def abandon(self) -> None:
        """Stops the run silently: another worker has taken it over (or closed it)."""
        self.lost = True
        self._stop()

    def release(self) -> None:
        """Stops the run silently, leaving its journal as it is, for another worker to
        continue (drain). A run emitting its end is left to finish it."""
        if self.closing:
            return
        self.released = True
        self._stop()

    def _stop(self) -> None:
        if not self.closing:
            self.emitter.halt()
            if self.task is not None:
                self.task.cancel()


@dataclass
class AgentService(BackgroundLoops, ApprovalCommands):
    """Runs agents for user messages; reached by the chat layer through the app registry.
    Its approval commands (answer, expire, list pending) are in agents/approval_flow.py."""

    broadcaster: Broadcaster
    agents: AgentRegistry
    dispatcher: ToolDispatcher
    worker_id: str = WORKER_ID
    runs: dict[uuid.UUID, RunHandle] = field(default_factory=dict)
    draining: bool = False
    _background: asyncio.Task[None] | None = None
    _background_loop: asyncio.AbstractEventLoop | None = None
    _idle: asyncio.Event | None = None

    @property
    def agent_names(self) -> list[str]:
        """The names of the agents a thread may choose."""
        return self.agents.names

    def agent_description(self, name: str) -> str | None:
        """What the agent of that name is for, or None if it is not configured."""
        agent = self.agents.get(name)
        return None if agent is None else str(agent.description)

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

        `probe` runs on an internal health-check thread instead of a user's. While this
        worker drains, the message is still recorded, and its run released at once for
        another worker to adopt."""
        result, new = await on_submit_thread(services.run_create)(
            thread_id=thread_id,
            user=user,
            text=text,
            client_msg_id=client_msg_id,
            worker_id=self.worker_id,
            probe=probe,
            released=self.draining,
        )
        if new is not None and new.started is None:
            logger.info(
                "message accepted while draining; its run is released to another worker",
                extra={"run_id": new.spec.run_id, "thread_id": new.spec.thread_id},
            )
        elif new is not None:
            emitter = self._new_emitter(new.spec)
            emitter.is_started = True  # logged with the run (services.run_create)
            handle = self._start(new.spec, emitter, announce=new.started)
            handle.history = new.history
        return result

    async def cancel(self, *, run_id: uuid.UUID, user: Any) -> None:
        """Stops a run: here at once, on another worker at its next heartbeat. A waiting
        run is taken over here: its approvals denied ("run cancelled"), then it ends."""
        adoption = await database_sync_to_async(approvals.run_cancel_waiting)(
            run_id=run_id, user=user, worker_id=self.worker_id
        )
        if adoption is not None:
            await self.continue_adopted(adoption)
            return
        await database_sync_to_async(services.run_request_cancel)(run_id=run_id, user=user)
        handle = self.runs.get(run_id)
        if handle is not None:
            handle.request_cancel()

    async def continue_adopted(self, adoption: Adoption) -> None:
        """Rebuilds a taken-over run's emitter from its journal and continues it here."""
        journal = await database_sync_to_async(selectors.run_journal)(spec=adoption.spec)
        emitter = selectors.emitter_from_journal(
            broadcaster=self.broadcaster, spec=adoption.spec, journal=journal
        )
        self.start_adopted(adoption, emitter)

    async def stop_thread_runs(self, *, thread_id: uuid.UUID, wait: float) -> list[uuid.UUID]:
        """Cancels the thread's active runs (here at once, elsewhere at the next heartbeat)
        and waits up to `wait` seconds for them to end; returns those still active."""
        run_ids = await database_sync_to_async(services.run_request_cancel_thread)(
            thread_id=thread_id
        )
        for run_id in run_ids:
            if (handle := self.runs.get(run_id)) is not None:
                handle.request_cancel()
        deadline = time.monotonic() + wait
        while run_ids and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            run_ids = await database_sync_to_async(selectors.active_run_ids)(thread_id=thread_id)
        return run_ids

    def _new_emitter(self, spec: RunSpec) -> RunEmitter:
        return RunEmitter(
            self.broadcaster,
            thread_id=spec.thread_id,
            run_id=spec.run_id,
            message_id=spec.message_id,
            assistant_message_id=spec.assistant_message_id,
            agent=spec.agent,
            attempt=spec.attempt,
        )

    def start_adopted(self, adoption: Adoption, emitter: RunEmitter) -> None:
        """Executes a run taken over from another worker (agents/continuation.py)."""
        if not adoption.started:  # never started: it simply starts here
            metrics.RUNS_RESUMED.labels(reason=adoption.reason).inc()
        handle = self._start(adoption.spec, emitter, adoption)
        handle.cancel_requested = adoption.cancel_requested

    def _start(
        self,
        spec: RunSpec,
        emitter: RunEmitter,
        adoption: Adoption | None = None,
        announce: dict[str, Any] | None = None,
    ) -> RunHandle:
        self.ensure_background()
        handle = RunHandle(spec=spec, emitter=emitter, adoption=adoption, announce=announce)
        self.runs[spec.run_id] = handle
        # A fresh context: the run must not inherit the request's thread-sensitive executor
        # (asgiref ends it with the HTTP request, long before the run is over).
        handle.task = asyncio.get_running_loop().create_task(
            self._execute(handle), name=f"run-{spec.run_id}", context=contextvars.Context()
        )
        handle.task.add_done_callback(functools.partial(self._forget, handle))
        return handle

    def _forget(self, handle: RunHandle, task: asyncio.Task[None]) -> None:
        if self.runs.get(handle.spec.run_id) is handle:
            del self.runs[handle.spec.run_id]
        crash = None if task.cancelled() else task.exception()
        if crash is not None:
            report_exception(crash, "run task crashed", run_id=handle.spec.run_id)
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

    async def release_all(self, timeout: float = 5.0) -> int:
        """Stops every run of this process without a word to the user and releases it in
        the database, for another worker to continue at once (drain); returns how many."""
        handles = list(self.runs.values())
        for handle in handles:
            handle.release()
        tasks = [h.task for h in handles if h.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        released = [h.spec.run_id for h in handles if h.released]
        if not released:
            return 0
        return await database_sync_to_async(services.run_release)(
            run_ids=released, worker_id=self.worker_id
        )

    # --- one run --------------------------------------------------------------------------

    async def _execute(self, handle: RunHandle) -> None:
        """Runs the agent between agent_started and the close-out. A continued run first
        goes through continuation.resume. Each way a run can end is one branch below: one
        function on purpose, so that every ending, cancellation included, reaches the one
        close-out after the try."""
        spec, emitter = handle.spec, handle.emitter
        metrics.RUNS_ACTIVE.inc()
        status, failure = "failed", None
        try:
            if handle.announce is not None:  # sent after the submit's ack
                await self.broadcaster.notify_logged(handle.announce)
            if not emitter.is_started:
                await emitter.started(
                    in_transaction=functools.partial(
                        services.run_mark_running, run_id=spec.run_id, worker_id=self.worker_id
                    )
                )
            handle.started = True
            answered = handle.adoption is not None and handle.adoption.reason == "approval"
            if handle.cancel_requested and not answered:  # an answered run settles first
                raise asyncio.CancelledError
            agent = self.agents.get(spec.agent)
            if agent is None:
                raise agent_unavailable(spec.agent)
            history = handle.history
            if history is None:
                history = await database_sync_to_async(selectors.run_history)(spec=spec)
            async with self.dispatcher.run_scope(
                emitter,
                user_id=spec.user_id,
                username=spec.username,
                tools=getattr(agent, "tools", None),
            ) as tools:
                journal: list[dict[str, Any]] = []
                if handle.adoption is not None and handle.adoption.started:
                    # An idempotent call it runs again acts for the run's user, like any.
                    journal = await continuation.resume(
                        agent=agent,
                        adoption=handle.adoption,
                        emitter=emitter,
                        dispatcher=self.dispatcher,
                        allowed=tools.allowed,
                    )
                if handle.cancel_requested:
                    raise asyncio.CancelledError
                await agent.run(
                    RunInput(text=spec.text, history=history, journal=journal), emitter, tools
                )
                await emitter.settle()  # a queued write that failed fails the run here
            status = "completed"
        except ApprovalPending:
            return  # the run waits, held by nobody; its answer continues it (approval_flow)
        except asyncio.CancelledError:
            if handle.lost or handle.released:
                await emitter.drain()
                return
            if handle.cancel_requested:
                status = "cancelled"
            else:
                failure = AgentFailure(
                    "worker_shutdown",
                    "The server stopped during the run; send the message again.",
                    retryable=True,
                )
        except RunFencedError:
            if not (handle.lost or handle.released):
                self._fenced(handle, "an event write was refused")
            await emitter.drain()
            return
        except AgentFailure as exc:
            failure = exc
        except RunOwnershipLostError:
            logger.warning("run taken over before it started", extra={"run_id": spec.run_id})
            return
        except ThreadGoneError:
            logger.warning("thread deleted during the run", extra={"run_id": spec.run_id})
            await emitter.drain()
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

    def _fenced(self, handle: RunHandle, how: str) -> None:
        """A run of ours was taken over by another worker: stop it, quietly for the user
        (the other worker goes on), loudly for the operator."""
        metrics.RUNS_FENCED.inc()
        logger.warning(
            "run %s was taken over by another worker (%s); stopped here",
            handle.spec.run_id,
            how,
            extra={
                "run_id": handle.spec.run_id,
                "thread_id": handle.spec.thread_id,
                "attempt": handle.spec.attempt,
            },
        )

    def _service(self) -> "AgentService":
        return self
