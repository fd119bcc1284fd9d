"""Delivery of a thread's run events to one client: in seq order, with no gap and no double.

The event log is the source of truth; the channel layer is only the fast path, and it
loses messages silently (over capacity, while Redis reconnects, after a Redis restart has
forgotten the group memberships). So a socket remembers the last seq it sent, fills any gap
from the log before forwarding, asks the log for a lost tail once events stop arriving,
and re-joins its groups now and then (docs/architecture.md).

The client is a `Sink`: a WebSocket (`TextSink` over the consumer's send) or a Server-Sent
Events response (chat/sse.py); both get the same guarantee from the same code.
"""

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer
from django.conf import settings
from django.db import DatabaseError

from chat import metrics, selectors, watch
from chat.broadcaster import thread_group, token_group
from chat.errors import report_exception, unavailable
from chat.events import encoded_events_after
from chat.protocol import encode
from chat.router import EventsInbox, events_router

logger = logging.getLogger("netra.delivery")

REPLAY_PAGE = 1000
LAST_EVENT = "agent_completed"

SendText = Callable[[str], Awaitable[None]]


def refresh_interval(layer: Any) -> float:
    """How often a socket re-joins its groups and then checks the log's tail:
    WS_GROUP_REFRESH_INTERVAL on a layer that can forget memberships (Redis, restarted
    without persistence), and on the in-process layer, which forgets one only at its
    group_expiry, half of that. An idle socket on it then costs nothing between its
    re-joins (on that layer each wake-up of a socket scans every channel and group of the
    process: at 5,000 sockets the 15 s re-joins and their tail checks alone saturated a
    worker)."""
    if isinstance(layer, InMemoryChannelLayer):
        return max(settings.WS_GROUP_REFRESH_INTERVAL, layer.group_expiry / 2)
    return float(settings.WS_GROUP_REFRESH_INTERVAL)


class Sink(Protocol):
    """Where a Delivery writes: run events (with their seq and type, which an SSE stream
    puts in its `id:` and `event:` lines) and the other frames (`resume_complete`)."""

    async def send_event(self, seq: int, event_type: str, text: str) -> None:
        """Writes one run event, `text` being its envelope as JSON."""

    async def send_frame(self, text: str) -> None:
        """Writes a frame that is not a run event (JSON text)."""


class TextSink:
    """The sink of a socket: every event and frame is one text message."""

    def __init__(self, send_text: SendText) -> None:
        self.send_text = send_text

    async def send_event(self, seq: int, event_type: str, text: str) -> None:
        """Sends the envelope as it is."""
        await self.send_text(text)

    async def send_frame(self, text: str) -> None:
        """Sends the frame as it is."""
        await self.send_text(text)


class Delivery:
    """What one client (a socket, an SSE stream) has been sent of its thread's log, and
    how it stays gapless.

    Its coroutines other than the watch run one at a time (on the consumer's dispatch, or
    the SSE stream's feeding task), so `last_seq` is never raced; the watch only queues a
    `tail.check` to the client's own channel, which comes back to `check_tail`.
    """

    def __init__(
        self,
        *,
        layer: Any,
        channel_name: str,
        thread_id: uuid.UUID,
        events: EventsInbox | None = None,
        token_id: uuid.UUID | None,
        sink: Sink,
        connection_id: uuid.UUID,
        extra_groups: tuple[str, ...] = (),
    ) -> None:
        self.layer = layer
        self.channel_name = channel_name
        self.thread_id = thread_id
        self.groups: tuple[str, ...] = (thread_group(str(thread_id)),)  # `thread_group` below
        if token_id is not None:  # a socket opened with a token goes when the token does
            self.groups += (token_group(token_id),)
        self.groups += extra_groups  # e.g. a cookie socket's session groups
        # Where thread events have a layer of their own, the process's router hands them to
        # this inbox (chat/router.py); the control messages still come by `layer`.
        self.events = events
        self.sink = sink
        self.connection_id = connection_id
        self.last_seq = 0
        self.last_event_at = 0.0
        self.tail_dirty = True
        self.joined = False
        # The watch's work under way (a re-join or queueing a tail check), run by chat.watch.TICKER.
        self.watch_task: asyncio.Task[None] | None = None
        self.watch_from = 0.0
        self.rejoin_at = 0.0

    @property
    def thread_group(self) -> str:
        """The group of the thread's events (the first of `groups`)."""
        return self.groups[0]

    def _context(self) -> dict[str, Any]:
        return {"connection_id": self.connection_id, "thread_id": self.thread_id}

    # --- group membership -----------------------------------------------------------------

    async def join(self) -> None:
        """Adds the socket to its groups, then takes the log's last seq as where delivery
        starts: in this order, an event logged in between comes by the group. Raises
        `unavailable` if the layer fails (DatabaseError if the log does)."""
        try:
            await self._add_all()
        except Exception as exc:
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_add").inc()
            report_exception(exc, "group_add failed", throttle="group_add", **self._context())
            raise unavailable("The channel layer is unavailable; retry shortly.") from exc
        self.joined = True
        self.last_seq = await database_sync_to_async(selectors.thread_last_seq)(
            thread_id=self.thread_id
        )

    async def _add_all(self) -> None:
        for group in self.groups:
            await self.layer.group_add(group, self.channel_name)
        if self.events is not None:
            # On pub/sub a SUBSCRIBE that Redis has not yet run misses what is published
            # meanwhile; the first tail check (tail_dirty starts True) fetches it.
            await events_router().join(self.thread_group, self.events)

    async def leave(self) -> None:
        """Removes the socket from its groups, if it joined; a failure is logged and counted.
        At most watch.MAX_LEAVES sockets of the process leave at once."""
        if self.events is not None:
            events_router().discard(self.events)
        if not self.joined:
            return
        self.joined = False
        try:
            async with watch.LEAVES.gate():
                for group in self.groups:
                    await self.layer.group_discard(group, self.channel_name)
        except Exception as exc:
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_discard").inc()
            logger.warning("group_discard failed: %s", exc, exc_info=exc, extra=self._context())

    async def rejoin(self) -> None:
        """Adds the socket to its groups again, then asks for a tail check.

        A Redis restarted without persistence forgets every group membership, and
        group_expiry drops old ones silently: a socket that outlives either would stop
        receiving. Re-adding is idempotent; the tail check fetches what was missed meanwhile.
        """
        try:
            await self._add_all()
        except Exception as exc:  # noqa: BLE001 - retried at the next refresh
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_add").inc()
            logger.warning(
                "could not re-join the groups: %s", exc, extra={"connection_id": self.connection_id}
            )
            return
        self.tail_dirty = True

    # --- the watch ------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the watch: the process's one timer (`Ticker`) looks at this socket every
        watch.TAIL_CHECK_AFTER seconds, so an idle socket keeps no task and no timer of its own."""
        now = time.monotonic()
        self.watch_from = now + watch.TAIL_CHECK_AFTER
        interval = refresh_interval(self.layer)
        self.rejoin_at = now + random.uniform(0.5, 1.0) * interval  # noqa: S311
        watch.TICKER.add(self)

    def stop(self) -> None:
        """Stops the watch (and a re-join or tail check it has under way) and the thread
        events' inbox, if any."""
        watch.TICKER.discard(self)
        if self.events is not None:
            events_router().discard(self.events)
        if self.watch_task is not None:
            self.watch_task.cancel()

    def expect_events(self) -> None:
        """Notes that a run was started: its tail is checked even if no event arrives."""
        self.tail_dirty = True

    def due(self, now: float) -> Coroutine[Any, Any, None] | None:
        """The watch's work at this tick, if any: a re-join every WS_GROUP_REFRESH_INTERVAL
        seconds, and a tail check when events stopped arriving after some had come."""
        if now < self.watch_from:
            return None
        rejoin = now >= self.rejoin_at
        if rejoin:
            self.rejoin_at = now + refresh_interval(self.layer)
        if not rejoin and not self._tail_due(now):
            return None
        return self._watch_once(rejoin=rejoin)

    def _tail_due(self, now: float) -> bool:
        return self.tail_dirty and now - self.last_event_at >= watch.TAIL_CHECK_AFTER

    async def _watch_once(self, *, rejoin: bool) -> None:
        if rejoin:
            await self.rejoin()  # on success it asks for a tail check, made right away
        if not self._tail_due(time.monotonic()):
            return
        self.tail_dirty = False
        try:
            await self.layer.send(self.channel_name, {"type": "tail.check"})
        except Exception as exc:  # noqa: BLE001 - retried on the next tick
            self.tail_dirty = True
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="send").inc()
            logger.warning(
                "tail check could not be queued: %s",
                exc,
                extra={"connection_id": self.connection_id},
            )

    # --- events ---------------------------------------------------------------------------

    async def forward(self, message: dict[str, Any]) -> None:
        """Forwards one `thread.event` in seq order, filling a gap from the log first; an
        event the socket already has is dropped."""
        seq = message["seq"]
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            await self.fill_gap(up_to=seq - 1)
        await self.sink.send_event(seq, message["event_type"], message["text"])
        self.last_seq = seq
        metrics.EVENTS_DELIVERED.labels(type=message["event_type"]).inc()
        metrics.EVENT_DELIVERY_SECONDS.observe(max(0.0, time.time() - message["emitted_at"]))
        self.last_event_at = time.monotonic()
        self.tail_dirty = message["event_type"] != LAST_EVENT

    async def check_tail(self) -> None:
        """Forwards what the log holds beyond the last event sent; while the database is
        unreachable the check is retried on the next tick, the socket stays."""
        try:
            last_type = await self.fill_gap(up_to=None)
        except DatabaseError as exc:
            self.tail_dirty = True
            logger.warning("tail check failed, will retry: %s", exc, extra=self._context())
            return
        if last_type is not None and last_type != LAST_EVENT:
            # More of the same burst may still be lost on the layer: look again later.
            self.tail_dirty = True
            self.last_event_at = time.monotonic()

    async def fill_gap(self, *, up_to: int | None) -> str | None:
        """Sends the logged events after the last one forwarded (up to `up_to`); returns
        the type of the last one sent, or None."""
        last_type: str | None = None
        while True:
            missing = await database_sync_to_async(encoded_events_after)(
                thread_id=self.thread_id, after_seq=self.last_seq, limit=REPLAY_PAGE, up_to=up_to
            )
            for seq, last_type, text in missing:
                await self.sink.send_event(seq, last_type, text)
                self.last_seq = seq
                metrics.EVENTS_DELIVERED.labels(type=last_type).inc()
            if missing:
                metrics.EVENT_GAPS_FILLED.inc(len(missing))
                logger.info(
                    "filled %d events from the log",
                    len(missing),
                    extra={**self._context(), "seq": self.last_seq},
                )
            if len(missing) < REPLAY_PAGE:
                return last_type

    async def replay(self, after_seq: int) -> None:
        """Sends every logged event with seq > after_seq, then `resume_complete`. An
        after_seq beyond the log counts as its end, so that no later event is mistaken for
        one this socket already had."""
        log_last = await database_sync_to_async(selectors.thread_last_seq)(thread_id=self.thread_id)
        start = min(after_seq, log_last)
        cursor, first = start, None
        while True:
            page = await database_sync_to_async(encoded_events_after)(
                thread_id=self.thread_id, after_seq=cursor, limit=REPLAY_PAGE
            )
            for seq, event_type, text in page:
                await self.sink.send_event(seq, event_type, text)
            if page:
                first = page[0][0] if first is None else first
                cursor = page[-1][0]
            if len(page) < REPLAY_PAGE:
                break
        recovered = first == start + 1 if log_last > start else True
        self.last_seq = max(self.last_seq, cursor)
        complete = {
            "type": "resume_complete",
            "after_seq": after_seq,
            "last_seq": self.last_seq,
            "recovered": recovered,
        }
        await self.sink.send_frame(encode(complete))
