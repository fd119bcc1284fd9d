"""The connection and cursor of the hot paths' own SQL (an event batch, a submit's rows and
reads, a run's end).

Two costs of Django's that these paths pay many times a turn, and avoid here:

- `django.db.connection` is a proxy: every attribute read (`connection.ops`, `.features`,
  `.vendor`, and each field's `get_db_prep_value(value, connection)` reads several) looks the
  wrapper up again in a thread-local, about 1.5 us each; a turn made about 90 such lookups
  on the database thread. `hot_db()` looks it up once, and the hot paths pass the wrapper.
- Django's cursor wraps every statement in its CursorWrapper (execute wrappers, the
  thread-sharing and async checks), and SQLiteCursorWrapper rewrites the statement's `%s`
  into `?` with a regular expression, every time. On SQLite, `hot_cursor` gives sqlite3's
  own cursor on the same connection and in the same transaction instead, the statement
  rewritten once per distinct statement, and the database's errors still raised as
  Django's (IntegrityError, OperationalError, ...) through `wrap_database_errors`.

What the second gives up is what Django's wrapper adds around a statement, so it is kept
whenever something listens: while queries are logged (DEBUG, CaptureQueriesContext) or an
execute wrapper is installed (`connection.execute_wrapper`), and on every database but
SQLite, `hot_cursor` is Django's cursor. What listens otherwise (Sentry's query spans and
breadcrumbs patch Django's wrapper) does not see these statements. Nor does it run the
health check Django's cursor runs before a statement: on the hot paths that is
`chat.dbthread.keep_usable`'s, before each call on their threads.
"""

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX


def hot_db() -> BaseDatabaseWrapper:
    """The default database's connection wrapper of this thread (what `connection` proxies)."""
    return connections[DEFAULT_DB_ALIAS]


class SQLiteHotCursor:
    """sqlite3's cursor, taking Django's `%s` statements, raising Django's errors."""

    __slots__ = ("_cursor", "_db")

    def __init__(self, db: BaseDatabaseWrapper, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Runs one statement with its parameters (a sequence, `%s` placeholders)."""
        self._db.validate_no_broken_transaction()  # as Django's cursor does
        with self._db.wrap_database_errors:
            return self._cursor.execute(_qmark(sql), params)

    def executemany(self, sql: str, param_list: Sequence[Sequence[Any]]) -> Any:
        """Runs one statement once for each parameter sequence."""
        self._db.validate_no_broken_transaction()
        with self._db.wrap_database_errors:
            return self._cursor.executemany(_qmark(sql), param_list)

    def fetchone(self) -> Any:
        """The next row, or None."""
        with self._db.wrap_database_errors:
            return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        """The remaining rows."""
        with self._db.wrap_database_errors:
            rows: list[Any] = self._cursor.fetchall()
            return rows

    @property
    def rowcount(self) -> int:
        """The rows the last statement changed."""
        count: int = self._cursor.rowcount
        return count


@functools.lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    # What SQLiteCursorWrapper.convert_query does for sequence parameters, once per statement.
    return FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")


@contextmanager
def hot_cursor(db: BaseDatabaseWrapper | None = None) -> Iterator[Any]:
    """A cursor of `db` (the default database's wrapper if None) for the hot paths' own SQL
    (sync): see the module."""
    db = hot_db() if db is None else db
    if db.vendor != "sqlite" or db.queries_logged or db.execute_wrappers:
        with db.cursor() as cursor:
            yield cursor
        return
    db.ensure_connection()
    db.validate_thread_sharing()
    with db.wrap_database_errors:
        raw = db.connection.cursor()
    try:
        yield SQLiteHotCursor(db, raw)
    finally:
        raw.close()
