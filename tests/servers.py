"""Real server processes for end-to-end tests: daphne on a free loopback port, its own DB."""

import contextlib
import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
_template_db: Path | None = None
# The same frame limits as `make run`: above 128 KiB daphne itself refuses the message.
SERVER_LIMITS = ("--websocket-max-message-size", "131072", "--websocket-max-frame-size", "131072")


def free_port() -> int:
    """Returns a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# What a caller's shell may have exported (for `make run-cluster`, the README's model example
# or a real Sentry) and which must not change what a test runs against: SQLite, the in-memory
# channel layer, the built-in agent, no Sentry. A test that wants one of them passes it.
SERVICE_ENV = (
    "DATABASE_URL",
    "REDIS_URL",
    "AGENT_PROVIDER",
    "AGENT_MODEL",
    "NETRA_AGENTS",
    "NETRA_DEFAULT_AGENT",
    "SENTRY_DSN",
)
SERVICE_ENV_PREFIXES = ("OPENAI_",)


def is_service_env(name: str) -> bool:
    """True for a variable that points a process at a service or a model (see SERVICE_ENV)."""
    return name in SERVICE_ENV or name.startswith(SERVICE_ENV_PREFIXES)


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a production-like server: DEBUG off, plain HTTP on loopback, and
    no service or model the caller's shell exported (only those in `extra`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "DJANGO_SETTINGS_MODULE" and not is_service_env(k)
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "netra_site.settings",
            "DEBUG": "0",
            "SECRET_KEY": "e2e-secret-key-for-tests-only-0123456789",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "AGENT_STREAM_DELAY": env.get("AGENT_STREAM_DELAY", "0.01"),
            "PYTHONUNBUFFERED": "1",
            "BACKGROUND_TASKS": "1",
        }
    )
    env.update(extra)
    return env


def _migrated_sqlite(workdir: Path) -> Path:
    """Returns a fresh migrated SQLite file (migrating once per test session)."""
    global _template_db
    if _template_db is None:
        template = Path(tempfile.mkdtemp(prefix="netra-template-")) / "db.sqlite3"
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
            cwd=ROOT,
            env=base_env(DATABASE_URL=f"sqlite:///{template}"),
            check=True,
        )
        _template_db = template
    target = workdir / "db.sqlite3"
    shutil.copy(_template_db, target)
    return target


class Server:
    """A daphne process serving netra-chat, with helpers to manage its data."""

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="netra-e2e-"))
        self.port = port or free_port()
        extra = dict(env or {})
        if "DATABASE_URL" not in extra:
            extra["DATABASE_URL"] = f"sqlite:///{_migrated_sqlite(self.workdir)}"
        self.env = base_env(**extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"daphne-{self.port}.log"

    @property
    def http(self) -> str:
        """The base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        """The base WebSocket URL."""
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The server's command line: daphne with the limits of `make run`."""
        return [
            str(BIN / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            *SERVER_LIMITS,
            "netra_site.asgi:application",
        ]

    def start(self, timeout: float = 30) -> "Server":
        """Starts the server process and waits for /healthz."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        name = Path(self.command()[0]).name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer /healthz: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stops the server (SIGKILL with sig=signal.SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the server logged."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """Everything the server logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Runs a management command against the server's database; returns stdout."""
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    def make_user(self, username: str, password: str = "pw-Secret-123") -> str:
        """Creates a user through the management command; returns a fresh API token."""
        self.manage("ensure_demo_user", env={"DEMO_USER": username, "DEMO_PASSWORD": password})
        return self.manage("create_api_token", username).strip().splitlines()[-1]

    def make_users(self, names: list[str], password: str = "pw-Secret-123") -> list[str]:
        """Creates many users in one process; returns a fresh API token for each, in order."""
        script = (
            "import json, sys\n"
            "from django.contrib.auth import get_user_model\n"
            "from chat.services import token_create\n"
            "names, password = json.loads(sys.stdin.read())\n"
            "tokens = []\n"
            "for name in names:\n"
            "    user = get_user_model().objects.create_user(username=name, password=password)\n"
            "    tokens.append(token_create(user=user)[1])\n"
            "print(json.dumps(tokens))\n"
        )
        result = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", script],
            cwd=ROOT,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            input=json.dumps([names, password]),
        )
        tokens: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
        return tokens

    def api(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        """Calls the JSON API with a bearer token; returns (status, parsed body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.http}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def login_cookie(self, username: str, password: str = "pw-Secret-123") -> str:
        """Logs in through the real login form (with CSRF); returns the Cookie header."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        page = opener.open(f"{self.http}/accounts/login/", timeout=10).read().decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match, "the login form has a CSRF token"
        form = urllib.parse.urlencode(
            {"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)}
        ).encode()
        opener.open(
            urllib.request.Request(
                f"{self.http}/accounts/login/",
                data=form,
                headers={"Referer": f"{self.http}/accounts/login/"},
            ),
            timeout=10,
        )
        cookies = {c.name: c.value for c in jar}
        assert "sessionid" in cookies, "login failed"
        return "; ".join(f"{k}={v}" for k, v in cookies.items())


class Servers:
    """The server factory behind the `servers` fixture (tests/conftest.py): every server it
    made is stopped by `stop_all`, also when a test failed half-way."""

    def __init__(self) -> None:
        self.made: list[Server] = []

    def make(self, **kwargs: Any) -> Server:
        """A server not started yet (the keyword arguments of Server), e.g. to see it refuse."""
        server = Server(**kwargs)
        self.made.append(server)
        return server

    def start(self, **kwargs: Any) -> Server:
        """A started server (the keyword arguments of Server)."""
        return self.make(**kwargs).start()

    def stop_all(self) -> None:
        """Stops every server still running."""
        for server in reversed(self.made):
            server.stop()
