"""The broadcaster: log an event, then notify the thread's sockets over the channel layer."""

import asyncio
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from channels.layers import get_channel_layer
from django.db import DatabaseError

from chat import metrics
from chat.connections import WORKER_ID
from chat.dbthread import on_database_thread
from chat.errors import report_exception
from chat.events import PendingEvent, event_append_many
from chat.layers import events_alias
from chat.protocol import encode

logger = logging.getLogger("netra.broadcaster")

# The most events one database transaction takes from the queue of waiting emitters.
MAX_BATCH = 256
# The database thread, without close_old_connections around every call (chat/dbthread.py).
_append_many = on_database_thread(event_append_many)


class EventLogError(RuntimeError):
    """The event log could not be written; chained to the database's exception."""


def thread_group(thread_id: uuid.UUID | str) -> str:
    """Returns the channel-layer group of a thread's sockets."""
    return f"thread.{thread_id}"


def worker_group(worker_id: str = WORKER_ID) -> str:
    """Returns the group of every socket served by one worker process (a draining worker
    closes them all through it, docs/operations.md)."""
    return "worker." + re.sub(r"[^A-Za-z0-9_.-]", "-", worker_id)[:90]


def token_group(token_id: uuid.UUID | str) -> str:
    """Returns the group of the sockets an API token opened (closed when it is revoked)."""
    return f"token.{token_id}"


def session_group(session_key: str) -> str:
    """Returns the group of the sockets a browser session opened (closed at its logout).
    The name carries a hash of the session key, never the key itself."""
    digest = hashlib.sha256(f"netra-socket-session:{session_key}".encode()).hexdigest()
    return f"session.{digest[:40]}"


def user_sessions_group(user_id: int | str) -> str:
    """Returns the group of the sockets any session of a user opened (re-checked when the
    user's password or active flag changes)."""
    return f"sessions.{user_id}"


class LogWriter:
    """Writes the events emitters are waiting on, many per transaction: while one batch is
    in the database, the next one collects. Each emitter still waits for its own event to
    be committed (or for the exception that kept it out of the log)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pending: list[tuple[PendingEvent, asyncio.Future[dict[str, Any]]]] = []
        self.task: asyncio.Task[None] | None = None

    def submit(self, event: PendingEvent) -> "asyncio.Future[dict[str, Any]]":
        """Queues one event, in the order of the calls, and returns the future of its
        envelope, set once the event is in the log (or failed with what kept it out)."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new event loop (tests): nothing of the old one is valid
            self.loop, self.pending, self.task = loop, [], None
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.pending.append((event, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._write())
        return future

    async def append(self, event: PendingEvent) -> dict[str, Any]:
        """Queues one event and returns its envelope once it is in the log."""
        return await self.submit(event)

    async def _write(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            try:
                results = await _append_many([event for event, _ in batch])
            except BaseException as exc:
                # Not a per-event failure (those come back as results): fail every waiting
                # emitter with it rather than leave one waiting forever.
                for _, future in batch + self.pending:
                    _fail(future, exc)
                self.pending = []
                raise
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():  # its emitter was cancelled; the event is logged anyway
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)


class Broadcaster:
    """Emits run events: the log write first (it raises), then the group send (it may fail)."""

    def __init__(self, alias: str | None = None) -> None:
        self.alias = alias  # None: the layer of thread events (chat/layers.py)
        self.writer = LogWriter()

    def log(
        self,
        *,
        thread_id: uuid.UUID,
        run_id: uuid.UUID,
        type: str,
        data: dict[str, Any],
        in_transaction: Callable[[], None] | None = None,
        attempt: int | None = None,
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """Queues one event for the log at once (events of one caller are logged in the
        order of its calls) and returns an awaitable of its envelope, once committed.

        Batched with other emitters' events; one carrying `in_transaction` (a run status
        change that must commit with it) is written with it in a savepoint of the batch
        (chat.events). `attempt` is the emitter's attempt of the run, checked in the
        write's statement (chat.events). A failed write raises EventLogError, chained to
        the database's exception; a fenced one raises chat.events.RunFencedError.
        """
        future = self.writer.submit(
            PendingEvent(thread_id, run_id, type, data, in_transaction, attempt=attempt)
        )
        return self._logged(future, type=type, run_id=run_id, thread_id=thread_id)

    async def _logged(
        self,
        future: "asyncio.Future[dict[str, Any]]",
        *,
        type: str,
        run_id: uuid.UUID,
        thread_id: uuid.UUID,
    ) -> dict[str, Any]:
        try:
            event = await future
        except DatabaseError as exc:
            raise EventLogError(
                f"could not log {type} of run {run_id} in thread {thread_id}: {exc}"
            ) from exc
        metrics.EVENTS_EMITTED.labels(type=type).inc()
        return event

    @property
    def channel_layer(self) -> Any:
        """The configured layer, looked up each time so that a settings change is followed."""
        return get_channel_layer(self.alias or events_alias())

    async def emit(
        self,
        *,
        thread_id: uuid.UUID,
        run_id: uuid.UUID,
        type: str,
        data: dict[str, Any],
        in_transaction: Callable[[], None] | None = None,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Appends the event to the log and sends it to the thread's group; returns it.

        A failed log write raises (see `log`). A failed send is logged and counted, and
        the sockets take the event from the log by gap fill.
        """
        event = await self.log(
            thread_id=thread_id,
            run_id=run_id,
            type=type,
            data=data,
            in_transaction=in_transaction,
            attempt=attempt,
        )
        await self.notify(event)
        return event

    async def notify_logged(self, event: dict[str, Any]) -> None:
        """Counts and sends an event logged in a caller's own transaction (a new run's
        agent_started, agents/services.run_create)."""
        metrics.EVENTS_EMITTED.labels(type=event["type"]).inc()
        await self.notify(event)

    async def notify(self, event: dict[str, Any]) -> None:
        """Sends a logged event to its thread's group; failures are logged and counted."""
        group = thread_group(event["thread_id"])
        message = {
            "type": "thread.event",
            "group": group,  # how chat/router.py finds the thread's clients
            "seq": event["seq"],
            "event_type": event["type"],
            "text": encode(event),
            "emitted_at": time.time(),
        }
        try:
            await self.channel_layer.group_send(group, message)
        except Exception as exc:  # noqa: BLE001 - the event is logged; sockets gap-fill from it
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
            report_exception(
                exc,
                "group_send failed; sockets will fill the gap from the log",
                throttle="group_send",
                thread_id=event["thread_id"],
                run_id=event["run_id"],
                seq=event["seq"],
            )
