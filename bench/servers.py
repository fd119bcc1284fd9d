"""Starting the contenders' servers, their databases and a private Redis, on loopback."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
PG_ROOT = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PG_TEMPLATE = "netra_bench_template"
PG_DB = "netra_bench"


def free_port() -> int:
    """Returns a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(**extra: str) -> dict[str, str]:
    """A production-like environment (DEBUG off) with the limits lifted for benchmarks."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "QUICK")
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DEBUG": "0",
            "SECRET_KEY": "bench-secret-key-for-loopback-only-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "AGENT_STREAM_DELAY": "0",
            "WS_MAX_SOCKETS_PER_USER": "1000000",
            # Off: B has no rate check, and a lifted limit would make N's check read every
            # message of the last minute (at the default 30 it reads at most 30 rows).
            "WS_RATE_MESSAGES_PER_MINUTE": "0",
            "BACKGROUND_TASKS": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


class Redis:
    """A private redis-server without persistence on a free port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, "redis-server")

    @property
    def url(self) -> str:
        """The REDIS_URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        """Forgets every key (groups and channels of the previous contender)."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, capture_output=True
        )

    def stop(self) -> None:
        """Stops the server."""
        _stop(self.proc)


class Databases:
    """A migrated SQLite template file and PostgreSQL template database, copied per server."""

    def __init__(self, workdir: Path, *, postgres: bool) -> None:
        self.workdir = workdir
        self.sqlite_template = workdir / "template.sqlite3"
        _migrate(f"sqlite:///{self.sqlite_template}")
        self.postgres = postgres
        if postgres:
            _psql(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            _psql(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)')
            _psql(f'CREATE DATABASE "{PG_TEMPLATE}"')
            _migrate(f"{PG_ROOT}/{PG_TEMPLATE}")

    def fresh(self, kind: str) -> str:
        """Returns the DATABASE_URL of a fresh migrated database of `kind` (sqlite, postgres)."""
        if kind == "sqlite":
            target = Path(tempfile.mkdtemp(prefix="db-", dir=self.workdir)) / "db.sqlite3"
            shutil.copy(self.sqlite_template, target)
            return f"sqlite:///{target}"
        _psql(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
        _psql(f'CREATE DATABASE "{PG_DB}" TEMPLATE "{PG_TEMPLATE}"')
        return f"{PG_ROOT}/{PG_DB}"

    def drop(self) -> None:
        """Drops the PostgreSQL databases."""
        if self.postgres:
            _psql(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')
            _psql(f'DROP DATABASE IF EXISTS "{PG_TEMPLATE}" WITH (FORCE)')


def postgres_available() -> bool:
    """True if the PostgreSQL server answers."""
    try:
        _psql("SELECT 1")
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", f"{PG_ROOT}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _migrate(database_url: str) -> None:
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=server_env(DATABASE_URL=database_url),
        check=True,
    )


def setup_netra(env: dict[str, str], *, threads: int, stream_threads: int = 0) -> dict[str, Any]:
    """Creates the bench user, an API token, threads of the default agent and threads of
    the bench's streaming agent (bench/stream_agent.py); returns them as a dict."""
    script = (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from chat.services import token_create\n"
        "from chat.models import Thread\n"
        "user = get_user_model().objects.create_user(username='bench', password='pw-Bench-1')\n"
        f"made = Thread.objects.bulk_create(Thread(owner=user) for _ in range({threads}))\n"
        "streams = Thread.objects.bulk_create(\n"
        f"    Thread(owner=user, agent='bench_stream') for _ in range({stream_threads}))\n"
        "print(json.dumps({'token': token_create(user=user)[1],\n"
        "                  'threads': [str(t.id) for t in made],\n"
        "                  'stream_threads': [str(t.id) for t in streams]}))\n"
    )
    result = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


@dataclass
class ServerProcess:
    """One contender's server process on a free port."""

    contender: str  # L, B or N
    server: str  # raw, daphne or uvicorn
    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The command line of the server."""
        if self.contender == "L":
            return [PYTHON, "-m", "bench.raw_server", "--port", str(self.port)]
        app = (
            "bench.bare_asgi:application"
            if self.contender == "B"
            else "bench.netra_asgi:application"
        )
        if self.server == "daphne":
            return [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port), app]
        return [
            str(BIN / "uvicorn"),
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--lifespan",
            "off",
            "--no-access-log",
            "--log-level",
            "warning",
        ]

    def start(self) -> "ServerProcess":
        """Starts the server and waits for its port."""
        log = (self.workdir / f"{self.contender}-{self.server}-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, self.server)
        return self

    def stop(self) -> None:
        """Stops the server."""
        if self.proc is not None:
            _stop(self.proc)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not open port {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """The process's resident set size."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
