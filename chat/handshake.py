"""The handshake of a chat socket: who connects, to which thread, resuming after which seq."""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from chat import metrics, selectors
from chat.auth import Principal, principal_from_scope
from chat.broadcaster import session_group, user_sessions_group
from chat.connections import ConnectionTracker
from chat.errors import (
    CLOSE_RATE_LIMITED,
    auth_timeout,
    rate_limited,
    thread_not_found,
    unavailable,
)
from chat.ports import AgentServicePort, agent_service
from chat.protocol import MAX_SEQ, bad_request

logger = logging.getLogger("netra.consumer")

SOCKET_RETRY_AFTER = 10.0


def _lookup(
    scope: dict[str, Any], thread_id: uuid.UUID | None, tracker: ConnectionTracker
) -> Principal:
    """Authenticates the handshake, checks the thread belongs to the user and registers
    the socket within the user's socket limit, in one atomic step (sync)."""
    principal = principal_from_scope(scope)
    if thread_id is None or not selectors.thread_exists_for(
        thread_id=thread_id, user=principal.user
    ):
        raise thread_not_found()
    tracker.user_id = principal.user.pk
    tracker.token_id = principal.token_id
    tracker.thread_id = thread_id
    if not tracker.register(max_open=settings.WS_MAX_SOCKETS_PER_USER):
        metrics.RATE_LIMITED.labels(kind="sockets").inc()
        raise rate_limited(
            f"At most {settings.WS_MAX_SOCKETS_PER_USER} sockets per user; close one first.",
            retry_after=SOCKET_RETRY_AFTER,
            close_code=CLOSE_RATE_LIMITED,
        )
    return principal


async def authenticate(
    scope: dict[str, Any], *, thread_id: uuid.UUID | None, tracker: ConnectionTracker
) -> Principal:
    """Returns the principal of the handshake, whose thread `thread_id` is, with the socket
    registered in `tracker`, within WS_AUTH_TIMEOUT; raises the NetraError to refuse the
    socket with."""
    try:
        principal: Principal = await asyncio.wait_for(
            database_sync_to_async(_lookup)(scope, thread_id, tracker),
            timeout=settings.WS_AUTH_TIMEOUT,
        )
    except TimeoutError as exc:
        raise auth_timeout() from exc
    except DatabaseError as exc:
        logger.warning(
            "database unavailable during socket authentication: %s",
            exc,
            extra={"connection_id": tracker.id},
        )
        raise unavailable("The database is unavailable; retry shortly.") from exc
    return principal


@dataclass(frozen=True)
class Admission:
    """Who a socket belongs to, its thread, and the agent service its frames go to."""

    principal: Principal
    thread_id: uuid.UUID
    service: AgentServicePort


async def admit(scope: dict[str, Any], tracker: ConnectionTracker) -> Admission:
    """Authenticates the handshake of `tracker`'s socket, notes in the tracker who it is
    and registers it (its row counts against the socket limit from then on); raises the
    NetraError to refuse the socket with."""
    thread_id = parse_uuid(tracker.requested_thread)
    principal = await authenticate(scope, thread_id=thread_id, tracker=tracker)
    assert thread_id is not None  # _lookup refused a thread id that is not a UUID
    service = agent_service()
    if service is None:
        raise unavailable("The agent service is not running; retry shortly.")
    return Admission(principal=principal, thread_id=thread_id, service=service)


def session_groups(principal: Principal) -> tuple[str, ...]:
    """The groups a cookie socket joins so that it closes with its session: the session's
    own (logout) and its user's (a password change); none for a token socket."""
    if principal.session_key is None:
        return ()
    return (session_group(principal.session_key), user_sessions_group(principal.user.pk))


def after_seq_of(scope: dict[str, Any]) -> int | None:
    """The `?after_seq=N` of the handshake; raises bad_request if it is not an integer
    from 0 to MAX_SEQ."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
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


def parse_uuid(raw: str) -> uuid.UUID | None:
    """The UUID in `raw`, or None."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
