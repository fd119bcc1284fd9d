"""How a socket ends: one table of the causes, each with the state transitions it writes
and the metric it counts, applied to the connection's tracker in one place."""

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError

from chat import metrics
from chat.connections import ConnectionTracker, remember_unflushed
from chat.errors import ErrorCode, NetraError
from chat.models import ConnectionState as S

logger = logging.getLogger("netra.consumer")

AUTH_FAILURE_CODES = frozenset(
    {ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.AUTH_TIMEOUT}
)


class End(Enum):
    """Why a socket ends."""

    REFUSED = "refused"  # the handshake is refused with an error frame
    CLOSED = "closed"  # the server closes an open socket (a limit, a revoked token, an outage)
    FAULT = "fault"  # a bug while handling a message
    ESCAPED = "escaped"  # a bug escaped dispatch: the consumer stops
    LAYER_LOST = "layer_lost"  # the channel layer's receive failed: the consumer stops
    CLIENT_GONE = "client_gone"  # websocket.disconnect


@dataclass(frozen=True)
class Ending:
    """What one cause does: from each state, the state it moves to and the reason written
    (`{detail}` filled in); `closed`, the reason of a CLOSED written at once, for causes
    after which no websocket.disconnect is handled; whether the socket leaves its groups
    (and stops its delivery); the metric it counts."""

    moves: Mapping[str, tuple[str, str]]
    closed: str | None = None
    leave: bool = False
    count: Callable[[NetraError | None], None] | None = None


def _count_refusal(err: NetraError | None) -> None:
    if err is not None and err.code in AUTH_FAILURE_CODES:
        metrics.WS_AUTH_FAILURES.labels(code=err.code).inc()
    metrics.WS_CONNECTIONS_TOTAL.labels(outcome="rejected").inc()


def _count_layer_lost(err: NetraError | None) -> None:
    metrics.CHANNEL_LAYER_ERRORS.labels(operation="receive").inc()


_NOT_ENDED = (S.CONNECTING, S.AUTHENTICATING, S.CONNECTED, S.CLOSING, S.REJECTED)
_HANDSHAKE_GONE = (S.FAILED, "client went away during handshake ({detail})")

ENDINGS: dict[End, Ending] = {
    End.REFUSED: Ending(
        {S.AUTHENTICATING: (S.REJECTED, "{detail}"), S.CONNECTED: (S.CLOSING, "{detail}")},
        leave=True,
        count=_count_refusal,
    ),
    End.CLOSED: Ending({S.CONNECTED: (S.CLOSING, "{detail}")}),
    End.FAULT: Ending(dict.fromkeys(_NOT_ENDED, (S.FAILED, "internal error during {detail}"))),
    End.ESCAPED: Ending(
        dict.fromkeys(_NOT_ENDED, (S.FAILED, "internal error past {detail}")),
        closed="closed with 4500 after an internal error",
        leave=True,
    ),
    End.LAYER_LOST: Ending(
        dict.fromkeys(_NOT_ENDED, (S.FAILED, "channel layer lost: {detail}")),
        closed="closed with 4503 after the channel layer was lost",
        count=_count_layer_lost,
    ),
    End.CLIENT_GONE: Ending(
        {
            S.CONNECTED: (S.CLOSING, "client closed ({detail})"),
            S.CONNECTING: _HANDSHAKE_GONE,
            S.AUTHENTICATING: _HANDSHAKE_GONE,
        },
        closed="socket closed ({detail})",
        leave=True,
    ),
}


def record_ending(
    tracker: ConnectionTracker,
    why: End,
    *,
    close_code: int | None,
    err: NetraError | None = None,
    detail: str | None = None,
) -> bool:
    """Counts the ending and moves the tracker as ENDINGS says for `why`; returns whether
    a transition waits to be written. The close code is recorded with the first move (a
    later cause keeps the code the client saw). `detail` fills the reason; by default the
    error's code and message."""
    ending = ENDINGS[why]
    if ending.count is not None:
        ending.count(err)
    if detail is None:
        detail = f"{err.code}: {err.message}" if err is not None else ""
    move = ending.moves.get(tracker.state)
    if tracker.state != S.CLOSED and (move is not None or tracker.close_code is None):
        tracker.close_code = close_code
    moved = False
    if move is not None:
        tracker.transition(move[0], move[1].format(detail=detail))
        moved = True
    if ending.closed is not None and tracker.state != S.CLOSED:
        tracker.transition(S.CLOSED, ending.closed.format(detail=detail))
        moved = True
    return moved


async def flush_quietly(tracker: ConnectionTracker) -> None:
    """Writes the tracker's pending transitions; if the database fails or hangs, leaves
    them to housekeeping (the client's answer never waits for the state log)."""
    timeout = max(settings.WS_AUTH_TIMEOUT, 5.0)
    try:
        await asyncio.wait_for(database_sync_to_async(tracker.flush)(), timeout=timeout)
    except (DatabaseError, TimeoutError) as exc:
        why = f"no answer in {timeout:g} s" if isinstance(exc, TimeoutError) else exc
        logger.warning(
            "could not write the connection state log, housekeeping will retry: %s",
            why,
            extra={"connection_id": tracker.id, "to_state": tracker.state},
        )
        remember_unflushed(tracker)
