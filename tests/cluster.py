"""Cluster test helpers: a fresh PostgreSQL database, a private Redis, a cuttable TCP proxy,
and several workers on one channel layer (their sockets: tests/sockets.py).
"""

import asyncio
import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from chat.management.commands.run_cluster import worker_command
from tests.helpers import require
from tests.servers import PYTHON, ROOT, Server, base_env, free_port

logger = logging.getLogger("tests.cluster")

POSTGRES_URL = os.environ.get("POSTGRES_TEST_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# The cluster's timings: short heartbeats so that dead workers and connections are noticed
# within seconds, and a database connection kept per worker thread as in production.
FAST_HOUSEKEEPING = {
    "RUN_HEARTBEAT_INTERVAL": "0.5",
    "RUN_REAPER_INTERVAL": "0.5",
    "PROCESS_HEARTBEAT_INTERVAL": "0.5",
    "CONN_MAX_AGE": "60",
}


# --- services ------------------------------------------------------------------------------


def _url_with_db(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used for tests, or None."""
    try:
        with psycopg.connect(_url_with_db(POSTGRES_URL, "postgres"), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect to {POSTGRES_URL} ({exc})"
    return None


def redis_problem(url: str = REDIS_URL) -> str | None:
    """Why the Redis server at `url` cannot be used, or None."""
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 3) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(64).startswith(b"+PONG"):
                return f"{url} did not answer PING"
    except OSError as exc:
        return f"cannot connect to {url} ({exc})"
    return None


def require_postgres() -> None:
    """Skips loudly (or fails under NETRA_REQUIRE) without PostgreSQL."""
    problem = postgres_problem()
    require("postgres", problem is None, problem or "")


def require_redis() -> None:
    """Skips loudly (or fails under NETRA_REQUIRE) without the Redis service."""
    problem = redis_problem()
    require("redis", problem is None, problem or "")


def require_redis_server() -> None:
    """Skips loudly (or fails under NETRA_REQUIRE) without a redis-server binary to run."""
    require(
        "redis",
        os.access(REDIS_SERVER, os.X_OK),
        f"no redis-server binary ({REDIS_SERVER}) for a private, restartable Redis",
    )


_template: str | None = None


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(_url_with_db(POSTGRES_URL, "postgres"), autocommit=True)


def _drop(name: str) -> None:
    with contextlib.suppress(psycopg.Error), _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _migrated_template() -> str:
    """Returns a migrated template database, created once per test process."""
    global _template
    if _template is None:
        name = f"netra_tmpl_{uuid.uuid4().hex[:12]}"
        with _admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        atexit.register(_drop, name)
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=base_env(DATABASE_URL=_url_with_db(POSTGRES_URL, name)),
            check=True,
        )
        _template = name
    return _template


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh migrated PostgreSQL database for a block; yields its URL, drops it after."""
    template = _migrated_template()
    name = f"netra_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    try:
        yield _url_with_db(POSTGRES_URL, name)
    finally:
        _drop(name)


def check_on_postgresql(module: str, function: str) -> Any:
    """Runs `module.function()` (a check that returns JSON-able data) in `manage.py shell`
    on a fresh migrated PostgreSQL database, and returns what it returned."""
    require_postgres()
    code = f"import json; from {module} import {function}; print(json.dumps({function}()))"
    with postgres_database() as url:
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", code],
            cwd=ROOT,
            env=base_env(DATABASE_URL=url),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    return json.loads(out.strip().splitlines()[-1])


def query(database_url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Runs one SQL query on a test database and returns its rows."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


class PrivateRedis:
    """A redis-server of this test alone, without persistence, that may be restarted."""

    def __init__(self) -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="netra-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10) -> "PrivateRedis":
        """Starts the server and waits for PING."""
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while redis_problem(self.url) is not None:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def flush(self) -> None:
        """Forgets every key (queues, group memberships) but keeps the connections, as a
        failover to an empty replica does."""
        with socket.create_connection(("127.0.0.1", self.port), 3) as conn:
            conn.sendall(b"FLUSHALL\r\n")
            assert conn.recv(64).startswith(b"+OK")

    def stop(self) -> None:
        """Kills the server: everything it held (queues, group memberships) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class TcpProxy:
    """A loopback TCP proxy on its own thread and event loop, which a test can cut (every
    connection dropped, new ones refused) and restore."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def start(self) -> "TcpProxy":
        """Starts the thread and listens."""
        self.thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Stops listening and aborts every open connection."""
        self._call(self._cut())

    def restore(self) -> None:
        """Listens again."""
        self._call(self._listen())

    def close(self) -> None:
        """Cuts and stops the thread."""
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _listen(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self.writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self.writers.discard(writer)
        self.writers.discard(up_writer)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            # A side hung up or the proxy was cut: this pipe is over, and so is its partner.
            logger.debug("proxy pipe closed: %s", exc)
        finally:
            writer.transport.abort()


# --- workers -------------------------------------------------------------------------------


class Worker(Server):
    """A server process started with a given command line (daphne or uvicorn, as
    `manage.py run_cluster` starts it) instead of the default daphne one."""

    def __init__(self, *, command: list[str], server: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.argv = command
        self.log_path = self.workdir / f"{server}-{self.port}.log"

    def command(self) -> list[str]:
        """The command line it was given."""
        return self.argv


class Cluster:
    """N workers (daphne or uvicorn, as `manage.py run_cluster` starts them) on one Redis
    channel layer and one PostgreSQL database."""

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        workers: int = 2,
        server: str = "daphne",
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.workdir = Path(tempfile.mkdtemp(prefix="netra-cluster-"))
        self.env = {
            **FAST_HOUSEKEEPING,
            **(env or {}),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
        }
        self.workers: list[Worker] = []
        for _ in range(workers):
            port = free_port()
            command = worker_command(
                server=server, host="127.0.0.1", port=port, max_message_bytes=131072
            )
            self.workers.append(
                Worker(
                    env=self.env, port=port, workdir=self.workdir, command=command, server=server
                )
            )

    def start(self) -> "Cluster":
        """Starts every worker and waits for each to answer /healthz."""
        for worker in self.workers:
            worker.start()
        return self

    def stop(self) -> None:
        """Stops the workers still running."""
        for worker in self.workers:
            worker.stop()

    def __getitem__(self, index: int) -> Worker:
        return self.workers[index]

    def make_users(self, prefix: str, count: int) -> list[str]:
        """Creates `count` users in one process; returns an API token of each."""
        script = (
            "from django.contrib.auth import get_user_model\n"
            "from chat.services import token_create\n"
            f"for i in range({count}):\n"
            f"    user = get_user_model().objects.create_user(username=f'{prefix}{{i}}')\n"
            "    print(token_create(user=user, name='cluster')[1])\n"
        )
        out = self.workers[0].manage("shell", "-c", script)
        tokens = out.strip().splitlines()[-count:]
        assert len(tokens) == count, out
        return tokens

    def new_thread(self, token: str, worker: int = 0) -> str:
        """Creates a thread through the API of a worker; returns its id."""
        status, body = self.workers[worker].api("POST", "/api/threads/", token, {"title": "c"})
        assert status == 201, body
        return str(body["id"])

    def logged_events(self, thread_id: str) -> list[dict[str, Any]]:
        """The thread's event log, read from the database (the source of truth)."""
        rows = query(
            self.database_url,
            "SELECT type, seq, run_id, created_at, data FROM chat_event "
            "WHERE thread_id = %s ORDER BY seq",
            uuid.UUID(thread_id),
        )
        return [
            {"type": t, "seq": s, "run_id": str(r), "data": d, "thread_id": thread_id}
            for t, s, r, _created, d in rows
        ]


@contextlib.contextmanager
def running_cluster(**kwargs: Any) -> Iterator[Cluster]:
    """A started cluster for the duration of a block."""
    cluster = Cluster(**kwargs)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def record(capsys: Any, name: str, **figures: Any) -> None:
    """Prints a test's figures past pytest's capture, so that they appear in the CI log, and
    keeps them in test-output/reliability.json, the source of docs/reliability.md."""
    with capsys.disabled():
        print(f"\nRELIABILITY {name}: {json.dumps(figures, sort_keys=True)}")
    out = ROOT / "test-output" / "reliability.json"
    out.parent.mkdir(exist_ok=True)
    try:
        known = json.loads(out.read_text())
    except (OSError, ValueError):
        known = {}
    known[name] = {**figures, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
