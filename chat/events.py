"""The event log: the source of truth of every run event (DESIGN section 3).

`event_append` takes the thread's next seq and inserts the event together; on PostgreSQL
that is one statement (a row lock on the thread orders concurrent emitters across
processes), on SQLite two statements in one transaction (SQLite serialises writers).
"""

import uuid
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from chat.models import Event, Thread

_THREAD = Thread._meta.db_table
_EVENT = Event._meta.db_table

_PG_APPEND = (
    f"WITH s AS (UPDATE {_THREAD} SET last_seq = last_seq + 1, last_activity = %s "  # noqa: S608
    f"WHERE id = %s RETURNING last_seq) "
    f"INSERT INTO {_EVENT} (thread_id, seq, run_id, type, data, created_at) "
    f"SELECT %s, s.last_seq, %s, %s, %s, %s FROM s RETURNING seq"
)
_NEXT_SEQ = f"UPDATE {_THREAD} SET last_seq = last_seq + 1, last_activity = %s WHERE id = %s RETURNING last_seq"  # noqa: S608, E501
_INSERT = (
    f"INSERT INTO {_EVENT} (thread_id, seq, run_id, type, data, created_at) "  # noqa: S608
    f"VALUES (%s, %s, %s, %s, %s, %s)"
)


class ThreadGoneError(LookupError):
    """The thread of an event does not exist (deleted while a run was going)."""


def isoformat(moment: datetime) -> str:
    """Returns an ISO-8601 UTC timestamp ending in Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_wire(
    *, type: str, seq: int, thread_id: Any, run_id: Any, created_at: datetime, data: dict[str, Any]
) -> dict[str, Any]:
    """Returns the protocol envelope of one run event."""
    return {
        "type": type,
        "seq": seq,
        "thread_id": str(thread_id),
        "run_id": str(run_id),
        "ts": isoformat(created_at),
        "data": data,
    }


def event_append(
    *,
    thread_id: uuid.UUID,
    run_id: uuid.UUID,
    type: str,
    data: dict[str, Any],
    in_transaction: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Appends one event to the thread's log and returns its envelope (sync; database).

    `in_transaction`, if given, runs in the same transaction after the insert (a run's
    status change that must commit together with its event); if it raises, neither commits.
    """
    now = timezone.now()
    pk = Thread._meta.pk
    assert pk is not None
    thread_param = pk.get_db_prep_value(thread_id, connection)
    run_param = Event._meta.get_field("run_id").get_db_prep_value(run_id, connection)
    data_param = Event._meta.get_field("data").get_db_prep_value(data, connection)
    when = connection.ops.adapt_datetimefield_value(now)
    single = connection.vendor == "postgresql"
    with nullcontext() if single and in_transaction is None else transaction.atomic():
        with connection.cursor() as cursor:
            if single:
                cursor.execute(
                    _PG_APPEND,
                    [when, thread_param, thread_param, run_param, type, data_param, when],
                )
                row = cursor.fetchone()
            else:
                cursor.execute(_NEXT_SEQ, [when, thread_param])
                row = cursor.fetchone()
                if row is not None:
                    cursor.execute(
                        _INSERT, [thread_param, row[0], run_param, type, data_param, when]
                    )
        if row is None:
            raise ThreadGoneError(f"thread {thread_id} does not exist")
        if in_transaction is not None:
            in_transaction()
    return to_wire(
        type=type, seq=int(row[0]), thread_id=thread_id, run_id=run_id, created_at=now, data=data
    )


def events_after(
    *, thread_id: uuid.UUID, after_seq: int, limit: int | None = None, up_to: int | None = None
) -> list[dict[str, Any]]:
    """Returns the logged events with seq > after_seq (and <= up_to), in order (sync)."""
    query = Event.objects.filter(thread_id=thread_id, seq__gt=after_seq)
    if up_to is not None:
        query = query.filter(seq__lte=up_to)
    rows = query.order_by("seq").values_list("type", "seq", "run_id", "created_at", "data")
    if limit is not None:
        rows = rows[:limit]
    return [
        to_wire(type=t, seq=s, thread_id=thread_id, run_id=r, created_at=c, data=d)
        for t, s, r, c, d in rows
    ]


def first_seq(*, thread_id: uuid.UUID) -> int | None:
    """Returns the lowest seq still in the thread's log (events may have been pruned)."""
    return (
        Event.objects.filter(thread_id=thread_id)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
