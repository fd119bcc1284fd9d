"""The one WebSocket client of the tests against real servers: it records every frame it
receives, reconnects and resumes, and compares what it received with the event log.

In-process tests use tests/helpers.py (channels' communicator on the ASGI application).
"""

import asyncio
import contextlib
import itertools
import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import websockets

from tests.servers import Server

PING = '{"type":"ping"}'
PONG = {"type": "pong"}


class SocketClosed(AssertionError):
    """The connection ended before the awaited frame came."""


class Socket:
    """A WebSocket client on a thread that records every frame it receives."""

    def __init__(self, server: Server, thread_id: str, *, token: str) -> None:
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
        self._exchanged = 0  # frames before this index were returned by exchange()

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
                raise SocketClosed(
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

    async def send_raw(self, data: str | bytes) -> None:
        """Sends one frame as given: text, or bytes as a binary frame."""
        await self.ws.send(data)

    async def exchange(self, data: str | bytes, timeout: float = 10) -> list[dict[str, Any]]:
        """Sends a frame as given, then a ping; returns every frame received since the last
        exchange and before the pong. Connects first if the socket is closed. When the server
        closes the socket instead of answering (a refusal), returns what came before the
        close; `close_code` says why."""
        if not self.is_open:
            first = await self.open(timeout=timeout)
            assert first["type"] == "connection_established", first
            self._exchanged = len(self.frames)
        start = self._exchanged
        with contextlib.suppress(websockets.ConnectionClosed, SocketClosed):
            await self.send_raw(data)
            await self.send_raw(PING)
            await self.wait_for(lambda f: f == PONG, timeout=timeout, start=start)
            pong = self.frames.index(PONG, start)
            self._exchanged = pong + 1
            return self.frames[start:pong]
        await self.wait_closed(timeout)
        return self.frames[start:]

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
