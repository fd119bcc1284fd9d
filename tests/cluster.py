"""Cluster test helpers: a fresh PostgreSQL database, a private Redis, a cuttable TCP proxy,
several workers on one channel layer, and a WebSocket client that records every frame.
"""

import asyncio
import atexit
import contextlib
import itertools
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
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import websockets
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


# --- client --------------------------------------------------------------------------------


class Socket:
    """A WebSocket client on a thread that records every frame it receives."""

    def __init__(self, server: Server, thread_id: str, token: str) -> None:
        self.server = server
        self.thread_id = thread_id
        self.token = token
        self.frames: list[dict[str, Any]] = []
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.closed: asyncio.Event = asyncio.Event()
        self.close_code: int | None = None
        self.close_codes: list[int | None] = []
        self.refusals: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    @property
    def events(self) -> list[dict[str, Any]]:
        """The run events received, in arrival order."""
        return [f for f in self.frames if "seq" in f]

    @property
    def last_seq(self) -> int:
        """The highest seq received."""
        return max((f["seq"] for f in self.events), default=0)

    async def open(self, after_seq: int | None = None, timeout: float = 20) -> dict[str, Any]:
        """Connects and returns the first frame (connection_established or an error)."""
        url = f"{self.server.ws}/ws/chat/{self.thread_id}/"
        if after_seq is not None:
            url += f"?after_seq={after_seq}"
        self.closed = asyncio.Event()
        self.close_code = None
        start = len(self.frames)
        self.ws = None  # a failed connect must not leave the previous socket looking open
        self.ws = await websockets.connect(
            url,
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=timeout,
            max_size=None,
        )
        self.reader = asyncio.create_task(self._read(self.ws))
        await self.wait_for(lambda f: True, timeout=timeout, start=start)
        return self.frames[start]

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            self.close_codes.append(ws.close_code)
            self.closed.set()
            self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30, start: int = 0
    ) -> dict[str, Any]:
        """Waits for a frame (from index `start`) that satisfies `predicate`; returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = start
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            if self.closed.is_set() and seen == len(self.frames):
                raise AssertionError(
                    f"socket closed ({self.close_code}) before the frame came; "
                    f"got {[f.get('type') for f in self.frames[start:]]}"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out; got {[f.get('type') for f in self.frames[start:]][-20:]}"
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    @property
    def is_open(self) -> bool:
        """True while connected."""
        return self.ws is not None and not self.closed.is_set()

    async def ensure_open(self, timeout: float = 30) -> None:
        """Reconnects, resuming after the last seq received, until the server accepts;
        refusals (an `error` frame, then a close) are kept in `refusals`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.is_open:
            if loop.time() > deadline:
                raise AssertionError(f"could not reconnect; refused with {self.refusals[-3:]}")
            try:
                first = await self.open(after_seq=self.last_seq)
            except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
                self.refusals.append({"type": "connect_failed", "error": repr(exc)})
                await asyncio.sleep(0.3)
                continue
            if first["type"] != "connection_established":
                self.refusals.append(first)
                with contextlib.suppress(TimeoutError):
                    await self.wait_closed(10)
                await asyncio.sleep(0.3)

    async def follow(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
    ) -> dict[str, Any]:
        """Like wait_for, but reconnects and resumes whenever the connection drops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            await self.ensure_open(timeout=max(1.0, deadline - loop.time()))
            try:
                return await self.wait_for(predicate, timeout=max(0.1, deadline - loop.time()))
            except AssertionError:
                if self.is_open or loop.time() > deadline:
                    raise

    async def wait_closed(self, timeout: float = 30) -> int | None:
        """Waits for the connection to end; returns the close code."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def send(self, frame: dict[str, Any]) -> None:
        """Sends one JSON frame."""
        await self.ws.send(json.dumps(frame))

    async def ask(self, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
        """Sends a user_message and returns its ack."""
        client_msg_id = client_msg_id or uuid.uuid4().hex
        start = len(self.frames)
        await self.send({"type": "user_message", "text": text, "client_msg_id": client_msg_id})
        frame = await self.wait_for(
            lambda f: f.get("client_msg_id") == client_msg_id or f.get("ref") == client_msg_id,
            start=start,
        )
        assert frame["type"] == "ack", frame
        return frame

    async def close(self) -> None:
        """Closes normally."""
        if self.ws is not None:
            await self.ws.close()
            with contextlib.suppress(TimeoutError):
                await self.wait_closed(10)

    def abort(self) -> None:
        """Drops the TCP connection with a reset: no close frame, no FIN handshake."""
        sock = self.ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.ws.transport.abort()


def completed_run(run_id: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate: the agent_completed of one run."""
    return lambda f: f.get("type") == "agent_completed" and f.get("run_id") == run_id


def delivery_faults(received: list[dict[str, Any]], logged: list[dict[str, Any]]) -> dict[str, int]:
    """Compares what a socket received with the log: lost, doubled, out of order, altered."""
    seqs = [e["seq"] for e in received]
    by_seq = {e["seq"]: e for e in logged}
    altered = sum(
        1
        for e in received
        if e["seq"] in by_seq
        and (e["type"], e["run_id"], e["data"])
        != (by_seq[e["seq"]]["type"], by_seq[e["seq"]]["run_id"], by_seq[e["seq"]]["data"])
    )
    return {
        "lost": len(set(by_seq) - set(seqs)),
        "doubled": len(seqs) - len(set(seqs)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(seqs) if b <= a),
        "unknown": len(set(seqs) - set(by_seq)),
        "altered": altered,
    }


def metric_total(worker: Server, name: str) -> float:
    """Sums every sample of one metric (all its labels) on a worker's /metrics."""
    with urllib.request.urlopen(f"{worker.http}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


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
