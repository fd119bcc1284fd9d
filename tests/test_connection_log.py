"""The connection state log: rows held back by an outage or pointing at deleted rows are
still written, and one unwritable tracker never holds the others back."""

from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from chat import connections, housekeeping
from chat.connections import ConnectionTracker, flush_unflushed, remember_unflushed
from chat.models import Connection
from chat.models import ConnectionState as S
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def unflushed(monkeypatch: pytest.MonkeyPatch) -> dict[Any, ConnectionTracker]:
    """An empty set of remembered trackers for each test."""
    trackers: dict[Any, ConnectionTracker] = {}
    monkeypatch.setattr(connections, "_unflushed", trackers)
    return trackers


def database_down(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Makes every tracker's flush fail as in an outage; returns the real flush."""
    real_flush = ConnectionTracker.flush

    def down(self: ConnectionTracker) -> None:
        raise OperationalError("the database is down")

    monkeypatch.setattr(ConnectionTracker, "flush", down)
    return real_flush


def row(connection_id: Any) -> Connection:
    """The connection's row (sync)."""
    return Connection.objects.get(pk=connection_id)


async def test_a_deleted_thread_does_not_block_later_state_log_rows(
    user: Any, token: str, service: Any, monkeypatch: pytest.MonkeyPatch, unflushed: dict
) -> None:
    doomed = await database_sync_to_async(helpers.make_thread)(user, "doomed")
    kept = await database_sync_to_async(helpers.make_thread)(user, "kept")
    first_comm, first = await helpers.open_socket(doomed.id, token=token)
    second_comm, second = await helpers.open_socket(kept.id, token=token)
    real_flush = database_down(monkeypatch)
    await first_comm.disconnect()
    await second_comm.disconnect()
    assert len(unflushed) == 2  # both closes are held back, the doomed one first
    monkeypatch.setattr(ConnectionTracker, "flush", real_flush)
    await database_sync_to_async(doomed.delete)()

    await database_sync_to_async(flush_unflushed)()

    gone = await database_sync_to_async(row)(first["connection_id"])
    assert (gone.state, gone.close_code, gone.thread_id) == (S.CLOSED, 1000, None)
    later = await database_sync_to_async(row)(second["connection_id"])
    assert (later.state, later.close_code, later.thread_id) == (S.CLOSED, 1000, kept.id)
    assert unflushed == {}


async def test_a_socket_of_a_deleted_user_is_closed_out_in_the_log(
    service: Any, unflushed: dict
) -> None:
    bob = await database_sync_to_async(helpers.make_user)("bob")
    thread = await database_sync_to_async(helpers.make_thread)(bob)
    raw = await database_sync_to_async(helpers.make_token)(bob)
    comm, first = await helpers.open_socket(thread.id, token=raw)
    await database_sync_to_async(bob.delete)()  # takes the thread and the token with it

    await comm.disconnect()

    closed = await database_sync_to_async(row)(first["connection_id"])
    assert (closed.state, closed.user_id, closed.thread_id, closed.token_id) == (
        S.CLOSED,
        None,
        None,
        None,
    )
    assert unflushed == {}


def closed_tracker() -> ConnectionTracker:
    """A tracker that went through a whole connection and waits to be written."""
    tracker = ConnectionTracker(requested_thread="t")
    for state in (S.AUTHENTICATING, S.CONNECTED, S.CLOSING, S.CLOSED):
        tracker.transition(state, "test")
    tracker.close_code = 1000
    return tracker


class UnwritableTracker(ConnectionTracker):
    """A tracker whose rows cannot be written (its database is still down)."""

    def flush(self) -> None:
        """Fails like an outage."""
        raise OperationalError("still down")


async def test_one_unwritable_tracker_does_not_block_the_others_and_the_sweep_counts_it(
    unflushed: dict,
) -> None:
    stuck = UnwritableTracker()
    written = closed_tracker()
    remember_unflushed(stuck)
    remember_unflushed(written)

    report = await housekeeping.sweep()

    assert (await database_sync_to_async(row)(written.id)).state == S.CLOSED
    assert list(unflushed) == [stuck.id]  # kept for the next sweep
    assert report.unwritten == 1


async def test_a_tracker_whose_connection_row_vanished_is_written_again(unflushed: dict) -> None:
    tracker = ConnectionTracker(requested_thread="t")
    tracker.transition(S.AUTHENTICATING, "test")
    tracker.transition(S.CONNECTED, "test")
    await database_sync_to_async(tracker.flush)()
    await database_sync_to_async(Connection.objects.filter(pk=tracker.id).delete)()
    tracker.transition(S.CLOSING, "test")
    tracker.transition(S.CLOSED, "test")
    remember_unflushed(tracker)

    report = await housekeeping.sweep()

    assert (await database_sync_to_async(row)(tracker.id)).state == S.CLOSED
    assert unflushed == {}
    assert report.unwritten == 0
