"""Run events over Server-Sent Events: one response, one Delivery (docs/protocol.md).

An `EventStream` is a Delivery (chat/delivery.py, the socket's gapless, ordered,
duplicate-free delivery, not a copy of it) whose sink is a bounded queue, plus the task
that feeds it from a channel-layer channel of its own, and the async iterator the streaming
response drains. A `Renderer` turns each run event into the SSE text to write: the
thread stream writes the envelope as it is; the AG-UI stream (agents/agui.py) maps it.

No thread is held per open stream: everything here runs on the server's event loop, the
request's own sync thread is given back when the stream starts (`release_request_thread`),
and the stream's database calls run where a socket's do (database_sync_to_async outside
any request context), one call at a time.

A client that stops reading must not grow the server without bound:
- under a server that applies back-pressure (uvicorn), the response's writes stall and the
  queue fills; past SSE_MAX_BUFFERED_EVENTS its events are dropped and the stream ends
  with a final comment saying why (the client resumes by Last-Event-ID); a write that is
  still stalled SSE_STALL_TIMEOUT seconds later is cancelled, which drops the connection;
- a server that buffers without back-pressure (daphne) never stalls the writes, so each
  stream also ends after SSE_MAX_STREAM_BYTES, with the same comment, which bounds what
  an unread connection can hold.
"""

import asyncio
import contextvars
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from asgiref.sync import SyncToAsync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError

from chat.broadcaster import worker_group
from chat.delivery import Delivery
from chat.errors import NetraError, report_exception
from chat.layers import Inbox, Receive, has_events_layer
from chat.router import EventsInbox

logger = logging.getLogger("netra.sse")

# How soon an EventSource reconnects after the stream ends (the SSE `retry:` field), in ms.
RECONNECT_MS = 1000


class Renderer(Protocol):
    """Turns run events into the SSE text of one stream."""

    def event(self, seq: int, event_type: str, text: str) -> str:
        """The SSE text of one run event ('' writes nothing); `text` is its envelope JSON."""

    def frame(self, text: str) -> str:
        """The SSE text of a frame that is not a run event (`resume_complete`)."""

    @property
    def finished(self) -> bool:
        """True once the stream has said all it will (the AG-UI stream after its run)."""


def sse_event(*, data: str, seq: int | None = None, event: str | None = None) -> str:
    """One SSE event: `id:`, `event:` and `data:` lines (data is one line of JSON)."""
    head = "" if seq is None else f"id: {seq}\n"
    if event is not None:
        head += f"event: {event}\n"
    return f"{head}data: {data}\n\n"


def sse_comment(text: str) -> str:
    """An SSE comment line (clients ignore it; it keeps proxies from timing out)."""
    return f": {text}\n\n"


class StreamOverflowError(Exception):
    """The client reads slower than events come: SSE_MAX_BUFFERED_EVENTS have waited for
    SSE_STALL_TIMEOUT seconds with no room made."""


class ThreadRenderer:
    """The thread stream: each event as `id: <seq>`, `event: <type>`, `data: <envelope>`."""

    finished = False

    def event(self, seq: int, event_type: str, text: str) -> str:
        """The envelope, with its seq as the SSE id."""
        return sse_event(data=text, seq=seq, event=event_type)

    def frame(self, text: str) -> str:
        """`resume_complete` as an event with no id (EventSource keeps its last id)."""
        return sse_event(data=text, event="resume_complete")


class EventStream:
    """One SSE response: a Delivery into a bounded queue, and the chunks to write.

    `after_seq`: replay the log after it first (None: only what comes from now on); a
    coroutine function gives it once the stream has joined its groups (so that nothing
    logged in between is missed), e.g. the seq before a run's first event.
    `prelude`: SSE text written first (the AG-UI rejoin's re-sent STARTs).
    """

    def __init__(
        self,
        *,
        thread_id: uuid.UUID,
        token_id: uuid.UUID | None,
        renderer: Renderer,
        after_seq: int | Callable[[], Awaitable[int | None]] | None,
        prelude: str = "",
        label: str = "sse",
    ) -> None:
        self.id = uuid.uuid4()
        self.thread_id = thread_id
        self.token_id = token_id
        self.renderer = renderer
        self.after_seq = after_seq
        self.prelude = prelude
        self.label = label
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.space = asyncio.Event()  # set by the response each time it takes a chunk
        self.closing: str | None = None
        self.written = 0
        self.reader: asyncio.Task[Any] | None = None
        # Set once the stream is in its thread's groups (or its feed ended): the first chunk
        # waits for it, so that a client that saw it and then asks sees the whole answer.
        self.joined = asyncio.Event()

    def _context(self) -> dict[str, Any]:
        return {"stream_id": self.id, "thread_id": self.thread_id, "stream": self.label}

    # --- the sink of the Delivery ---------------------------------------------------------

    async def send_event(self, seq: int, event_type: str, text: str) -> None:
        """Queues one event's SSE text, waiting for room while SSE_MAX_BUFFERED_EVENTS
        wait (a replay of a long log is written at the client's pace); raises
        StreamOverflowError if no room is made within SSE_STALL_TIMEOUT."""
        if self.closing is not None:
            return
        if self.queue.qsize() >= settings.SSE_MAX_BUFFERED_EVENTS:
            try:
                await asyncio.wait_for(self._room(), timeout=settings.SSE_STALL_TIMEOUT)
            except TimeoutError as exc:
                raise StreamOverflowError from exc
        chunk = self.renderer.event(seq, event_type, text)
        if chunk:
            self.queue.put_nowait(chunk)
        if self.renderer.finished:
            self._end(None)

    async def send_frame(self, text: str) -> None:
        """Queues a frame that is not a run event."""
        if self.closing is None:
            chunk = self.renderer.frame(text)
            if chunk:
                self.queue.put_nowait(chunk)

    async def _room(self) -> None:
        while self.queue.qsize() >= settings.SSE_MAX_BUFFERED_EVENTS:
            self.space.clear()
            await self.space.wait()

    def _end(self, why: str | None) -> None:
        """Ends the stream: drops what waits (if `why`, a slow or failed stream), then the
        final comment saying why, then the end."""
        if self.closing is not None:
            return
        self.closing = why or "end of stream"
        if why is not None:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(sse_comment(f"closing: {why}"))
        self.queue.put_nowait(None)

    # --- the feeding task -----------------------------------------------------------------

    async def _feed(self, delivery: Delivery, layer: Any, channel: str) -> None:
        """Joins, replays, then hands the channel's messages to the Delivery until the
        stream ends; a failure ends the stream with a comment saying why."""
        inbox: Inbox | None = None
        try:
            sources: list[Receive] = [functools.partial(layer.receive, channel)]
            if has_events_layer():
                delivery.events = EventsInbox()
                sources.append(delivery.events.receive)
            inbox = Inbox(sources)
            await delivery.join()
            self.joined.set()  # before the replay, which may wait for the first chunk's room
            after_seq = await self.after_seq() if callable(self.after_seq) else self.after_seq
            if after_seq is not None:
                await delivery.replay(after_seq)
            if self.renderer.finished:  # a rejoin after the end: nothing more to say
                self._end(None)
                return
            delivery.start()
            while self.closing is None:
                message = await inbox.get()
                kind = message.get("type")
                if kind == "thread.event":
                    await delivery.forward(message)
                elif kind == "tail.check":
                    await delivery.check_tail()
                elif kind == "token.revoked":
                    self._end("the API token of this stream was revoked")
                elif kind == "thread.deleted":
                    self._end("thread_not_found: the thread was deleted")
                elif kind == "server.draining":
                    self._end("unavailable: the server is restarting; reconnect with Last-Event-ID")
        except StreamOverflowError:
            logger.warning("SSE client reads too slowly; closing its stream", extra=self._context())
            self._end("the client is not reading fast enough; reconnect with Last-Event-ID")
            await self._cancel_if_stalled(delivery)
        except DatabaseError as exc:
            logger.warning("SSE stream: database unavailable: %s", exc, extra=self._context())
            self._end("the database is unavailable; reconnect with Last-Event-ID shortly")
        except NetraError as err:
            self._end(f"{err.code}: {err.message}; reconnect shortly")
        except Exception as exc:  # noqa: BLE001 - reported, then the stream ends with a comment
            report_exception(exc, "SSE stream failed", throttle="sse_feed", **self._context())
            self._end("internal error; reconnect with Last-Event-ID")
        finally:
            self.joined.set()
            if inbox is not None:
                inbox.close()

    async def _cancel_if_stalled(self, delivery: Delivery) -> None:
        """Cancels the response's write if it is still stalled after SSE_STALL_TIMEOUT: a
        client that reads nothing must not keep the connection and its buffers. The
        response then ends without its last chunk, and the server drops the connection."""
        await asyncio.sleep(settings.SSE_STALL_TIMEOUT)
        if not self.queue.empty() and self.reader is not None and not self.reader.done():
            logger.warning("SSE client stalled; dropping its connection", extra=self._context())
            delivery.stop()
            await delivery.leave()
            self.reader.cancel()

    # --- the response body ----------------------------------------------------------------

    async def chunks(self) -> AsyncIterator[str]:
        """The response body: the prelude, then events, `: keep-alive` comments while idle,
        and a final comment if the server ends the stream."""
        self.reader = asyncio.current_task()
        release_request_thread()
        layer = get_channel_layer()
        channel = await layer.new_channel()
        delivery = Delivery(
            layer=layer,
            channel_name=channel,
            thread_id=self.thread_id,
            token_id=self.token_id,
            sink=self,
            connection_id=self.id,
            extra_groups=(worker_group(),),  # a draining worker ends its streams too
        )
        # A fresh context: the feeder's database calls do not go to a per-request thread.
        feeder = asyncio.create_task(
            self._feed(delivery, layer, channel), context=contextvars.Context()
        )
        try:
            await self.joined.wait()
            yield f"retry: {RECONNECT_MS}\n" + (self.prelude or sse_comment("stream open"))
            async for chunk in self._drain():
                yield chunk
        finally:
            feeder.cancel()
            delivery.stop()
            await delivery.leave()

    async def _drain(self) -> AsyncIterator[str]:
        keepalive = settings.SSE_KEEPALIVE_SECONDS
        while True:
            try:
                chunk = await asyncio.wait_for(self.queue.get(), timeout=keepalive)
            except TimeoutError:
                yield sse_comment("keep-alive")
                continue
            self.space.set()
            if chunk is None:
                return
            yield chunk
            self.written += len(chunk)
            if self.written >= settings.SSE_MAX_STREAM_BYTES and self.closing is None:
                self._end("this stream reached its size limit; reconnect with Last-Event-ID")


def release_request_thread() -> None:
    """Gives back the request's sync thread. Django runs each request in an asgiref
    ThreadSensitiveContext whose one thread (made by the middleware's and the view's sync
    calls) lives as long as the request, which for a stream is as long as it is open. The
    stream needs none; a later sync call of the request gets a new one, ended with it."""
    context = SyncToAsync.thread_sensitive_context.get(None)
    if context is None:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)
