"""Clients of the HTTP streams (SSE and AG-UI) for tests/test_sse.py and tests/test_agui.py:
the official Node.js clients in tests/js (installed by `npm ci` from tests/package-lock.json),
a raw SSE reader, the Python AG-UI models, and a uvicorn server."""

import http.client
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ag_ui.core import Event
from pydantic import TypeAdapter

from tests import helpers
from tests.servers import BIN, Server

TESTS = Path(__file__).resolve().parent
CLIENTS = TESTS / "js" / "clients.mjs"
AGUI_EVENT: TypeAdapter[Any] = TypeAdapter(Event)
_installed = False


def node_clients() -> Path:
    """The Node.js client script, its packages installed (`npm ci`, once per session); skips
    loudly without node and npm, or fails if NETRA_REQUIRE names node."""
    global _installed
    have = helpers.have_binary("node") and helpers.have_binary("npm")
    helpers.require("node", have, "node and npm are not on PATH")
    if not _installed:
        lock = TESTS / "package-lock.json"
        marker = TESTS / "node_modules" / ".package-lock.json"
        if not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"],
                cwd=TESTS,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            helpers.require("node", result.returncode == 0, f"npm ci failed: {result.stderr}")
        _installed = True
    return CLIENTS


def node(options: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    """Runs tests/js/clients.mjs with `options`; returns what it printed (JSON)."""
    script = node_clients()
    result = subprocess.run(
        ["node", str(script), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"node failed: {result.stderr}"
    output: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    output["stderr"] = result.stderr
    return output


def agui_input(thread_id: str, run_id: str, text: str) -> dict[str, Any]:
    """An AG-UI RunAgentInput with one user message."""
    return {
        "threadId": thread_id,
        "runId": run_id,
        "messages": [{"id": f"user-{run_id}", "role": "user", "content": text}],
        "state": {},
        "tools": [],
        "context": [],
        "forwardedProps": {},
    }


@dataclass
class SseEvent:
    """One parsed SSE event."""

    id: int | None
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        """The data as JSON."""
        return json.loads(self.data)


@dataclass
class SseRead:
    """What a raw SSE read got: the events, the comments, the status."""

    status: int
    events: list[SseEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    body: str = ""


def parse_sse(text: str) -> tuple[list[SseEvent], list[str]]:
    """Parses complete SSE blocks (a trailing partial block is ignored)."""
    events, comments = [], []
    blocks = text.split("\n\n")
    for block in blocks[:-1]:
        seq: int | None = None
        kind: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":"):
                comments.append(line[1:].strip())
            elif line.startswith("id:"):
                seq = int(line[3:].strip())
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data:
            events.append(SseEvent(id=seq, event=kind, data="\n".join(data)))
    return events, comments


def read_sse(
    server: Server,
    path: str,
    *,
    token: str | None,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    seconds: float = 10,
    until: str | None = None,
) -> SseRead:
    """Reads a stream for at most `seconds` (or until its end, or until a chunk contains
    `until`); returns its events and comments."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=seconds)
    sent = {"Accept": "text/event-stream", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    conn.request(method, path, body=payload, headers=sent)
    response = conn.getresponse()
    read = SseRead(status=response.status)
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    try:
        while time.monotonic() < deadline:
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if until is not None and until in chunk.decode(errors="replace"):
                break
    except (TimeoutError, OSError):
        pass
    finally:
        conn.close()
    read.body = b"".join(chunks).decode()
    read.events, read.comments = parse_sse(read.body)
    return read


class BackgroundSse(threading.Thread):
    """`read_sse` in a thread of its own, started at once: make something happen on the
    stream meanwhile, then take what it read with `result()`."""

    def __init__(self, server: Server, path: str, **kwargs: Any) -> None:
        super().__init__(name=f"sse-reader {path}", daemon=True)
        self.server, self.path, self.kwargs = server, path, kwargs
        self.read: SseRead | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        """Reads the stream (in the thread)."""
        try:
            self.read = read_sse(self.server, self.path, **self.kwargs)
        except BaseException as exc:  # handed to result(), which raises it in the test
            self.error = exc

    def result(self, timeout: float = 30) -> SseRead:
        """Waits for the read to end; returns it, or raises what ended it."""
        self.join(timeout)
        if self.error is not None:
            raise self.error
        if self.read is None:
            raise AssertionError(f"the stream {self.path} was still being read after {timeout} s")
        return self.read


def validate_agui(events: list[SseEvent]) -> list[Any]:
    """Validates every event's data with the ag-ui-protocol models; returns the models."""
    return [AGUI_EVENT.validate_json(event.data) for event in events]


class UvicornServer(Server):
    """The app under uvicorn (as `manage.py run_cluster --server uvicorn` starts it)."""

    def command(self) -> list[str]:
        """uvicorn on the server's port."""
        return [
            str(BIN / "uvicorn"),
            "netra_site.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--lifespan",
            "off",
            "--no-access-log",
        ]


def stalled_stream(server: Server, path: str, *, token: str) -> socket.socket:
    """Opens a stream on a raw socket and reads nothing (yet). Its receive window stays at
    its initial size while nothing is read (a tiny SO_RCVBUF would make the later read
    crawl)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def rss_kib(pid: int) -> int:
    """The resident memory of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
