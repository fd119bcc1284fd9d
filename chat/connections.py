"""The connection state machine (docs/architecture.md) and its state log.

Transitions are validated and counted in memory at once; their rows are written to the
database by `flush()`, so a hung database delays the log but never the client's answer.
"""

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from chat import metrics, selectors
from chat.models import ApiToken, Connection, ConnectionStateLog, ServerProcess, Thread
from chat.models import ConnectionState as S

logger = logging.getLogger("netra.connections")

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

TRANSITIONS: dict[str, frozenset[str]] = {
    S.CONNECTING: frozenset({S.AUTHENTICATING, S.FAILED}),
    S.AUTHENTICATING: frozenset({S.CONNECTED, S.REJECTED, S.FAILED}),
    S.CONNECTED: frozenset({S.CLOSING, S.FAILED}),
    S.CLOSING: frozenset({S.CLOSED, S.FAILED}),
    S.REJECTED: frozenset({S.CLOSED, S.FAILED}),
    S.FAILED: frozenset({S.CLOSED}),
    S.CLOSED: frozenset(),
}


class InvalidTransitionError(RuntimeError):
    """A state change that the machine does not allow: a bug in the caller."""


@dataclass
class _Pending:
    from_state: str
    to_state: str
    reason: str
    at: datetime


@dataclass
class ConnectionTracker:
    """Holds one connection's state, validates its transitions and writes its log."""

    client_addr: str = ""
    user_agent: str = ""
    requested_thread: str = ""
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    state: str = S.CONNECTING
    user_id: int | None = None
    thread_id: uuid.UUID | None = None
    token_id: uuid.UUID | None = None
    close_code: int | None = None
    opened_at: datetime = field(default_factory=timezone.now)
    _saved: bool = False
    _pending: list[_Pending] = field(default_factory=list)

    def __post_init__(self) -> None:
        metrics.WS_CONNECTIONS_CURRENT.labels(state=self.state).inc()

    def transition(self, to_state: str, reason: str) -> None:
        """Moves to `to_state`; raises InvalidTransitionError if the table forbids it."""
        from_state = self.state
        if to_state not in TRANSITIONS[from_state]:
            raise InvalidTransitionError(
                f"connection {self.id}: {from_state} -> {to_state} is not allowed ({reason})"
            )
        self.state = to_state
        self._pending.append(_Pending(from_state, to_state, reason[:300], timezone.now()))
        metrics.WS_STATE_TRANSITIONS.labels(from_state=from_state, to_state=to_state).inc()
        metrics.WS_CONNECTIONS_CURRENT.labels(state=from_state).dec()
        if to_state != S.CLOSED:
            metrics.WS_CONNECTIONS_CURRENT.labels(state=to_state).inc()
        logger.info(
            "connection %s %s -> %s: %s",
            self.id,
            from_state,
            to_state,
            reason,
            extra={
                "connection_id": self.id,
                "user_id": self.user_id,
                "thread_id": self.thread_id or self.requested_thread or None,
                "from_state": from_state,
                "to_state": to_state,
                "reason": reason,
            },
        )

    @property
    def has_pending(self) -> bool:
        """True while transitions wait to be written."""
        return bool(self._pending)

    def flush(self) -> None:
        """Writes the connection row and every pending transition (sync; database).

        A reference that vanished meanwhile (its thread, user or token was deleted, or the
        connection row itself) is dropped, logged, and the rows are written without it.
        """
        pending, self._pending = self._pending, []
        if not pending and self._saved:
            return
        try:
            try:
                self._write(pending)
            except IntegrityError:
                vanished = self._drop_vanished_references()
                if not vanished:
                    raise
                logger.warning(
                    "connection %s: its %s no longer exists; writing its state log without it",
                    self.id,
                    " and ".join(vanished),
                    extra={"connection_id": self.id, "to_state": self.state},
                )
                self._write(pending)
        except BaseException:
            self._pending = pending + self._pending
            raise
        self._saved = True

    def register(self, *, max_open: int) -> bool:
        """Writes this connection's row as one of its user's open sockets if the user has
        fewer than `max_open`; returns False, writing nothing, if not (sync; database).

        The count and the insert are one transaction holding a lock on the user's row
        (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the IMMEDIATE transaction of the
        settings takes the write lock first), so handshakes racing on any worker are
        admitted one at a time. The row counts from here on (OPEN_STATES): the later
        `flush` updates it, and a refusal moves it to a state that no longer counts.
        """
        assert self.user_id is not None, "register after authentication"
        with transaction.atomic():
            locked = get_user_model().objects.select_for_update().filter(pk=self.user_id)
            list(locked.values_list("pk", flat=True))
            if selectors.open_sockets(user_id=self.user_id) >= max_open:
                return False
            self._create_row(self._row_fields(self._pending))
        self._saved = True
        return True

    def _row_fields(self, pending: list[_Pending]) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "user_id": self.user_id,
            "thread_id": self.thread_id,
            "token_id": self.token_id,
            "state": self.state,
            "state_changed_at": pending[-1].at if pending else self.opened_at,
            "close_code": self.close_code,
        }
        if self.state == S.CLOSED:
            fields["closed_at"] = pending[-1].at if pending else timezone.now()
        return fields

    def _create_row(self, fields: dict[str, Any]) -> None:
        Connection.objects.create(
            id=self.id,
            requested_thread=self.requested_thread[:64],
            client_addr=self.client_addr[:64],
            user_agent=self.user_agent[:300],
            worker_id=WORKER_ID,
            opened_at=self.opened_at,
            **fields,
        )

    def _write(self, pending: list[_Pending]) -> None:
        fields = self._row_fields(pending)
        with transaction.atomic():
            if self._saved:
                Connection.objects.filter(pk=self.id).update(**fields)
            else:
                self._create_row(fields)
            ConnectionStateLog.objects.bulk_create(
                ConnectionStateLog(
                    connection_id=self.id,
                    from_state=p.from_state,
                    to_state=p.to_state,
                    reason=p.reason,
                    created_at=p.at,
                )
                for p in pending
            )

    def _drop_vanished_references(self) -> list[str]:
        """Forgets the rows this connection refers to that were deleted; returns their names."""
        vanished = []
        if self.thread_id is not None and not Thread.objects.filter(pk=self.thread_id).exists():
            self.thread_id = None
            vanished.append("thread")
        user_model = get_user_model()
        if self.user_id is not None and not user_model.objects.filter(pk=self.user_id).exists():
            self.user_id = None
            vanished.append("user")
        if self.token_id is not None and not ApiToken.objects.filter(pk=self.token_id).exists():
            self.token_id = None
            vanished.append("token")
        if self._saved and not Connection.objects.filter(pk=self.id).exists():
            self._saved = False  # written again from what the tracker still holds
            vanished.append("connection row")
        return vanished


# Trackers whose state log could not be written (the database was down): housekeeping
# writes them later, so that no socket stays CONNECTED in the log after it closed.
_unflushed: dict[uuid.UUID, ConnectionTracker] = {}


def remember_unflushed(tracker: ConnectionTracker) -> None:
    """Keeps a tracker whose rows are still to be written."""
    _unflushed[tracker.id] = tracker


def flush_unflushed() -> int:
    """Writes the rows of every remembered tracker it can; returns how many it wrote (sync).

    A tracker that fails is kept for the next sweep and does not hold back the others;
    one whose rows the database rejects for good (an integrity error that dropping the
    vanished references did not cure) is dropped with an error, since no retry can help.
    """
    written = 0
    for connection_id, tracker in list(_unflushed.items()):
        try:
            tracker.flush()
        except IntegrityError as exc:
            logger.error(  # noqa: TRY400 - the reason is the constraint, not a traceback
                "dropping the unwritable state log of connection %s: %s",
                connection_id,
                exc,
                extra={"connection_id": connection_id, "to_state": tracker.state},
            )
            del _unflushed[connection_id]
            continue
        except DatabaseError as exc:
            logger.warning(
                "state log still unwritable: %s", exc, extra={"connection_id": connection_id}
            )
            continue
        del _unflushed[connection_id]
        written += 1
    return written


def unflushed_count() -> int:
    """How many trackers still wait for their rows to be written."""
    return len(_unflushed)


def process_heartbeat() -> None:
    """Records that this server process is alive (sync; database)."""
    now = timezone.now()
    ServerProcess.objects.update_or_create(
        worker_id=WORKER_ID,
        defaults={"hostname": socket.gethostname(), "pid": os.getpid(), "heartbeat_at": now},
        create_defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "heartbeat_at": now,
            "started_at": now,
        },
    )


def _close_out(connection: Connection, reason: str, now: datetime) -> None:
    rows = []
    state = connection.state
    for target in (S.FAILED, S.CLOSED):
        if target not in TRANSITIONS[state]:
            continue
        rows.append(
            ConnectionStateLog(
                connection=connection,
                from_state=state,
                to_state=target,
                reason=reason[:300],
                created_at=now,
            )
        )
        metrics.WS_STATE_TRANSITIONS.labels(from_state=state, to_state=target).inc()
        logger.warning(
            "connection %s %s -> %s: %s",
            connection.id,
            state,
            target,
            reason,
            extra={
                "connection_id": connection.id,
                "user_id": connection.user_id,
                "thread_id": connection.thread_id,
                "from_state": state,
                "to_state": target,
                "reason": reason,
            },
        )
        state = target
    with transaction.atomic():
        updated = Connection.objects.filter(pk=connection.pk, state=connection.state).update(
            state=S.CLOSED, state_changed_at=now, closed_at=now
        )
        if updated:
            ConnectionStateLog.objects.bulk_create(rows)


def reap_connections(*, process_stale_after: float, stuck_after: float) -> int:
    """Closes out connections whose server process stopped heartbeating, and connections
    stuck in an intermediate state; returns how many (sync; database)."""
    now = timezone.now()
    live = ServerProcess.objects.filter(
        heartbeat_at__gte=now - timedelta(seconds=process_stale_after)
    ).values_list("worker_id", flat=True)
    known = ServerProcess.objects.values_list("worker_id", flat=True)
    closed = 0
    orphans = (
        Connection.objects.exclude(state=S.CLOSED)
        .filter(worker_id__in=known)
        .exclude(worker_id__in=live)
    )
    for connection in orphans:
        _close_out(connection, f"server process {connection.worker_id} stopped heartbeating", now)
        closed += 1
    stuck = Connection.objects.filter(
        state__in=[S.CONNECTING, S.AUTHENTICATING, S.CLOSING, S.REJECTED, S.FAILED],
        state_changed_at__lt=now - timedelta(seconds=stuck_after),
    )
    for connection in stuck:
        _close_out(connection, f"stuck in {connection.state} for over {stuck_after:g} s", now)
        closed += 1
    return closed
