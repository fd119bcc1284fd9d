"""The event log: the source of truth of every run event (docs/architecture.md).

`event_append` takes the thread's next seq and inserts the event together; on PostgreSQL
that is one statement (a row lock on the thread orders concurrent emitters across
processes), on SQLite two statements in one transaction (SQLite serialises writers).

Fencing (docs/operations.md, "Drain and continuation"): an event that carries its run's
`attempt` is written only if the run is still active at that attempt, checked in the same
statement that takes the seq. On PostgreSQL the run's row is share-locked by that
statement, so an adoption (which increments the attempt) waits for the write to commit, or
the write sees the new attempt and is refused; on SQLite the check runs inside the write
lock. A refused event fails alone with RunFencedError; the rest of its batch commits.

On PostgreSQL the statements of a batch's plain events go out in one round trip
(`_pipelined_rows`); they still run one by one, in order, in the batch's transaction. On
SQLite a thread's plain events in a batch take their seqs as one block (`_sqlite_rows`):
one UPDATE for k seqs, then one executemany of the k rows. The statements are in
chat/eventsql.py.
"""

import json
import uuid
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone

from chat.dbthread import keep_usable
from chat.eventsql import INSERT, PG_APPEND, SEQ_BLOCK, THREAD_EXISTS, fenced_statements
from chat.hotcursor import hot_cursor, hot_db
from chat.models import Event, Thread


class ThreadGoneError(LookupError):
    """The thread of an event does not exist (deleted while a run was going)."""


class RunFencedError(RuntimeError):
    """The run was adopted by another attempt (or has ended): this writer may not write."""


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


@dataclass(frozen=True)
class PendingEvent:
    """An event waiting for its seq and its row in the log."""

    thread_id: uuid.UUID
    run_id: uuid.UUID
    type: str
    data: dict[str, Any]
    in_transaction: Callable[[], None] | None = None
    # The writer's attempt of the run: checked in the write's transaction (None: unchecked,
    # for writers that are no run's emitter, such as tests seeding a log).
    attempt: int | None = None


def event_append(
    *,
    thread_id: uuid.UUID,
    run_id: uuid.UUID,
    type: str,
    data: dict[str, Any],
    in_transaction: Callable[[], None] | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """Appends one event to the thread's log and returns its envelope (sync; database).

    `in_transaction`, if given, runs in the same transaction after the insert (a run's
    status change that must commit together with its event); if it raises, neither commits.
    With `attempt`, raises RunFencedError (and writes nothing) unless the run is active at
    that attempt.
    """
    keep_usable()
    result = _append_in_one_transaction(
        [PendingEvent(thread_id, run_id, type, data, in_transaction, attempt)]
    )[0]
    if isinstance(result, Exception):
        raise result
    return result


def event_append_many(events: Sequence[PendingEvent]) -> list[dict[str, Any] | Exception]:
    """Appends events in order, returning each one's envelope or the exception that kept it
    out of the log (sync; database).

    They commit together: one transaction, so one commit for the whole batch. An event with
    `in_transaction` (a run's status change) is written with it in a savepoint, so that the
    two commit together or neither does, without failing the rest of the batch. If the
    transaction fails, the events are retried one by one, so a failure stays with the event
    that caused it.

    Like `event_append`, it keeps the thread's connection between calls (no reconnect per
    event; the next `close_old_connections` in this thread applies CONN_MAX_AGE) and
    replaces one that failed and is no longer usable.
    """
    keep_usable()
    return _append_group(list(events))


def _append_group(group: list[PendingEvent]) -> list[dict[str, Any] | Exception]:
    if not group:
        return []
    try:
        return _append_in_one_transaction(group)
    except (DatabaseError, TypeError, ValueError) as exc:  # TypeError: data that is not JSON
        if len(group) == 1:
            return [exc]
    return [result for event in group for result in _append_group([event])]


def _append_in_one_transaction(group: list[PendingEvent]) -> list[dict[str, Any] | Exception]:
    pk = Thread._meta.pk
    assert pk is not None
    run_field = Event._meta.get_field("run_id")
    data_field = Event._meta.get_field("data")
    db = hot_db()
    single = db.vendor == "postgresql"
    prepared: list[tuple[PendingEvent, datetime, list[Any]] | Exception] = []
    for event in group:
        now = timezone.now()
        try:
            params = [
                db.ops.adapt_datetimefield_value(now),
                pk.get_db_prep_value(event.thread_id, db),
                run_field.get_db_prep_value(event.run_id, db),
                data_field.get_db_prep_value(event.data, db),
            ]
        except (TypeError, ValueError) as exc:  # data that does not encode as JSON
            prepared.append(exc)
            continue
        prepared.append((event, now, params))
    results: list[dict[str, Any] | Exception] = []
    alone = len(group) == 1 and group[0].in_transaction is None
    with (
        nullcontext() if single and alone else transaction.atomic(),
        hot_cursor(db) as cursor,
    ):
        rows = (_pipelined_rows if single else _sqlite_rows)(cursor, prepared)
        for index, item in enumerate(prepared):
            if isinstance(item, Exception):
                results.append(item)
                continue
            event, now, params = item
            row = rows[index] if index in rows else _insert_one(cursor, event, single, params)
            if isinstance(row, Exception):
                results.append(row)
                continue
            if row is None:
                results.append(_refusal(cursor, event, params[1]))
                continue
            results.append(
                to_wire(
                    type=event.type,
                    seq=int(row[0]),
                    thread_id=event.thread_id,
                    run_id=event.run_id,
                    created_at=now,
                    data=event.data,
                )
            )
    return results


Prepared = tuple[PendingEvent, datetime, list[Any]] | Exception


def _pipelined_rows(cursor: Any, prepared: list[Prepared]) -> dict[int, Any]:
    """On PostgreSQL, writes the batch's events up to its first one with `in_transaction`
    in one round trip: their statements go out together (psycopg's pipeline, through
    executemany) and run one after another, in order, in the batch's transaction. Returns
    each one's row by its index in `prepared` (None: refused, see `_refusal`). Events from
    the first `in_transaction` on are left to `_insert_one` (their callbacks run between
    statements), as is a batch of one."""
    plain: list[tuple[int, PendingEvent, list[Any]]] = []
    for index, item in enumerate(prepared):
        if isinstance(item, Exception):
            continue
        event, _, params = item
        if event.in_transaction is not None:
            break
        plain.append((index, event, params))
    if len(plain) < 2:
        return {}
    by_statement: dict[str, list[tuple[int, list[Any]]]] = {}
    for index, event, params in plain:
        statement, args = _pg_append(event, params)
        by_statement.setdefault(statement, []).append((index, args))
    if len(by_statement) > 1:  # both kinds (never in one run's events): one at a time
        return {}
    ((statement, calls),) = by_statement.items()
    raw = cursor.cursor  # the psycopg cursor under Django's wrapper
    rows: dict[int, Any] = {}
    with connection.wrap_database_errors:  # psycopg's errors as Django's, as for execute
        raw.executemany(statement, [args for _, args in calls], returning=True)
        for position, (index, _) in enumerate(calls):
            if position:
                raw.nextset()
            rows[index] = raw.fetchone()
    return rows


def _insert_one(cursor: Any, event: PendingEvent, single: bool, params: list[Any]) -> Any:
    """`_insert`, and for an event with `in_transaction` that too, in a savepoint of the
    batch's transaction: if either raises, the savepoint rolls back the event, its seq and
    whatever the callback wrote, and the exception is returned, for the event's emitter to
    raise, while the rest of the batch commits. (A plain event's failure propagates: the
    batch is then retried event by event, chat.events._append_group.)"""
    if event.in_transaction is None:
        return _insert(cursor, event, single, params)
    try:
        with transaction.atomic():
            row = _insert(cursor, event, single, params)
            if row is not None:
                event.in_transaction()
    except Exception as exc:  # noqa: BLE001 - rolled back to the savepoint; its emitter raises it
        return exc
    return row


def resume_recovered(*, after_seq: int, first_seq: int | None, last_seq: int) -> bool:
    """True if a replay after `after_seq` that starts at `first_seq` (None: no event) is
    complete; False if events after `after_seq` were pruned (the client must reload)."""
    if last_seq <= after_seq:
        return True
    return first_seq == after_seq + 1


def _pg_append(event: PendingEvent, params: list[Any]) -> tuple[str, list[Any]]:
    """The PostgreSQL statement that takes the next seq and inserts the event (checking the
    attempt if it has one), and its arguments."""
    when, thread_param, run_param, data_param = params
    tail = [thread_param, run_param, event.type, data_param, when]
    if event.attempt is None:
        return PG_APPEND, [when, thread_param, *tail]
    return fenced_statements()[0], [run_param, event.attempt, when, thread_param, *tail]


def _insert(cursor: Any, event: PendingEvent, single: bool, params: list[Any]) -> Any:
    """Takes the next seq and inserts the event (checking the attempt if it has one);
    returns the row with its seq, or None when the thread is gone or the run fenced.
    `params` are the event's prepared time, thread, run and data."""
    if single:
        cursor.execute(*_pg_append(event, params))
        return cursor.fetchone()
    first = _sqlite_block(cursor, [(event, params)])
    return None if first is None else (first,)


def _sqlite_rows(cursor: Any, prepared: list[Prepared]) -> dict[int, Any]:
    """On SQLite, writes each thread's plain events at the head of the batch in blocks:
    the events of one thread, up to its first one with `in_transaction` or of another run
    or attempt, take their seqs in one statement and go in with one executemany (two
    statements for k events instead of 2k; the thread's row and its last_activity index
    are written once). Returns each one's row by its index in `prepared` (None: refused);
    a thread's later events are left to `_insert_one`, which writes them after, in order.
    A block of one is left to it too."""
    blocks: dict[Any, list[tuple[int, PendingEvent, list[Any]]]] = {}
    closed: set[Any] = set()
    for index, item in enumerate(prepared):
        if isinstance(item, Exception):
            continue
        event, _, params = item
        thread_param = params[1]
        if thread_param in closed:
            continue
        block = blocks.setdefault(thread_param, [])
        head = block[0][1] if block else event
        if event.in_transaction is not None or (head.run_id, head.attempt) != (
            event.run_id,
            event.attempt,
        ):
            closed.add(thread_param)
            continue
        block.append((index, event, params))
    rows: dict[int, Any] = {}
    for block in blocks.values():
        if len(block) < 2:
            continue
        first = _sqlite_block(cursor, [(event, params) for _, event, params in block])
        for offset, (index, _, _) in enumerate(block):
            rows[index] = None if first is None else (first + offset,)
    return rows


def _sqlite_block(cursor: Any, block: list[tuple[PendingEvent, list[Any]]]) -> int | None:
    """Takes the next len(block) seqs of the block's thread and inserts its events (of one
    run and attempt) with them, in order; returns the first seq, or None when the thread is
    gone or the run fenced (nothing written). The thread's last_activity becomes the last
    event's time, as one update per event would leave it."""
    head, (_, thread_param, run_param, _) = block[0]
    fence = [run_param, head.attempt] if head.attempt is not None else []
    statement = SEQ_BLOCK if head.attempt is None else fenced_statements()[1]
    cursor.execute(statement, [len(block), block[-1][1][0], thread_param, *fence])
    row = cursor.fetchone()
    if row is None:
        return None
    first = int(row[0]) - len(block) + 1
    cursor.executemany(
        INSERT,
        [
            [thread_param, first + offset, run, event.type, data, when]
            for offset, (event, (when, _, run, data)) in enumerate(block)
        ],
    )
    return first


def _refusal(cursor: Any, event: PendingEvent, thread_param: Any) -> Exception:
    """Why an event got no seq: its thread is gone, or (the thread being there) its run
    is no longer active at the event's attempt."""
    if event.attempt is not None:
        cursor.execute(THREAD_EXISTS, [thread_param])
        if cursor.fetchone() is not None:
            return RunFencedError(
                f"run {event.run_id} is no longer active at attempt {event.attempt}; "
                f"{event.type} refused"
            )
    return ThreadGoneError(f"thread {event.thread_id} does not exist")


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


def encoded_events_after(
    *, thread_id: uuid.UUID, after_seq: int, limit: int, up_to: int | None = None
) -> list[tuple[int, str, str]]:
    """Returns (seq, type, wire JSON text) of the logged events with seq > after_seq (and
    <= up_to), in order (sync). The stored `data` is spliced in as the database returns its
    JSON text, so a replay or gap fill neither decodes nor re-encodes it."""
    query = Event.objects.filter(thread_id=thread_id, seq__gt=after_seq)
    if up_to is not None:
        query = query.filter(seq__lte=up_to)
    rows = (
        query.order_by("seq")
        .annotate(raw=Cast("data", TextField()))
        .values_list("type", "seq", "run_id", "created_at", "raw")[:limit]
    )
    head = f',"thread_id":"{thread_id}","run_id":"'
    return [
        (
            s,
            t,
            f'{{"type":{json.dumps(t)},"seq":{s}{head}{r}","ts":"{isoformat(c)}","data":{raw}}}',
        )
        for t, s, r, c, raw in rows
    ]
