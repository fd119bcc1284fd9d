"""SQLite's WAL checkpoints in a thread of their own (docs/deployment.md, "The embedded
SQLite").

In WAL mode a commit only appends to the WAL file. SQLite's own checkpoint, which copies the
WAL back into the database file and, with synchronous=NORMAL, is where the file is synced,
runs inside the commit that takes the WAL past 1,000 pages (frames). That commit is usually a batch
of the log writer, so every event of the batch, and every emitter waiting on it, waits the
several milliseconds of the copy and the sync (the latency p99 of docs/benchmarks.md,
round 6).

With SQLITE_CHECKPOINT_INTERVAL > 0 the settings move each connection's own checkpoint to
SQLITE_AUTOCHECKPOINT_PAGES (10,000 pages, about 40 MB): a safety net for a process that
runs no checkpointer (a management command) or one that falls behind. A server process
runs a PASSIVE checkpoint every interval here, on a connection of its own. A PASSIVE
checkpoint waits for no reader or writer, and writers go on appending to the WAL while it
copies. A failed checkpoint is logged, reported and counted
(netra_sqlite_checkpoint_errors_total); the next interval tries again, and the safety net
bounds the WAL meanwhile.
"""

import sqlite3
import threading
from typing import Any, NamedTuple

from django.conf import settings

from chat import metrics
from chat.errors import report_exception


class CheckpointResult(NamedTuple):
    """What `PRAGMA wal_checkpoint(PASSIVE)` answered."""

    busy: int  # 1 if it could not run at all (another checkpoint held the lock)
    wal_pages: int  # frames in the WAL
    checkpointed: int  # of those, frames now copied into the database file


class Checkpointer:
    """Runs a PASSIVE checkpoint of one SQLite file every `interval` seconds in a daemon
    thread, on a connection of its own."""

    def __init__(self, path: str, interval: float) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: sqlite3.Connection | None = None
        self.last: CheckpointResult | None = None

    @property
    def running(self) -> bool:
        """True while the thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Starts the thread (once)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="netra-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the thread after its current checkpoint and closes its connection."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def checkpoint(self) -> CheckpointResult:
        """Runs one PASSIVE checkpoint (sync); raises sqlite3.Error, and the connection is
        opened again at the next call."""
        try:
            if self._connection is None:
                self._connection = sqlite3.connect(self.path, isolation_level=None)
            row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            self._close()
            raise
        self.last = CheckpointResult(*(int(value) for value in row))
        return self.last

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._tick()
        except Exception as exc:  # noqa: BLE001 - reported: the thread is gone, so say so
            metrics.SQLITE_CHECKPOINT_ERRORS.inc()
            report_exception(
                exc,
                "the SQLite checkpoint thread stopped; each connection checkpoints itself "
                f"past {settings.SQLITE_AUTOCHECKPOINT_PAGES} pages from now on",
                database=self.path,
            )
        finally:
            self._close()

    def _tick(self) -> None:
        try:
            self.checkpoint()
        except sqlite3.Error as exc:
            metrics.SQLITE_CHECKPOINT_ERRORS.inc()
            report_exception(
                exc,
                f"SQLite checkpoint failed; the next one is in {self.interval:g} s, and a "
                f"connection checkpoints itself past {settings.SQLITE_AUTOCHECKPOINT_PAGES} pages",
                throttle="sqlite-checkpoint",
                database=self.path,
            )

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


_checkpointer: Checkpointer | None = None
_lock = threading.Lock()


def database_file(database: dict[str, Any]) -> str | None:
    """The file of a SQLite database settings entry; None for another engine or an
    in-memory database (which has no WAL)."""
    if database.get("ENGINE") != "django.db.backends.sqlite3":
        return None
    name = str(database.get("NAME") or "")
    if not name or name == ":memory:" or "mode=memory" in name or name.startswith("file:"):
        return None
    return name


def ensure_started(database: dict[str, Any] | None = None) -> Checkpointer | None:
    """Starts this process's checkpointer if the database (by default the 'default' one)
    is a SQLite file and SQLITE_CHECKPOINT_INTERVAL is positive; returns it (None: nothing
    to checkpoint)."""
    global _checkpointer
    path = database_file(settings.DATABASES["default"] if database is None else database)
    interval = float(settings.SQLITE_CHECKPOINT_INTERVAL)
    if path is None or interval <= 0:
        return None
    with _lock:
        if _checkpointer is None or _checkpointer.path != path:
            if _checkpointer is not None:
                _checkpointer.stop()
            _checkpointer = Checkpointer(path, interval)
        _checkpointer.start()
        return _checkpointer


def stop() -> None:
    """Stops this process's checkpointer, if it runs (tests, shutdown)."""
    global _checkpointer
    with _lock:
        checkpointer, _checkpointer = _checkpointer, None
    if checkpointer is not None:
        checkpointer.stop()
