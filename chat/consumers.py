"""The WebSocket consumer of `/ws/chat/<thread_id>/` (docs/protocol.md, docs/architecture.md).

It keeps to three jobs: the connection's life (authenticate, then close one way, driven by
ENDINGS), the client's frames (validate, call the agent service, answer), and handing run
events to its Delivery (chat/delivery.py).
"""

import logging
import uuid
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from chat import metrics
from chat.auth import header, principal_from_session_key
from chat.broadcaster import worker_group
from chat.closing import ENDINGS, End, flush_quietly, record_ending
from chat.connections import ConnectionTracker
from chat.delivery import Delivery, TextSink
from chat.errors import (
    ErrorCode,
    NetraError,
    internal_error,
    protocol_error,
    report_exception,
    run_not_active,
    thread_not_found,
    unauthenticated,
    unavailable,
)
from chat.handshake import Admission, admit, after_seq_of, session_groups
from chat.layer_receive import ChannelLayerReceiveError, GuardedLayerReceive
from chat.models import ConnectionState as S
from chat.protocol import (
    PROTOCOL_VERSION,
    ApprovalFrame,
    CancelFrame,
    InvalidFrames,
    PingFrame,
    ResumeFrame,
    UserMessageFrame,
    bad_request,
    encode,
    parse_client_frame,
    ref_of,
)

logger = logging.getLogger("netra.consumer")

# What a send raises when the peer is already gone: daphne (autobahn) and uvicorn.
PEER_GONE: tuple[type[Exception], ...] = (Disconnected, OSError)


class ChatConsumer(GuardedLayerReceive, AsyncWebsocketConsumer):
    """One socket on a thread: authenticates, forwards run events gaplessly, takes commands."""

    def _open(self, scope: dict[str, Any]) -> None:
        """Creates the socket's state, before any message of it is handled."""
        client = scope.get("client") or ("", 0)
        self.tracker = ConnectionTracker(
            client_addr=str(client[0] or ""),
            requested_thread=str(scope["url_route"]["kwargs"].get("thread_id", "")),
            user_agent=header(scope, b"user-agent") or "",
        )
        self.admitted: Admission | None = None  # these two once the handshake is admitted
        self.delivery: Delivery | None = None
        self.accepted = False
        self.invalid_frames = InvalidFrames()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Runs the socket. A failed channel-layer receive closes it with 4503, a bug that
        escapes dispatch with 4500; either way the server would otherwise tear it down with
        1011 and leave it CONNECTED in the state log."""
        self._open(scope)
        try:
            await self.serve(scope, receive, send)
        except ChannelLayerReceiveError as exc:
            cause = exc.__cause__ or exc
            report_exception(
                cause,
                "channel layer receive failed; closing the socket with 4503",
                throttle="layer_receive",
                connection_id=self.tracker.id,
                thread_id=self._thread_id,
            )
            down = unavailable("The channel layer connection was lost; reconnect and resume.")
            await self._end(End.LAYER_LOST, down, f"{type(cause).__name__}: {cause}")
        except Exception as exc:  # noqa: BLE001 - reported, then the socket is closed with 4500
            await self._fault(exc, during="dispatch", why=End.ESCAPED)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Runs a handler; an unexpected exception ends in an `error` frame and close 4500.

        Unlike Channels' own dispatch (4.2+), it does not run close_old_connections on the
        database thread before each handler: that is a hop through the process's one
        database thread for every message of every socket, each delivered event included,
        queued with the log writer's batches. This consumer reaches the database only
        through database_sync_to_async, which closes old connections around each call.
        """
        try:
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"no handler for message type {message.get('type')!r}")
            await handler(message)
        except StopConsumer:
            raise
        except PEER_GONE as exc:
            # The client vanished between its last frame and our answer; the server's
            # websocket.disconnect follows and closes the connection out in the state log.
            logger.info(
                "client went away while %s was handled: %s",
                message.get("type"),
                exc,
                extra={"connection_id": self.tracker.id},
            )
        except DatabaseError as exc:
            await self._database_down(exc, during=str(message.get("type")))
        except Exception as exc:  # noqa: BLE001 - reported, then the socket is closed with 4500
            await self._fault(exc, during=str(message.get("type")))

    # --- connect and close ----------------------------------------------------------------

    async def connect(self) -> None:
        """Authenticates within WS_AUTH_TIMEOUT, joins the thread's group and greets the client."""
        self.tracker.transition(S.AUTHENTICATING, "handshake received")
        try:
            delivery = await self._authenticate_and_join()
        except NetraError as err:
            await self._end(End.REFUSED, err)
            return
        await self._send(
            {
                "type": "connection_established",
                "connection_id": str(self.tracker.id),
                "thread_id": str(delivery.thread_id),
                "last_seq": delivery.last_seq,
                "protocol": PROTOCOL_VERSION,
            }
        )
        assert self.admitted is not None
        self.admitted.service.ensure_background()
        delivery.start()
        try:
            after_seq = after_seq_of(self.scope)
        except NetraError as err:
            await self._send(err.frame())
            return
        if after_seq is not None:
            await delivery.replay(after_seq)

    async def _authenticate_and_join(self) -> Delivery:
        """Authenticates, joins the groups, accepts and records the connection; returns the
        delivery. Raises the NetraError to refuse with."""
        self.admitted = admitted = await admit(self.scope, self.tracker)
        self.delivery = Delivery(
            layer=self.channel_layer,
            channel_name=self.channel_name,
            events=self.events,
            thread_id=admitted.thread_id,
            token_id=admitted.principal.token_id,
            sink=TextSink(self._send_text),
            connection_id=self.tracker.id,
            extra_groups=(*session_groups(admitted.principal), worker_group()),
        )
        await self.delivery.join()
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
        return self.delivery

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leaves the groups and closes out the connection in the state log."""
        await self._end(End.CLIENT_GONE, None, str(message.get("code")), message.get("code"))
        raise StopConsumer

    async def _end(
        self,
        why: End,
        err: NetraError | None,
        detail: str | None = None,
        close_code: int | None = None,
    ) -> None:
        """The one way a socket ends: sends `err` and closes with its code, then records
        the ending as chat.closing.ENDINGS says for `why` and writes the state log."""
        ending = ENDINGS[why]
        if ending.closed is not None and self.delivery is not None:
            self.delivery.stop()
        if err is not None:
            await self._tell_and_close(err)
            close_code = err.close_code
        moved = record_ending(self.tracker, why, close_code=close_code, err=err, detail=detail)
        if ending.leave and self.delivery is not None:
            await self.delivery.leave()
        if moved:
            await flush_quietly(self.tracker)

    async def _fault(self, exc: Exception, *, during: str, why: End = End.FAULT) -> None:
        """Reports an unexpected exception, then ends the socket with 4500."""
        report_exception(
            exc,
            f"unexpected error in the chat consumer during {during}",
            connection_id=self.tracker.id,
            thread_id=self._thread_id,
            user_id=self.admitted.principal.user.pk if self.admitted else None,
        )
        await self._end(why, internal_error(), f"{during}: {type(exc).__name__}")

    async def _database_down(self, exc: DatabaseError, *, during: str) -> None:
        """The log is unreachable (a gap cannot be filled): a dependency is down, not a bug.
        Closes with 4503; the client reconnects with backoff and resumes by seq."""
        logger.warning(
            "database unavailable during %s: %s",
            during,
            exc,
            extra={"connection_id": self.tracker.id, "thread_id": self.thread_id},
        )
        down = unavailable("The database is unavailable; reconnect and resume shortly.")
        if self.tracker.state == S.CONNECTED:
            await self._end(End.CLOSED, down)
        elif self.tracker.state == S.AUTHENTICATING:
            await self._end(End.REFUSED, down)
        else:
            await self._fault(exc, during=during)

    async def _tell_and_close(self, err: NetraError) -> None:
        """Sends the `error` frame and closes with its code, accepting first if need be; a
        client already gone is only logged (its disconnect closes the connection out)."""
        try:
            if not self.accepted:
                await self.accept()
                self.accepted = True
            await self._send(err.frame())
            await self.close(code=err.close_code)
        except (OSError, RuntimeError) as send_exc:  # PEER_GONE; a closed protocol: RuntimeError
            logger.info(
                "could not tell the client %s: %s",
                err.code,
                send_exc,
                extra={"connection_id": self.tracker.id},
            )

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
            elif isinstance(frame, ApprovalFrame):
                await self._approval(frame)
            elif isinstance(frame, ResumeFrame):
                assert self.delivery is not None
                await self.delivery.replay(frame.after_seq)
        except NetraError as err:
            if err.close_code is not None:
                await self._end(End.CLOSED, err)
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
            await self._send(down.without_close().with_ref(ref_of(frame)).frame())

    async def _invalid_frame(self, err: NetraError) -> None:
        count, window = self.invalid_frames.count(), settings.WS_INVALID_FRAME_WINDOW
        if count >= settings.WS_MAX_INVALID_FRAMES:
            message = f"Too many invalid frames ({count} within {window:g} s); last: {err.message}"
            await self._end(End.CLOSED, protocol_error(message))
            return
        await self._send(err.frame())

    async def _user_message(self, frame: UserMessageFrame) -> None:
        assert self.admitted is not None and self.delivery is not None
        try:
            result = await self.admitted.service.submit(
                thread_id=self.admitted.thread_id,
                user=self.admitted.principal.user,
                text=frame.text,
                client_msg_id=frame.client_msg_id,
            )
        except NetraError as err:
            raise err.with_ref(frame.client_msg_id) from err
        await self._send(
            {
                "type": "ack",
                "client_msg_id": frame.client_msg_id,
                "message_id": str(result.message_id),
                "run_id": str(result.run_id),
                "duplicate": result.duplicate,
            }
        )
        self.delivery.expect_events()

    async def _cancel(self, frame: CancelFrame) -> None:
        assert self.admitted is not None
        try:
            await self.admitted.service.cancel(
                run_id=frame.run_id, user=self.admitted.principal.user
            )
        except NetraError as err:
            if err.code == ErrorCode.RUN_NOT_FOUND:
                # The socket protocol has one answer for any run that cannot be cancelled.
                raise run_not_active().with_ref(str(frame.run_id)) from err
            raise err.with_ref(str(frame.run_id)) from err

    async def _approval(self, frame: ApprovalFrame) -> None:
        """Answers an approval; the run's approval_resolved is the reply."""
        assert self.admitted is not None
        try:
            await self.admitted.service.resolve_approval(
                approval_id=frame.approval_id,
                user=self.admitted.principal.user,
                decision=frame.decision,
                comment=frame.comment,
            )
        except NetraError as err:
            raise err.with_ref(str(frame.approval_id)) from err

    # --- run events -----------------------------------------------------------------------

    async def thread_event(self, message: dict[str, Any]) -> None:
        """Forwards one run event in seq order, filling a gap from the log first."""
        assert self.delivery is not None
        await self.delivery.forward(message)

    async def tail_check(self, message: dict[str, Any]) -> None:
        """Forwards what the log holds beyond the last event this socket sent."""
        assert self.delivery is not None
        await self.delivery.check_tail()

    async def server_draining(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4503: this worker is shutting down (agents/drain.py)."""
        await self._end(End.CLOSED, unavailable("The server is restarting; reconnect and resume."))

    async def token_revoked(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4401: the token that opened it was revoked."""
        await self._end(End.CLOSED, unauthenticated("The API token of this socket was revoked."))

    async def thread_deleted(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4404: its thread was deleted."""
        await self._end(End.CLOSED, thread_not_found())

    async def session_ended(self, message: dict[str, Any]) -> None:
        """Closes the socket with 4401: the session that opened it logged out."""
        await self._end(End.CLOSED, unauthenticated("You logged out; log in again."))

    async def session_check(self, message: dict[str, Any]) -> None:
        """Checks the socket's session again (its user's password or active flag changed);
        closes with 4401 if it no longer authenticates, 4403 if the user was deactivated."""
        assert self.admitted is not None and self.admitted.principal.session_key is not None
        try:
            await database_sync_to_async(principal_from_session_key)(
                self.admitted.principal.session_key
            )
        except NetraError as err:
            await self._end(End.CLOSED, err)

    @property
    def _thread_id(self) -> uuid.UUID | None:
        return self.admitted.thread_id if self.admitted else None

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=encode(frame))

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)
