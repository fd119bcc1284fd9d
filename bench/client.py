"""The one benchmark client: sockets, the control connection and the workloads.

Every contender gets the same client and the same workload; only the socket URL (and, for
netra, the bearer token and its greeting frame) differ.
"""

import asyncio
import contextlib
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.servers import ServerProcess, cpu_seconds, rss_bytes

CONNECT_CONCURRENCY = 50


@dataclass
class Target:
    """How to reach one contender's sockets."""

    server: ServerProcess
    threads: list[str]
    token: str | None = None

    @property
    def base(self) -> str:
        """ws://host:port."""
        return f"ws://127.0.0.1:{self.server.port}"

    def socket_url(self, thread: str, query: str = "") -> str:
        """The socket URL of a thread."""
        kind = {"L": "raw", "B": "bare"}.get(self.server.contender)
        path = f"/ws/{kind}/{thread}/" if kind else f"/ws/chat/{thread}/"
        return self.base + path + (f"?{query}" if query else "")

    @property
    def headers(self) -> dict[str, str]:
        """The handshake headers (netra: the bearer token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class Socket:
    """A client socket whose reader counts frames and records event latencies."""

    conn: ClientConnection
    count: int = 0
    last_at: float = 0.0
    record: bool = False
    latencies: list[float] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    keep: bool = False
    pong: asyncio.Future[float] | None = None
    reader: asyncio.Task[None] | None = None
    # Set when a kept frame is an agent_completed (the turn and streaming workloads).
    completed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        """Reads until the socket closes."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.conn:
                now = time.time()
                self.count += 1
                self.last_at = now
                if self.record or self.keep or self.pong is not None:
                    frame = json.loads(raw)
                    if self.keep:
                        frame["_at"] = now
                        self.frames.append(frame)
                        if frame.get("type") == "agent_completed":
                            self.completed.set()
                    if frame.get("type") == "pong" and self.pong is not None:
                        self.pong.set_result(now)
                    elif self.record and "data" in frame and "t" in frame["data"]:
                        self.latencies.append(now - frame["data"]["t"])


async def open_socket(target: Target, thread: str, query: str = "", keep: bool = False) -> Socket:
    """Opens one socket; for netra, waits for connection_established."""
    conn = await connect(
        target.socket_url(thread, query),
        additional_headers=target.headers,
        compression=None,
        ping_interval=None,
        max_size=None,
        open_timeout=30,
    )
    sock = Socket(conn=conn, keep=keep)
    if target.token:
        greeting = json.loads(await asyncio.wait_for(conn.recv(), 30))
        if greeting.get("type") != "connection_established":
            raise RuntimeError(f"netra refused the socket: {greeting}")
        if keep:
            sock.frames.append(greeting)
    sock.reader = asyncio.create_task(sock.read())
    return sock


async def open_many(target: Target, threads: list[str]) -> list[Socket]:
    """Opens one socket per entry of `threads`, CONNECT_CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(thread: str) -> Socket:
        async with gate:
            return await open_socket(target, thread)

    results = await asyncio.gather(*(one(t) for t in threads), return_exceptions=True)
    opened = [r for r in results if isinstance(r, Socket)]
    failed = [r for r in results if not isinstance(r, Socket)]
    if failed:
        await close_all(opened)
        raise failed[0]
    return opened


async def close_all(sockets: list[Socket]) -> None:
    """Closes the sockets and waits for their readers."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(sock: Socket) -> None:
        async with gate:
            with contextlib.suppress(ConnectionClosed, OSError):
                await sock.conn.close()
            if sock.reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await sock.reader

    await asyncio.gather(*(one(s) for s in sockets))


async def command(target: Target, body: dict[str, Any]) -> dict[str, Any]:
    """Runs one command on the server's emit driver and returns its reply."""
    async with connect(
        target.base + "/bench/control/", compression=None, ping_interval=None, open_timeout=30
    ) as control:
        await control.send(json.dumps(body))
        reply: dict[str, Any] = json.loads(await control.recv())
    if reply.get("op") != "done":
        raise RuntimeError(f"control command failed: {reply}")
    return reply


async def drain(sockets: list[Socket], quiet: float = 0.5, limit: float = 15.0) -> float:
    """Waits until no socket received a frame for `quiet` seconds; returns the last receipt."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        last = max((s.last_at for s in sockets), default=0.0)
        if time.time() - last >= quiet:
            return last
        await asyncio.sleep(0.1)
    return max((s.last_at for s in sockets), default=0.0)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


async def fanout(target: Target, *, k: int, duration: float) -> dict[str, float]:
    """K threads x 2 sockets, every thread emitting as fast as it can for `duration` s."""
    threads = target.threads[:k]
    sockets = await open_many(target, [t for t in threads for _ in range(2)])
    await asyncio.sleep(0.3)
    for sock in sockets:
        sock.count = 0
    cpu0 = cpu_seconds(target.server.pid)
    start = time.time()
    reply = await command(target, {"op": "burst", "threads": threads, "duration": duration})
    last = await drain(sockets)
    cpu = cpu_seconds(target.server.pid) - cpu0
    delivered = sum(s.count for s in sockets)
    await close_all(sockets)
    elapsed = max(last - start, 1e-9)
    return {
        "k": k,
        "emitted": reply["emitted"],
        "delivered": delivered,
        "expected": reply["emitted"] * 2,
        "events_per_s": delivered / elapsed,
        "cpu_s": cpu,
        "cpu_per_1000": cpu / delivered * 1000 if delivered else float("nan"),
    }


async def latency(target: Target, *, k: int, rate: float, duration: float) -> dict[str, float]:
    """K threads x 2 sockets at `rate` events/s per thread; emit-to-socket latency in ms."""
    threads = target.threads[:k]
    sockets = await open_many(target, [t for t in threads for _ in range(2)])
    await asyncio.sleep(0.3)
    for sock in sockets:
        sock.record = True
    await command(target, {"op": "burst", "threads": threads, "duration": duration, "rate": rate})
    await drain(sockets)
    samples = [x * 1000 for s in sockets for x in s.latencies]
    await close_all(sockets)
    return {
        "samples": len(samples),
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "p999_ms": percentile(samples, 99.9),
        "mean_ms": statistics.fmean(samples) if samples else float("nan"),
    }


async def ping_p99(sockets: list[Socket], pings: int) -> float:
    """Pings random sockets one after another; returns the p99 round trip in ms."""
    times = []
    for sock in random.sample(sockets, min(pings, len(sockets))):
        sock.pong = asyncio.get_running_loop().create_future()
        sent = time.time()
        await sock.conn.send('{"type":"ping"}')
        try:
            got = await asyncio.wait_for(sock.pong, 10)
        except TimeoutError:
            got = sent + 10
        sock.pong = None
        times.append((got - sent) * 1000)
    return percentile(times, 99)


async def idle(target: Target, *, steps: list[int], pings: int) -> dict[str, Any]:
    """Opens idle sockets in steps; ping p99 and server RSS at each step.

    Capacity is the largest step whose ping p99 stayed under 100 ms (a lower bound when
    every step passed); memory per socket is the RSS growth over the largest step.
    """
    warm = await open_many(target, target.threads[:10])
    await close_all(warm)
    await asyncio.sleep(1.0)
    base = rss_bytes(target.server.pid)
    sockets: list[Socket] = []
    points = []
    capacity = 0
    refused_at = None
    for step in steps:
        more = step - len(sockets)
        try:
            sockets += await open_many(
                target, [target.threads[i % len(target.threads)] for i in range(more)]
            )
        except (WebSocketException, OSError, TimeoutError, RuntimeError):
            refused_at = step  # handshakes timed out or failed: past capacity
            break
        await asyncio.sleep(2.0)
        p99 = await ping_p99(sockets, pings)
        rss = rss_bytes(target.server.pid)
        points.append({"sockets": step, "ping_p99_ms": p99, "rss": rss})
        if p99 < 100:
            capacity = step
        else:
            break
    top = points[-1] if points else {"sockets": 1, "rss": base}
    await close_all(sockets)
    return {
        "refused_at": refused_at,
        "points": points,
        "capacity": capacity,
        "all_passed": capacity == steps[-1],
        "bytes_per_socket": (top["rss"] - base) / top["sockets"],
        "base_rss": base,
    }


async def replay(target: Target, *, thread: str, count: int) -> dict[str, float]:
    """Logs `count` events on a thread nobody watches, then resumes from seq 0 (netra only)."""
    fill = await command(target, {"op": "fill", "thread": thread, "count": count})
    start = time.time()
    sock = await open_socket(target, thread, query="after_seq=0", keep=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sock.frames and sock.frames[-1].get("type") == "resume_complete":
            break
        await asyncio.sleep(0.005)
    elapsed = sock.last_at - start
    got = sum(1 for f in sock.frames if "seq" in f)
    await close_all([sock])
    return {
        "events": got,
        "events_per_s": got / elapsed if elapsed > 0 else float("nan"),
        "fill_events_per_s": count / max(fill["ended"] - fill["started"], 1e-9),
    }
