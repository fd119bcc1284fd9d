"""The agent service's background loops (agents/runtime.py's AgentService mixes them in):
the run heartbeat, which also applies cancels asked on other workers and stops runs taken
over or whose thread was deleted, and the sweep that adopts runs other workers left and
expires approvals nobody answered. Housekeeping (chat/housekeeping.py) starts with them."""

import asyncio
import contextvars
import logging
import time
import uuid
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from agents import continuation, services
from agents.dispatcher import ToolDispatcher
from chat import housekeeping, metrics
from chat.errors import report_exception

if TYPE_CHECKING:
    from agents.runtime import AgentService, RunHandle

logger = logging.getLogger("netra.runs")


class BackgroundLoops:
    """Starts, runs and stops the background loops of one agent service."""

    runs: "dict[uuid.UUID, RunHandle]"
    dispatcher: ToolDispatcher
    worker_id: str
    draining: bool
    _background: "asyncio.Task[None] | None"
    _background_loop: asyncio.AbstractEventLoop | None

    def _fenced(self, handle: "RunHandle", how: str) -> None:
        raise NotImplementedError  # AgentService defines it

    def _service(self) -> "AgentService":
        raise NotImplementedError  # AgentService returns itself

    def ensure_background(self) -> None:
        """Starts every background loop of this process on the running event loop, unless
        BACKGROUND_TASKS is off: the run heartbeat and adoption sweep, and housekeeping
        (process heartbeat, held-back state log rows, connection reaper). Loops start here."""
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
        # The first sweep is at once: a restarted process continues released runs now.
        next_sweep = time.monotonic()
        while True:
            try:
                await self.beat()
                if time.monotonic() >= next_sweep and not self.draining:
                    next_sweep = time.monotonic() + settings.RUN_REAPER_INTERVAL
                    await continuation.adopt_runs(self._service())
                    await self._service().expire_approvals()
            except DatabaseError as exc:
                logger.warning("heartbeat or adoption sweep failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - reported; the loop must keep beating
                report_exception(exc, "agent background loop failed")
            await asyncio.sleep(settings.RUN_HEARTBEAT_INTERVAL)

    async def beat(self) -> None:
        """Refreshes this worker's run heartbeats and applies cancels asked elsewhere."""
        metrics.UNPAIRED_TOOL_CALLS.set(self.dispatcher.unpaired_now())
        if not self.runs:
            return
        cancel, lost, gone = await database_sync_to_async(services.run_heartbeat)(
            run_ids=list(self.runs), worker_id=self.worker_id
        )
        for run_id in cancel:
            if run_id in self.runs:
                self.runs[run_id].request_cancel()
        for run_id in gone:
            if (handle := self.runs.get(run_id)) is not None and not handle.closing:
                logger.warning("thread deleted during the run", extra={"run_id": run_id})
                handle.abandon()
        for run_id in lost:
            handle = self.runs.get(run_id)
            if handle is not None and not (handle.lost or handle.released or handle.closing):
                self._fenced(handle, "its heartbeat found it held elsewhere")
                handle.abandon()
