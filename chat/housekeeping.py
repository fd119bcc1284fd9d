"""Per-process housekeeping: the server process heartbeat, the connection reaper, the
daily prune (chat.pruning; one process of the cluster claims each day's) and, on a SQLite
file, the WAL checkpoint thread (chat.checkpoint)."""

import asyncio
import contextvars
import logging
import threading
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from chat import checkpoint
from chat.connections import (
    flush_unflushed,
    process_heartbeat,
    reap_connections,
    unflushed_count,
)
from chat.errors import report_exception
from chat.pruning import run_scheduled_prune

logger = logging.getLogger("netra.housekeeping")

_task: asyncio.Task[None] | None = None
_loop: asyncio.AbstractEventLoop | None = None
_prune_task: asyncio.Task[None] | None = None
_prune_stop = threading.Event()
_prune_slot: int | None = None


def ensure_started() -> None:
    """Starts the housekeeping loop on the running event loop, once per loop, and the
    SQLite checkpoint thread, once per process."""
    global _task, _loop
    checkpoint.ensure_started()
    loop = asyncio.get_running_loop()
    if _task is None or _task.done() or _loop is not loop:
        _loop = loop
        _task = loop.create_task(_run(), name="netra-housekeeping", context=contextvars.Context())


async def stop() -> None:
    """Stops the loop (tests, shutdown)."""
    global _task, _prune_task
    task, _task = _task, None
    if task is not None and not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    prune, _prune_task = _prune_task, None
    if prune is not None and not prune.done():
        _prune_stop.set()  # the prune thread stops after its current batch
        await asyncio.gather(prune, return_exceptions=True)
    _prune_stop.clear()
    checkpoint.stop()


def maybe_prune() -> asyncio.Task[None] | None:
    """Starts the prune of this PRUNE_INTERVAL in its own thread, unless one is running or
    this process already tried this interval; the sweep does not wait for it."""
    global _prune_task, _prune_slot
    slot = int(time.time() // settings.PRUNE_INTERVAL)
    if slot == _prune_slot or (_prune_task is not None and not _prune_task.done()):
        return None
    _prune_slot = slot
    _prune_task = asyncio.get_running_loop().create_task(_prune(), name="netra-prune")
    return _prune_task


async def _prune() -> None:
    try:
        # Not the shared database thread: a batch must not hold up the sockets' queries.
        await database_sync_to_async(run_scheduled_prune, thread_sensitive=False)(stop=_prune_stop)
    except DatabaseError as exc:
        logger.warning("daily prune failed, the next interval retries: %s", exc)
    except Exception as exc:  # noqa: BLE001 - reported; housekeeping must keep going
        report_exception(exc, "daily prune failed")


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
        maybe_prune()
        await asyncio.sleep(settings.PROCESS_HEARTBEAT_INTERVAL)
