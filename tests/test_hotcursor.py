"""The hot paths' cursor (chat/hotcursor.py): on SQLite sqlite3's own cursor, in the same
transaction as Django's, raising Django's errors; Django's cursor again whenever something
listens to the statements (an execute wrapper, logged queries)."""

import sqlite3
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from agents import services
from chat.hotcursor import SQLiteHotCursor, hot_cursor
from chat.models import Message
from tests import helpers

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_on_sqlite_it_is_sqlite3s_cursor_in_djangos_transaction() -> None:
    owner = helpers.make_user("hot")
    thread = helpers.make_thread(owner)
    with transaction.atomic():
        with hot_cursor() as cursor:
            assert isinstance(cursor, SQLiteHotCursor)
            cursor.execute("UPDATE chat_thread SET title = %s WHERE id = %s", ["x", thread.id.hex])
            assert cursor.rowcount == 1
        # Django's own cursor sees the uncommitted change: one connection, one transaction.
        with connection.cursor() as django_cursor:
            django_cursor.execute("SELECT title FROM chat_thread WHERE id = %s", [thread.id.hex])
            assert django_cursor.fetchone() == ("x",)
        transaction.set_rollback(True)
    thread.refresh_from_db()
    assert thread.title != "x"


def test_its_errors_are_djangos() -> None:
    """A broken constraint is django.db.IntegrityError (what the submit's retry path
    catches), bad SQL Django's OperationalError; each chained to sqlite3's own."""
    owner = helpers.make_user("hot-errors")
    thread = helpers.make_thread(owner)
    with pytest.raises(IntegrityError) as broken, hot_cursor() as cursor:
        cursor.execute("INSERT INTO chat_thread (id) VALUES (%s)", [thread.id.hex])
    assert isinstance(broken.value.__cause__, sqlite3.IntegrityError)
    with pytest.raises(OperationalError) as bad, hot_cursor() as cursor:
        cursor.execute("SELECT 1 FROM no_such_table WHERE id = %s", [1])
    assert isinstance(bad.value.__cause__, sqlite3.OperationalError)
    assert "no_such_table" in str(bad.value)


def test_a_retried_submit_is_still_answered_with_its_first_ids() -> None:
    """The hot cursor under the submit's rows: a retry (same client_msg_id) hits the unique
    constraint as an IntegrityError and gets the first submit's ids, not a failure."""
    owner = helpers.make_user("hot-retry")
    thread = helpers.make_thread(owner)
    first, new = services.run_create(
        thread_id=thread.id, user=owner, text="q", client_msg_id="same", worker_id="w"
    )
    assert new is not None
    services.run_mark_finished(spec=new.spec, worker_id="w", status="completed", text="a")
    again, none = services.run_create(
        thread_id=thread.id, user=owner, text="q", client_msg_id="same", worker_id="w"
    )
    assert (again.duplicate, again.run_id, none) == (True, first.run_id, None)
    assert Message.objects.filter(thread=thread, client_msg_id="same").count() == 1


@pytest.mark.parametrize("listener", ["execute_wrapper", "captured"])
def test_while_something_listens_it_is_djangos_cursor(listener: str) -> None:
    """An execute wrapper or logged queries see the hot paths' statements too."""
    owner = helpers.make_user(f"hot-{listener}")
    thread = helpers.make_thread(owner)
    seen: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    if listener == "execute_wrapper":
        with connection.execute_wrapper(record):
            services.run_create(
                thread_id=thread.id, user=owner, text="q", client_msg_id="c", worker_id="w"
            )
    else:
        with CaptureQueriesContext(connection) as captured:
            services.run_create(
                thread_id=thread.id, user=owner, text="q", client_msg_id="c", worker_id="w"
            )
        seen = [q["sql"] for q in captured.captured_queries]
    assert any("INSERT INTO" in sql and "chat_message" in sql for sql in seen)
    assert any("chat_event" in sql for sql in seen)
