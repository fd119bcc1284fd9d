"""Runs several ASGI worker processes on consecutive ports and keeps them running.

The development stand-in for a process manager (docs/deployment.md): `make run-cluster`.
The workers share the Redis channel layer and the database, so a socket on one worker sees
the events of a run that executes on another.
"""

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

APPLICATION = "netra_site.asgi:application"
SERVERS = ("daphne", "uvicorn")
# A worker that dies is started again after a delay that doubles up to this bound, and is
# reset once the worker has stayed up for RESTART_RESET_AFTER seconds.
RESTART_DELAY_MAX = 30.0
RESTART_RESET_AFTER = 60.0


def worker_command(*, server: str, host: str, port: int, max_message_bytes: int) -> list[str]:
    """Returns the command line of one worker process serving the ASGI application."""
    bin_dir = Path(sys.executable).parent
    if server == "daphne":
        return [
            str(bin_dir / "daphne"),
            "-b",
            host,
            "-p",
            str(port),
            "--websocket-max-message-size",
            str(max_message_bytes),
            "--websocket-max-frame-size",
            str(max_message_bytes),
            APPLICATION,
        ]
    if server == "uvicorn":
        return [
            str(bin_dir / "uvicorn"),
            APPLICATION,
            "--host",
            host,
            "--port",
            str(port),
            # Django's ASGI handler has no lifespan support; the background loops start with
            # the first request instead (netra_site/asgi.py).
            "--lifespan",
            "off",
            "--ws-max-size",
            str(max_message_bytes),
            "--no-access-log",
        ]
    raise CommandError(f"unknown server {server!r}; choose one of {', '.join(SERVERS)}")


class Worker:
    """One supervised worker process."""

    def __init__(self, command: list[str], port: int) -> None:
        self.command = command
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = 1.0
        self.restart_at: float | None = None

    def start(self) -> None:
        """Starts the process."""
        self.proc = subprocess.Popen(self.command)  # noqa: S603 - our own command line
        self.started_at = time.monotonic()
        self.restart_at = None


class Command(BaseCommand):
    help = "Runs N ASGI workers (daphne or uvicorn) on consecutive ports; restarts dead ones."

    def add_arguments(self, parser: CommandParser) -> None:
        """Declares --workers, --server, --host and --port."""
        parser.add_argument("--workers", type=int, default=2)
        parser.add_argument("--server", choices=SERVERS, default="daphne")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000, help="the first worker's port")

    def handle(self, *args: Any, **options: Any) -> None:
        """Starts the workers, restarts any that dies, stops them all on SIGINT or SIGTERM."""
        workers_count: int = options["workers"]
        if workers_count < 1:
            raise CommandError("--workers must be at least 1")
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set: the in-memory channel layer is per process, so a socket "
                "on one worker would never see a run on another. Set REDIS_URL=redis://..."
            )
        if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
            self.stderr.write(
                "warning: SQLite serialises every writer of every worker; "
                "set DATABASE_URL=postgres://... for a real cluster"
            )
        workers = [
            Worker(
                worker_command(
                    server=options["server"],
                    host=options["host"],
                    port=options["port"] + index,
                    max_message_bytes=2 * settings.WS_MAX_FRAME_BYTES,
                ),
                options["port"] + index,
            )
            for index in range(workers_count)
        ]
        stopping: list[int] = []

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stopping.append(signum)

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        for worker in workers:
            worker.start()
            self.stdout.write(
                f"{options['server']} worker on http://{options['host']}:{worker.port}/ "
                f"(pid {worker.proc.pid if worker.proc else '?'})"
            )
        try:
            while not stopping:
                self._supervise(workers)
                time.sleep(0.5)
        finally:
            self._stop_all(workers)

    def _supervise(self, workers: list[Worker]) -> None:
        now = time.monotonic()
        for worker in workers:
            assert worker.proc is not None
            if worker.restart_at is not None:
                if now >= worker.restart_at:
                    worker.start()
                    self.stdout.write(f"restarted the worker on port {worker.port}")
                continue
            code = worker.proc.poll()
            if code is None:
                if now - worker.started_at > RESTART_RESET_AFTER:
                    worker.delay = 1.0
                continue
            self.stderr.write(
                f"the worker on port {worker.port} exited with {code}; "
                f"restarting it in {worker.delay:g} s"
            )
            worker.restart_at = now + worker.delay
            worker.delay = min(worker.delay * 2, RESTART_DELAY_MAX)

    def _stop_all(self, workers: list[Worker]) -> None:
        """SIGTERM to every worker: each drains (agents/drain.py) for up to
        SHUTDOWN_GRACE_SECONDS; one still running 10 s after that is killed."""
        grace = settings.SHUTDOWN_GRACE_SECONDS + 10.0
        live = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stdout.write("all workers stopped")
