"""A run's status change committed with its event inside a batch of other runs' events:
each such event has its own savepoint, so a status change that fails takes its event (and
its seq) back with it, the emitter gets the exception, and the rest of the batch commits.
Checked on SQLite in-process and on PostgreSQL (where a failed statement aborts the whole
transaction unless a savepoint contains it) in a subprocess."""

import asyncio
import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import AgentRun, RunStatus
from chat.broadcaster import Broadcaster
from chat.events import PendingEvent, event_append_many, events_after, isoformat
from chat.models import Message
from tests import helpers
from tests.cluster import check_on_postgresql

pytestmark = [pytest.mark.django_db(transaction=True)]


class StatusChangeFailed(RuntimeError):
    """What the failing callback raises."""


def batch_check() -> dict[str, Any]:
    """Writes one batch: a plain event, an event whose status change writes and then fails,
    an event whose status change commits, a plain event; returns what became of each."""
    user = helpers.make_user(f"batch-{uuid.uuid4().hex[:6]}")
    thread = helpers.make_thread(user)
    message = Message.objects.create(thread=thread, role="user", text="x")
    run = AgentRun.objects.create(
        thread=thread, user=user, message=message, agent="builtin", status=RunStatus.RUNNING
    )

    def failing() -> None:
        AgentRun.objects.filter(pk=run.pk).update(error_code="half-written")
        raise StatusChangeFailed("the status change failed")

    def succeeding() -> None:
        AgentRun.objects.filter(pk=run.pk).update(error_message="committed")

    def event(text: str, in_transaction: Any = None) -> PendingEvent:
        return PendingEvent(thread.id, run.id, "agent_thinking", {"text": text}, in_transaction)

    results = event_append_many(
        [event("a"), event("b", failing), event("c", succeeding), event("d")]
    )
    run.refresh_from_db()
    return {
        "results": [type(r).__name__ if isinstance(r, Exception) else r["seq"] for r in results],
        "logged": [
            (e["seq"], e["data"]["text"]) for e in events_after(thread_id=thread.id, after_seq=0)
        ],
        "error_code": run.error_code,
        "error_message": run.error_message,
    }


EXPECTED = {
    "results": [1, "StatusChangeFailed", 2, 3],
    "logged": [[1, "a"], [2, "c"], [3, "d"]],
    "error_code": "",
    "error_message": "committed",
}


def test_a_failing_status_change_fails_alone_in_its_batch() -> None:
    assert json.loads(json.dumps(batch_check())) == EXPECTED


@pytest.mark.postgres
def test_a_failing_status_change_fails_alone_in_its_batch_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_log_batches", "batch_check") == EXPECTED


def pipelined_check() -> dict[str, Any]:
    """Writes one batch of two runs' events (on PostgreSQL the ones before the first
    status change go out in one round trip): one from a stale attempt and one of a
    deleted thread among them, then a status change and a plain event; returns what
    became of each, and each thread's log."""
    user = helpers.make_user(f"pipe-{uuid.uuid4().hex[:6]}")
    threads = [helpers.make_thread(user) for _ in range(2)]
    runs = []
    for thread in threads:
        message = Message.objects.create(thread=thread, role="user", text="x")
        runs.append(
            AgentRun.objects.create(
                thread=thread, user=user, message=message, agent="builtin", status="running"
            )
        )

    def event(n: int, text: str, attempt: int = 1, in_transaction: Any = None) -> PendingEvent:
        thread_id, run_id = (threads[n].id, runs[n].id) if n >= 0 else (uuid.uuid4(),) * 2
        return PendingEvent(
            thread_id, run_id, "agent_thinking", {"text": text}, in_transaction, attempt
        )

    def succeeding() -> None:
        AgentRun.objects.filter(pk=runs[0].pk).update(error_message="committed")

    batch = [
        event(0, "a1"),
        event(1, "b1"),
        event(0, "stale", attempt=0),
        event(-1, "gone"),
        event(0, "a2"),
        event(1, "b2"),
        event(0, "a3", in_transaction=succeeding),
        event(1, "b3"),
    ]
    results = event_append_many(batch)
    return {
        "results": [type(r).__name__ if isinstance(r, Exception) else r["seq"] for r in results],
        "logged": [
            [(e["seq"], e["data"]["text"]) for e in events_after(thread_id=t.id, after_seq=0)]
            for t in threads
        ],
        "committed": AgentRun.objects.get(pk=runs[0].pk).error_message,
    }


PIPELINED = {
    "results": [1, 1, "RunFencedError", "ThreadGoneError", 2, 2, 3, 3],
    "logged": [[[1, "a1"], [2, "a2"], [3, "a3"]], [[1, "b1"], [2, "b2"], [3, "b3"]]],
    "committed": "committed",
}


def test_a_batch_of_two_runs_keeps_each_thread_gapless_and_refusals_alone() -> None:
    assert json.loads(json.dumps(pipelined_check())) == PIPELINED


@pytest.mark.postgres
def test_a_batch_in_one_round_trip_keeps_each_thread_gapless_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_log_batches", "pipelined_check") == PIPELINED


def blocks_check() -> dict[str, Any]:
    """Writes one batch in which a thread's events take their seqs as a block on SQLite:
    a run's events with a status change among them, and a stale attempt's events of
    another thread, which are refused together; returns what became of each, each thread's
    log, and the first thread's last activity against its last event's time."""
    user = helpers.make_user(f"block-{uuid.uuid4().hex[:6]}")
    threads = [helpers.make_thread(user) for _ in range(2)]
    runs = []
    for thread in threads:
        message = Message.objects.create(thread=thread, role="user", text="x")
        runs.append(
            AgentRun.objects.create(
                thread=thread, user=user, message=message, agent="builtin", status="running"
            )
        )

    def event(n: int, text: str, attempt: int = 1, in_transaction: Any = None) -> PendingEvent:
        return PendingEvent(
            threads[n].id, runs[n].id, "agent_thinking", {"text": text}, in_transaction, attempt
        )

    def succeeding() -> None:
        AgentRun.objects.filter(pk=runs[0].pk).update(error_message="committed")

    batch = [
        event(0, "a1"),
        event(1, "stale1", attempt=0),
        event(0, "a2"),
        event(1, "stale2", attempt=0),
        event(0, "a3", in_transaction=succeeding),
        event(0, "a4"),
    ]
    results = event_append_many(batch)
    logged = [events_after(thread_id=t.id, after_seq=0) for t in threads]
    threads[0].refresh_from_db()
    return {
        "results": [type(r).__name__ if isinstance(r, Exception) else r["seq"] for r in results],
        "logged": [[(e["seq"], e["data"]["text"]) for e in log] for log in logged],
        "last_activity_is_the_last_event": isoformat(threads[0].last_activity)
        == logged[0][-1]["ts"],
        "last_seq": threads[0].last_seq,
        "committed": AgentRun.objects.get(pk=runs[0].pk).error_message,
    }


BLOCKS = {
    "results": [1, "RunFencedError", 2, "RunFencedError", 3, 4],
    "logged": [[[1, "a1"], [2, "a2"], [3, "a3"], [4, "a4"]], []],
    "last_activity_is_the_last_event": True,
    "last_seq": 4,
    "committed": "committed",
}


def test_a_threads_events_in_blocks_keep_their_order_and_a_stale_block_is_refused() -> None:
    assert json.loads(json.dumps(blocks_check())) == BLOCKS


@pytest.mark.postgres
def test_the_same_batch_on_postgresql_gives_the_same_log() -> None:
    assert check_on_postgresql("tests.test_log_batches", "blocks_check") == BLOCKS


def test_a_block_of_one_threads_events_is_two_statements_on_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's seq block; PostgreSQL pipelines one statement per event")
    user = helpers.make_user("block-statements")
    thread = helpers.make_thread(user)
    run_id = uuid.uuid4()
    batch = [PendingEvent(thread.id, run_id, "agent_thinking", {"n": n}) for n in range(5)]
    with CaptureQueriesContext(connection) as captured:
        results = event_append_many(batch)
    assert [r["seq"] for r in results if isinstance(r, dict)] == [1, 2, 3, 4, 5]
    # An executemany is captured as one entry, "5 times: INSERT ...".
    statements = [" ".join(q["sql"].split()[:3]) for q in captured.captured_queries]
    assert statements == [
        "BEGIN IMMEDIATE",
        "UPDATE chat_thread SET",
        "5 times: INSERT",
        "COMMIT",
    ]


async def test_the_emitter_of_a_failing_status_change_gets_its_exception() -> None:
    """Through the broadcaster: concurrent emitters share a batch; the one whose status
    change fails raises it, the others' events are logged and gapless."""
    user = await database_sync_to_async(helpers.make_user)("batch-emit")
    thread = await database_sync_to_async(helpers.make_thread)(user)
    broadcaster = Broadcaster()

    def failing() -> None:
        raise StatusChangeFailed("no")

    async def emit(n: int, in_transaction: Any = None) -> dict[str, Any]:
        event: dict[str, Any] = await broadcaster.emit(
            thread_id=thread.id,
            run_id=uuid.uuid4(),
            type="agent_thinking",
            data={"text": str(n), "step": 1},
            in_transaction=in_transaction,
        )
        return event

    outcomes = await asyncio.gather(
        *(emit(n, failing if n == 3 else None) for n in range(6)), return_exceptions=True
    )
    assert isinstance(outcomes[3], StatusChangeFailed)
    written = sorted((o for o in outcomes if isinstance(o, dict)), key=lambda o: o["seq"])
    assert sorted(o["seq"] for o in written) == [1, 2, 3, 4, 5]
    logged = await database_sync_to_async(events_after)(thread_id=thread.id, after_seq=0)
    assert [e["data"]["text"] for e in logged] == [o["data"]["text"] for o in written]
