"""SQLite's WAL checkpoint in a thread of its own (chat/checkpoint.py): the writer's commits
no longer copy and sync the WAL, the thread does; a failing checkpoint is counted and
retried, never silent."""

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from django.db import connection
from django.test import override_settings

from chat import checkpoint, metrics
from tests.servers import Server


def rows_in_database_file(path: Path, table: str) -> int:
    """Rows of `table` in the database file itself, ignoring the WAL (immutable=1)."""
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as reader:
        return int(reader.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def wal_database(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A SQLite file in WAL mode and a writer configured as the settings configure one."""
    path = tmp_path / "wal.sqlite3"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA synchronous=NORMAL")
    writer.execute(f"PRAGMA wal_autocheckpoint={settings.SQLITE_AUTOCHECKPOINT_PAGES}")
    writer.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, data TEXT)")
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table is in the file, no row yet
    try:
        yield path, writer
    finally:
        writer.close()


def write_events(writer: sqlite3.Connection, count: int) -> None:
    for start in range(0, count, 50):  # one commit per 50 rows, like the log writer's batches
        writer.executemany(
            "INSERT INTO event (data) VALUES (?)", [("x" * 400,) for _ in range(start, start + 50)]
        )


def test_the_writer_leaves_the_wal_to_the_thread_which_checkpoints_it(
    wal_database: tuple[Path, sqlite3.Connection],
) -> None:
    path, writer = wal_database
    write_events(writer, 4_000)  # some 3,000 WAL frames: past SQLite's own checkpoint at 1,000
    assert rows_in_database_file(path, "event") == 0  # every commit left it in the WAL
    checkpointer = checkpoint.Checkpointer(str(path), interval=0.05)
    checkpointer.start()
    try:
        # The rows reach the file inside the checkpoint; its result is kept once it returns.
        assert wait_until(
            lambda: rows_in_database_file(path, "event") == 4_000 and checkpointer.last is not None
        )
        assert checkpointer.last is not None
        assert checkpointer.last.busy == 0
        assert checkpointer.last.checkpointed == checkpointer.last.wal_pages > 1_000
        write_events(writer, 500)  # the writer goes on while the thread runs
        assert wait_until(lambda: rows_in_database_file(path, "event") == 4_500)
    finally:
        checkpointer.stop()
    assert not checkpointer.running


def test_a_failing_checkpoint_is_reported_counted_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = metrics.SQLITE_CHECKPOINT_ERRORS._value.get()
    checkpointer = checkpoint.Checkpointer(str(tmp_path / "no" / "such" / "dir.sqlite3"), 0.02)
    with caplog.at_level(logging.ERROR, logger="netra.errors"):
        checkpointer.start()
        try:
            assert wait_until(lambda: metrics.SQLITE_CHECKPOINT_ERRORS._value.get() >= before + 3)
            assert checkpointer.running  # it keeps trying: the next interval may succeed
        finally:
            checkpointer.stop()
    failures = [r for r in caplog.records if "SQLite checkpoint failed" in r.getMessage()]
    assert failures and "unable to open database file" in failures[0].getMessage()
    assert failures[0].exc_info is not None


def test_only_a_sqlite_file_with_a_positive_interval_gets_a_checkpointer(tmp_path: Path) -> None:
    file_db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "db.sqlite3")}
    assert checkpoint.database_file(file_db) == str(tmp_path / "db.sqlite3")
    for name in (":memory:", "file:memorydb_default?mode=memory&cache=shared", ""):
        assert checkpoint.database_file({**file_db, "NAME": name}) is None
    assert checkpoint.database_file({"ENGINE": "django.db.backends.postgresql"}) is None
    with override_settings(SQLITE_CHECKPOINT_INTERVAL=0):
        assert checkpoint.ensure_started(file_db) is None
    assert checkpoint.ensure_started() is None  # the suite's database is in memory
    try:
        with override_settings(SQLITE_CHECKPOINT_INTERVAL=0.5):
            started = checkpoint.ensure_started(file_db)
            assert started is not None and started.running
            assert checkpoint.ensure_started(file_db) is started  # one per process
    finally:
        checkpoint.stop()
    assert not started.running


@pytest.mark.django_db
def test_each_connection_checkpoints_itself_only_as_a_safety_net() -> None:
    assert settings.SQLITE_CHECKPOINT_INTERVAL > 0
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == settings.SQLITE_AUTOCHECKPOINT_PAGES == 10_000


async def test_a_server_process_checkpoints_its_database_file(server: Server) -> None:
    token = server.make_user("wal")
    status, body = server.api("POST", "/api/threads/", token, {"title": "wal"})
    assert status == 201, body
    url = f"{server.ws}/ws/chat/{body['id']}/"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "user_message", "client_msg_id": "w1", "text": "2+2"}))
        while json.loads(await asyncio.wait_for(ws.recv(), 15))["type"] != "agent_completed":
            pass
    # Far below 10,000 pages: only the server's checkpoint thread puts them in the file.
    database = server.workdir / "db.sqlite3"
    assert await asyncio.to_thread(
        wait_until, lambda: rows_in_database_file(database, "chat_event") >= 3
    ), server.log_tail()
