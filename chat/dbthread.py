"""The database threads of the hot paths (an event's write, a question's submit).

Channels' `database_sync_to_async` runs `close_old_connections` before and after every call.
With CONN_HEALTH_CHECKS on PostgreSQL that makes the call's first query wait for a health
check (a `SELECT 1` round trip), on every event batch and every question. `on_database_thread`
runs a function in the same thread (asgiref's one thread-sensitive executor) without that:
a connection that raised is checked before the next call and replaced if it is no longer
usable, and one past a positive CONN_MAX_AGE is closed before the next call.

On PostgreSQL a question's submit runs on a pool of SUBMIT_CONNECTIONS threads, each with
its connection (`on_submit_thread`): the one database thread otherwise waits through every
submit's round trips in turn, and with them every batch of the log writer queued behind.
Concurrent submits are settled by the database's unique constraints (agents/services.py).
On SQLite, which takes one writer at a time, a submit stays on the database thread.
"""

import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

from chat.hotcursor import hot_db

P = ParamSpec("P")
R = TypeVar("R")

# Threads (and PostgreSQL connections) of a worker process for submits, besides the
# database thread's own (docs/deployment.md counts them).
SUBMIT_CONNECTIONS = 4
_submit_pool: ThreadPoolExecutor | None = None


def keep_usable() -> None:
    """Replaces the thread's connection if it raised and no longer answers, and closes one
    past a positive CONN_MAX_AGE (sync); a connection in a transaction, or not yet open, is
    left alone. With CONN_MAX_AGE=0 (Django's close after each request) the connection is
    kept: a reconnect per event batch would cost more than it protects."""
    db = hot_db()  # once: every read through `connection` looks it up again
    if db.connection is None or db.in_atomic_block:
        return
    if db.errors_occurred:
        if db.is_usable():
            db.errors_occurred = False
        else:
            db.close()
            return
    expires = db.close_at
    aged = expires is not None and time.monotonic() >= expires
    if aged and db.settings_dict.get("CONN_MAX_AGE"):
        db.close()


def on_database_thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` as a coroutine function run in the database thread, its connection kept usable
    (`keep_usable`) instead of closed and health-checked around each call."""
    return sync_to_async(_kept_usable(fn), thread_sensitive=True)


def on_submit_thread(fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`fn` as a coroutine function for a submit: on PostgreSQL run on the submit pool, its
    connection kept usable as on the database thread; elsewhere `on_database_thread`."""
    global _submit_pool  # one pool per process, made at the first submit
    if connection.vendor != "postgresql":
        return on_database_thread(fn)
    if _submit_pool is None:
        _submit_pool = ThreadPoolExecutor(SUBMIT_CONNECTIONS, thread_name_prefix="netra-submit")
    return sync_to_async(_kept_usable(fn), thread_sensitive=False, executor=_submit_pool)


def _kept_usable(fn: Callable[P, R]) -> Callable[P, R]:
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        keep_usable()
        return fn(*args, **kwargs)

    return call
