"""The database thread for the hot paths (an event's write, a question's submit).

Channels' `database_sync_to_async` runs `close_old_connections` before and after every call.
With CONN_HEALTH_CHECKS on PostgreSQL that makes the call's first query wait for a health
check (a `SELECT 1` round trip), on every event batch and every question. `on_database_thread`
runs a function in the same thread (asgiref's one thread-sensitive executor) without that:
a connection that raised is checked before the next call and replaced if it is no longer
usable, and CONN_MAX_AGE is applied by the next `database_sync_to_async` call in the thread.
"""

from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

P = ParamSpec("P")
R = TypeVar("R")


def keep_usable() -> None:
    """Replaces the thread's connection if it raised and no longer answers (sync); a
    connection in a transaction, or not yet open, is left alone."""
    if connection.connection is None or connection.in_atomic_block:
        return
    if connection.errors_occurred:
        if connection.is_usable():
            connection.errors_occurred = False
        else:
            connection.close()


def on_database_thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` as a coroutine function run in the database thread, its connection kept usable
    (`keep_usable`) instead of closed and health-checked around each call."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        keep_usable()
        return fn(*args, **kwargs)

    return sync_to_async(call, thread_sensitive=True)
