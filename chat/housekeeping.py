"""Per-process housekeeping: the server process heartbeat and the connection reaper."""

import asyncio
import contextvars
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from chat.connections import (
    flush_unflushed,
    process_heartbeat,
    reap_connections,
    unflushed_count,
)
from chat.errors import report_exception

logger = logging.getLogger("netra.housekeeping")

_task: asyncio.Task[None] | None = None
_loop: asyncio.AbstractEventLoop | None = None


def ensure_started() -> None:
    """Starts the housekeeping loop on the running event loop, once per loop."""
    global _task, _loop
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _loop is not loop:
        _loop = loop
        _task = loop.create_task(_run(), name="netra-housekeeping", context=contextvars.Context())


async def stop() -> None:
    """Stops the loop (tests, shutdown)."""
    global _task
    task, _task = _task, None
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass(frozen=True)
class SweepReport:
    """What one housekeeping sweep did."""

    written: int  # connections whose held-back state log rows it wrote
    unwritten: int  # connections whose rows it still could not write (kept for the next)
    closed: int  # dead or stuck connections it closed out


async def sweep() -> SweepReport:
    """Beats this process's heartbeat, writes state log rows an outage held back, then
    closes out dead and stuck connections."""
    await database_sync_to_async(process_heartbeat)()
    written: int = await database_sync_to_async(flush_unflushed)()
    unwritten = unflushed_count()
    if unwritten:
        logger.warning("could not write the state log of %d connection(s) yet", unwritten)
    closed: int = await database_sync_to_async(reap_connections)(
        process_stale_after=settings.PROCESS_STALE_AFTER, stuck_after=settings.WS_STUCK_AFTER
    )
    if closed:
        logger.warning("closed out %d dead or stuck connection(s)", closed)
    return SweepReport(written=written, unwritten=unwritten, closed=closed)


async def _run() -> None:
    while True:
        try:
            await sweep()
        except DatabaseError as exc:
            logger.warning("housekeeping sweep failed: %s", exc)
        except Exception as exc:  # noqa: BLE001 - reported; housekeeping must keep going
            report_exception(exc, "housekeeping sweep failed")
        await asyncio.sleep(settings.PROCESS_HEARTBEAT_INTERVAL)
