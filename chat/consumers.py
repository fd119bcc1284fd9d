"""The WebSocket consumer of `/ws/chat/<thread_id>/` (DESIGN sections 3, 4 and 6)."""

import asyncio
import collections
import logging
import random
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from chat import metrics, selectors
from chat.auth import Principal, header, principal_from_scope
from chat.broadcaster import thread_group, token_group, worker_group
from chat.connections import ConnectionTracker, remember_unflushed
from chat.errors import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_RATE_LIMITED,
    NetraError,
    auth_timeout,
    internal_error,
    rate_limited,
    report_exception,
    thread_not_found,
    unauthenticated,
    unavailable,
)
from chat.events import encoded_events_after
from chat.models import ConnectionState as S
from chat.ports import AgentServicePort, agent_service
from chat.protocol import (
    MAX_SEQ,
    PROTOCOL_VERSION,
    CancelFrame,
    PingFrame,
    ResumeFrame,
    UserMessageFrame,
    bad_request,
    encode,
    parse_client_frame,
)

logger = logging.getLogger("netra.consumer")

# What a send raises when the peer is already gone: daphne (autobahn) and uvicorn.
PEER_GONE: tuple[type[Exception], ...] = (Disconnected, OSError)
AUTH_FAILURE_CODES = frozenset({"unauthenticated", "forbidden", "auth_timeout"})
REPLAY_PAGE = 1000
# After the last event a socket forwarded, how long it waits before asking the log whether
# the channel layer lost the tail of a burst (a lost last event has no successor to reveal it).
TAIL_CHECK_AFTER = 1.0
SOCKET_RETRY_AFTER = 10.0


def _lookup(scope: dict[str, Any], thread_id: uuid.UUID | None) -> Principal:
    """Authenticates the handshake and checks the thread belongs to the user (sync)."""
    principal = principal_from_scope(scope)
    if thread_id is None or not selectors.thread_exists_for(
        thread_id=thread_id, user=principal.user
    ):
        raise thread_not_found()
    if selectors.open_sockets(user=principal.user) >= settings.WS_MAX_SOCKETS_PER_USER:
        metrics.RATE_LIMITED.labels(kind="sockets").inc()
        raise rate_limited(
            f"At most {settings.WS_MAX_SOCKETS_PER_USER} sockets per user; close one first.",
            retry_after=SOCKET_RETRY_AFTER,
            close_code=CLOSE_RATE_LIMITED,
        )
    return principal


class ChatConsumer(AsyncWebsocketConsumer):
    """One socket on a thread: authenticates, forwards run events gaplessly, takes commands."""

    tracker: ConnectionTracker
    principal: Principal | None = None
    thread_id: uuid.UUID | None = None
    service: AgentServicePort | None = None
    last_seq = 0
    accepted = False
    joined = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Runs the socket; if the channel layer's receive fails (Redis restarted or gone),
        closes it with 4503 instead of letting the server tear it down with 1011."""
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - past dispatch() only the layer's receive raises
            await self._layer_lost(exc)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Runs a handler; an unexpected exception ends in an `error` frame and close 4500."""
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except PEER_GONE as exc:
            # The client vanished between its last frame and our answer; the server's
            # websocket.disconnect follows and closes the connection out in the state log.
            logger.info(
                "client went away while %s was handled: %s",
                message.get("type"),
                exc,
                extra={"connection_id": getattr(getattr(self, "tracker", None), "id", None)},
            )
        except DatabaseError as exc:
            await self._database_down(exc, during=str(message.get("type")))
        except Exception as exc:  # noqa: BLE001 - reported, then the socket is closed with 4500
            await self._fail(exc, during=str(message.get("type")))

    # --- connect --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Authenticates within WS_AUTH_TIMEOUT, joins the thread's group and greets the client."""
        raw_thread = str(self.scope["url_route"]["kwargs"].get("thread_id", ""))
        client = self.scope.get("client") or ("", 0)
        self.tracker = ConnectionTracker(
            client_addr=str(client[0] or ""),
            requested_thread=raw_thread,
            user_agent=header(self.scope, b"user-agent") or "",
        )
        self.invalid_frames: collections.deque[float] = collections.deque()
        self.last_event_at = 0.0
        self.tail_dirty = True
        self.watch_task: asyncio.Task[None] | None = None
        self.tracker.transition(S.AUTHENTICATING, "handshake received")
        try:
            thread_id = _parse_uuid(raw_thread)
            try:
                principal = await asyncio.wait_for(
                    database_sync_to_async(_lookup)(self.scope, thread_id),
                    timeout=settings.WS_AUTH_TIMEOUT,
                )
            except TimeoutError as exc:
                raise auth_timeout() from exc
            except DatabaseError as exc:
                logger.warning(
                    "database unavailable during socket authentication: %s",
                    exc,
                    extra={"connection_id": self.tracker.id},
                )
                raise unavailable("The database is unavailable; retry shortly.") from exc
            assert thread_id is not None
            self.principal, self.thread_id = principal, thread_id
            self.tracker.user_id = principal.user.pk
            self.tracker.token_id = principal.token_id
            self.tracker.thread_id = thread_id
            self.service = agent_service()
            if self.service is None:
                raise unavailable("The agent service is not running; retry shortly.")
            await self._join()
            thread_last_seq = await database_sync_to_async(selectors.thread_last_seq)(
                thread_id=thread_id
            )
            await self._accept_and_record()
        except NetraError as err:
            await self._refuse(err)
            return
        self.last_seq = thread_last_seq
        await self._send(
            {
                "type": "connection_established",
                "connection_id": str(self.tracker.id),
                "thread_id": str(thread_id),
                "last_seq": thread_last_seq,
                "protocol": PROTOCOL_VERSION,
            }
        )
        self.service.ensure_background()
        self.watch_task = asyncio.create_task(self._watch())
        try:
            after_seq = self._query_after_seq()
        except NetraError as err:
            await self._send(err.frame())
            return
        if after_seq is not None:
            await self._replay(after_seq)

    async def _join(self) -> None:
        assert self.thread_id is not None
        try:
            for group in self._groups():
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_add").inc()
            report_exception(
                exc,
                "group_add failed",
                throttle="group_add",
                connection_id=self.tracker.id,
                thread_id=self.thread_id,
            )
            raise unavailable("The channel layer is unavailable; retry shortly.") from exc
        self.joined = True

    def _groups(self) -> list[str]:
        groups = [thread_group(str(self.thread_id)), worker_group()]
        if self.principal is not None and self.principal.token_id is not None:
            groups.append(token_group(self.principal.token_id))
        return groups

    async def _accept_and_record(self) -> None:
        await self.accept()
        self.accepted = True
        self.tracker.transition(S.CONNECTED, "authenticated")
        try:
            await database_sync_to_async(self.tracker.flush)()
        except DatabaseError as exc:
            logger.warning(
                "could not record connection: %s", exc, extra={"connection_id": self.tracker.id}
            )
            raise unavailable("The database is unavailable; retry shortly.") from exc
        metrics.WS_CONNECTIONS_TOTAL.labels(outcome="accepted").inc()

    def _query_after_seq(self) -> int | None:
        """The `?after_seq=N` of the handshake; raises bad_request if it is not an integer
        from 0 to MAX_SEQ."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("after_seq")
        if not values:
            return None
        try:
            value = int(values[0])
        except ValueError:
            value = -1
        if not 0 <= value <= MAX_SEQ:
            raise bad_request("after_seq must be an integer >= 0; no events were replayed.")
        return value

    async def _refuse(self, err: NetraError) -> None:
        """Accepts, sends the `error` frame, closes with its code, and records the refusal."""
        await self._tell_and_close(err)
        if err.code in AUTH_FAILURE_CODES:
            metrics.WS_AUTH_FAILURES.labels(code=err.code).inc()
        metrics.WS_CONNECTIONS_TOTAL.labels(outcome="rejected").inc()
        self.tracker.close_code = err.close_code
        if self.tracker.state == S.AUTHENTICATING:
            self.tracker.transition(S.REJECTED, f"{err.code}: {err.message}")
        elif self.tracker.state == S.CONNECTED:
            self.tracker.transition(S.CLOSING, f"{err.code}: {err.message}")
        if self.joined and self.thread_id is not None:
            await self._leave()
        await self._flush_quietly()

    # --- disconnect -----------------------------------------------------------------------

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leaves the group and closes out the connection in the state log."""
        code = message.get("code")
        if self.watch_task is not None:
            self.watch_task.cancel()
        if self.joined:
            await self._leave()
        tracker = getattr(self, "tracker", None)
        if tracker is not None:
            if tracker.close_code is None:
                tracker.close_code = code
            if tracker.state == S.CONNECTED:
                tracker.transition(S.CLOSING, f"client closed ({code})")
            elif tracker.state in (S.CONNECTING, S.AUTHENTICATING):
                tracker.transition(S.FAILED, f"client went away during handshake ({code})")
            if tracker.state != S.CLOSED:
                tracker.transition(S.CLOSED, f"socket closed ({code})")
            await self._flush_quietly()
        raise StopConsumer

    async def _leave(self) -> None:
        self.joined = False
        try:
            for group in self._groups():
                await self.channel_layer.group_discard(group, self.channel_name)
        except Exception as exc:
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_discard").inc()
            logger.warning(
                "group_discard failed: %s",
                exc,
                exc_info=exc,
                extra={"connection_id": self.tracker.id, "thread_id": self.thread_id},
            )

    async def _flush_quietly(self) -> None:
        try:
            await asyncio.wait_for(
                database_sync_to_async(self.tracker.flush)(),
                timeout=max(settings.WS_AUTH_TIMEOUT, 5.0),
            )
        except (DatabaseError, TimeoutError) as exc:
            logger.warning(
                "could not write the connection state log, housekeeping will retry: %s",
                exc,
                extra={"connection_id": self.tracker.id, "to_state": self.tracker.state},
            )
            remember_unflushed(self.tracker)

    async def _fail(self, exc: Exception, *, during: str) -> None:
        tracker = getattr(self, "tracker", None)
        report_exception(
            exc,
            f"unexpected error in the chat consumer during {during}",
            connection_id=tracker.id if tracker else None,
            thread_id=self.thread_id,
            user_id=self.principal.user.pk if self.principal else None,
        )
        await self._tell_and_close(internal_error())
        if tracker is not None and tracker.state not in (S.CLOSED, S.FAILED):
            tracker.close_code = internal_error().close_code
            tracker.transition(S.FAILED, f"internal error during {during}: {type(exc).__name__}")
            await self._flush_quietly()

    async def _tell_and_close(self, err: NetraError) -> None:
        """Sends the `error` frame and closes with its code, accepting first if need be; a
        client already gone is only logged (its disconnect closes the connection out)."""
        try:
            if not self.accepted:
                await self.accept()
                self.accepted = True
            await self._send(err.frame())
            await self.close(code=err.close_code)
        except (
            OSError,
            RuntimeError,
        ) as send_exc:  # PEER_GONE; a closed protocol is a RuntimeError
            logger.info(
                "could not tell the client %s: %s",
                err.code,
                send_exc,
                extra={"connection_id": getattr(getattr(self, "tracker", None), "id", None)},
            )

    async def _database_down(self, exc: DatabaseError, *, during: str) -> None:
        """The log is unreachable (a gap cannot be filled): a dependency is down, not a bug.
        Closes with 4503; the client reconnects with backoff and resumes by seq."""
        tracker = getattr(self, "tracker", None)
        logger.warning(
            "database unavailable during %s: %s",
            during,
            exc,
            extra={"connection_id": tracker.id if tracker else None, "thread_id": self.thread_id},
        )
        down = unavailable("The database is unavailable; reconnect and resume shortly.")
        if tracker is not None and tracker.state == S.CONNECTED:
            await self._close_with(down)
        elif tracker is not None and tracker.state == S.AUTHENTICATING:
            await self._refuse(down)
        else:
            await self._fail(exc, during=during)

    async def _layer_lost(self, exc: Exception) -> None:
        """Reports a failed channel-layer receive, sends `unavailable` and closes with 4503;
        the client reconnects and resumes by seq."""
        tracker = getattr(self, "tracker", None)
        metrics.CHANNEL_LAYER_ERRORS.labels(operation="receive").inc()
        report_exception(
            exc,
            "channel layer receive failed; closing the socket with 4503",
            throttle="layer_receive",
            connection_id=tracker.id if tracker else None,
            thread_id=self.thread_id,
        )
        watch_task = getattr(self, "watch_task", None)
        if watch_task is not None:
            watch_task.cancel()
        down = unavailable("The channel layer connection was lost; reconnect and resume.")
        await self._tell_and_close(down)
        if tracker is None or tracker.state == S.CLOSED:
            return
        if tracker.state != S.FAILED:
            tracker.close_code = down.close_code
            tracker.transition(S.FAILED, f"channel layer lost: {type(exc).__name__}: {exc}")
        tracker.transition(S.CLOSED, "closed with 4503 after the channel layer was lost")
        await self._flush_quietly()

    # --- client frames --------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Validates one client frame and answers it; invalid frames get `bad_request`."""
        if self.tracker.state != S.CONNECTED:
            return  # the server is closing this socket; frames still in flight are moot
        try:
            if text_data is None:
                raise bad_request("Binary frames are not accepted; send JSON text.")
            frame = parse_client_frame(text_data, max_bytes=settings.WS_MAX_FRAME_BYTES)
        except NetraError as err:
            await self._invalid_frame(err)
            return
        try:
            if isinstance(frame, PingFrame):
                await self._send({"type": "pong"})
            elif isinstance(frame, UserMessageFrame):
                await self._user_message(frame)
            elif isinstance(frame, CancelFrame):
                await self._cancel(frame)
            elif isinstance(frame, ResumeFrame):
                await self._replay(frame.after_seq)
        except NetraError as err:
            if err.close_code is not None:
                await self._close_with(err)
            else:
                await self._send(err.frame())
        except DatabaseError as exc:
            logger.warning(
                "database unavailable while handling %s: %s",
                frame.type,
                exc,
                extra={"connection_id": self.tracker.id, "thread_id": self.thread_id},
            )
            down = unavailable("The database is unavailable; retry shortly.")
            down.close_code, down.ref = None, _ref(frame)
            await self._send(down.frame())

    async def _invalid_frame(self, err: NetraError) -> None:
        now = time.monotonic()
        window = settings.WS_INVALID_FRAME_WINDOW
        self.invalid_frames.append(now)
        while self.invalid_frames and now - self.invalid_frames[0] > window:
            self.invalid_frames.popleft()
        if len(self.invalid_frames) >= settings.WS_MAX_INVALID_FRAMES:
            await self._close_with(
                NetraError(
                    "protocol_error",
                    f"Too many invalid frames ({len(self.invalid_frames)} "
                    f"within {window:g} s); last: {err.message}",
                    close_code=CLOSE_PROTOCOL_ERROR,
                )
            )
            return
        await self._send(err.frame())

    async def _close_with(self, err: NetraError) -> None:
        await self._tell_and_close(err)
        self.tracker.close_code = err.close_code
        if self.tracker.state == S.CONNECTED:
            self.tracker.transition(S.CLOSING, f"{err.code}: {err.message}")
            await self._flush_quietly()

    async def _user_message(self, frame: UserMessageFrame) -> None:
        assert self.service is not None and self.principal is not None
        assert self.thread_id is not None
        try:
            result = await self.service.submit(
                thread_id=self.thread_id,
                user=self.principal.user,
                text=frame.text,
                client_msg_id=frame.client_msg_id,
            )
        except NetraError as err:
            err.ref = frame.client_msg_id
            raise
        await self._send(
            {
                "type": "ack",
                "client_msg_id": frame.client_msg_id,
                "message_id": str(result.message_id),
                "run_id": str(result.run_id),
                "duplicate": result.duplicate,
            }
        )
        self.tail_dirty = True

    async def _cancel(self, frame: CancelFrame) -> None:
        assert self.service is not None and self.principal is not None
        try:
            await self.service.cancel(run_id=frame.run_id, user=self.principal.user)
        except NetraError as err:
            if err.code == "run_not_found":
                # The socket protocol has one answer for any run that cannot be cancelled.
                raise NetraError(
                    "run_not_active", "That run is not active.", ref=str(frame.run_id)
                ) from err
            err.ref = str(frame.run_id)
            raise

    # --- run events -----------------------------------------------------------------------

    async def thread_event(self, message: dict[str, Any]) -> None:
        """Forwards one run event in seq order, filling a gap from the log first."""
        seq = message["seq"]
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            await self._fill_gap(up_to=seq - 1)
        await self.send(text_data=message["text"])
        self.last_seq = seq
        metrics.EVENTS_DELIVERED.labels(type=message["event_type"]).inc()
        metrics.EVENT_DELIVERY_SECONDS.observe(max(0.0, time.time() - message["emitted_at"]))
        self.last_event_at = time.monotonic()
        self.tail_dirty = message["event_type"] != "agent_completed"

    async def server_draining(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4503: this worker is shutting down (agents/drain.py)."""
        await self._close_with(unavailable("The server is restarting; reconnect and resume."))

    async def token_revoked(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4401: the token that opened it was revoked."""
        await self._close_with(unauthenticated("The API token of this socket was revoked."))

    async def tail_check(self, message: dict[str, Any]) -> None:
        """Forwards what the log holds beyond the last event this socket sent; while the
        database is unreachable the check is retried on the next tick, the socket stays."""
        try:
            last_type = await self._fill_gap(up_to=None)
        except DatabaseError as exc:
            self.tail_dirty = True
            logger.warning(
                "tail check failed, will retry: %s",
                exc,
                extra={"connection_id": self.tracker.id, "thread_id": self.thread_id},
            )
            return
        if last_type is not None and last_type != "agent_completed":
            # More of the same burst may still be lost on the layer: look again later.
            self.tail_dirty = True
            self.last_event_at = time.monotonic()

    async def _fill_gap(self, *, up_to: int | None) -> str | None:
        """Sends the logged events after the last one forwarded (up to `up_to`); returns
        the type of the last one sent, or None."""
        assert self.thread_id is not None
        last_type: str | None = None
        while True:
            missing = await database_sync_to_async(encoded_events_after)(
                thread_id=self.thread_id, after_seq=self.last_seq, limit=REPLAY_PAGE, up_to=up_to
            )
            for seq, last_type, text in missing:
                await self.send(text_data=text)
                self.last_seq = seq
                metrics.EVENTS_DELIVERED.labels(type=last_type).inc()
            if missing:
                metrics.EVENT_GAPS_FILLED.inc(len(missing))
                logger.info(
                    "filled %d events from the log",
                    len(missing),
                    extra={
                        "connection_id": self.tracker.id,
                        "thread_id": self.thread_id,
                        "seq": self.last_seq,
                    },
                )
            if len(missing) < REPLAY_PAGE:
                return last_type

    async def _replay(self, after_seq: int) -> None:
        """Sends every logged event with seq > after_seq, then `resume_complete`. An
        after_seq beyond the log counts as its end, so that no later event is mistaken for
        one this socket already had."""
        assert self.thread_id is not None
        log_last = await database_sync_to_async(selectors.thread_last_seq)(thread_id=self.thread_id)
        start = min(after_seq, log_last)
        cursor, first = start, None
        while True:
            page = await database_sync_to_async(encoded_events_after)(
                thread_id=self.thread_id, after_seq=cursor, limit=REPLAY_PAGE
            )
            for _, _, text in page:
                await self.send(text_data=text)
            if page:
                first = page[0][0] if first is None else first
                cursor = page[-1][0]
            if len(page) < REPLAY_PAGE:
                break
        recovered = first == start + 1 if log_last > start else True
        self.last_seq = max(self.last_seq, cursor)
        await self._send(
            {
                "type": "resume_complete",
                "after_seq": after_seq,
                "last_seq": self.last_seq,
                "recovered": recovered,
            }
        )

    async def _watch(self) -> None:
        """Asks for a tail check when events stopped arriving after some had come, and
        re-joins the groups every WS_GROUP_REFRESH_INTERVAL seconds."""
        interval = settings.WS_GROUP_REFRESH_INTERVAL
        rejoin_at = time.monotonic() + random.uniform(0.5, 1.0) * interval  # noqa: S311
        while True:
            await asyncio.sleep(TAIL_CHECK_AFTER)
            if time.monotonic() >= rejoin_at:
                rejoin_at = time.monotonic() + interval
                await self._rejoin()
            if self.tail_dirty and time.monotonic() - self.last_event_at >= TAIL_CHECK_AFTER:
                self.tail_dirty = False
                try:
                    await self.channel_layer.send(self.channel_name, {"type": "tail.check"})
                except Exception as exc:  # noqa: BLE001 - retried on the next tick
                    self.tail_dirty = True
                    metrics.CHANNEL_LAYER_ERRORS.labels(operation="send").inc()
                    logger.warning(
                        "tail check could not be queued: %s",
                        exc,
                        extra={"connection_id": self.tracker.id},
                    )

    async def _rejoin(self) -> None:
        """Adds this socket to its groups again, then asks for a tail check.

        A Redis restarted without persistence forgets every group membership, and
        group_expiry drops old ones silently: a socket that outlives either would stop
        receiving. Re-adding is idempotent; the tail check fetches what was missed meanwhile.
        """
        try:
            for group in self._groups():
                await self.channel_layer.group_add(group, self.channel_name)
        except Exception as exc:  # noqa: BLE001 - retried at the next refresh
            metrics.CHANNEL_LAYER_ERRORS.labels(operation="group_add").inc()
            logger.warning(
                "could not re-join the groups: %s", exc, extra={"connection_id": self.tracker.id}
            )
            return
        self.tail_dirty = True

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=encode(frame))


def _parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def _ref(frame: Any) -> str | None:
    if isinstance(frame, UserMessageFrame):
        return frame.client_msg_id
    if isinstance(frame, CancelFrame):
        return str(frame.run_id)
    return None
