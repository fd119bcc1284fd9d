"""The emit driver every contender runs in its own server process.

The harness sends one JSON command over a control socket; the server runs it with its own
`emit` (a raw broadcast, a bare group_send, or netra's Broadcaster) and answers when done.
So the same client and the same workload drive every contender, and no contender gets a
shortcut: each emit is awaited the way a run awaits it (N's returns once its event is
queued for the log, as a run's delta does; the command ends once all are committed and sent).
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

# emit(thread_key, data) sends one event carrying `data` to the thread's sockets.
Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
DELTA = "The answer streams in. "  # about one partial_result delta (AGENT_STREAM_CHUNK=24)


def payload(n: int) -> dict[str, Any]:
    """The data of the n-th event of a burst; `t` is the wall clock at emit time."""
    return {"text": DELTA, "n": n, "t": time.time()}


async def _emit_thread(
    emit: Emit, thread: str, *, duration: float, rate: float | None, count: int | None
) -> int:
    start = time.monotonic()
    sent = 0
    while True:
        if count is not None:
            if sent >= count:
                return sent
        elif time.monotonic() - start >= duration:
            return sent
        if rate:
            due = start + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await emit(thread, payload(sent))
        sent += 1
        # An emit that never suspends (an in-memory group_send, a send into a socket buffer
        # with room) would let one emitter hog the loop; a run yields between events too.
        await asyncio.sleep(0)


async def _settle(emit: Emit) -> None:
    """Waits for what an emit that returns once queued (N's) has still under way."""
    settle = getattr(emit, "settle", None)
    if settle is not None:
        await settle()


async def run_command(command: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Runs one control command; returns the reply.

    `burst`: every thread in `threads` emits for `duration` seconds, as fast as its emits
    return or at `rate` events/s per thread. `fill`: one thread emits `count` events.
    """
    op = command.get("op")
    if op == "burst":
        threads = list(command["threads"])
        started = time.time()
        counts = await asyncio.gather(
            *(
                _emit_thread(
                    emit,
                    thread,
                    duration=float(command["duration"]),
                    rate=command.get("rate"),
                    count=None,
                )
                for thread in threads
            )
        )
        await _settle(emit)
        return {"op": "done", "emitted": sum(counts), "started": started, "ended": time.time()}
    if op == "fill":
        started = time.time()
        emitted = await _emit_thread(
            emit, str(command["thread"]), duration=0.0, rate=None, count=int(command["count"])
        )
        await _settle(emit)
        return {"op": "done", "emitted": emitted, "started": started, "ended": time.time()}
    return {"op": "error", "message": f"unknown op {op!r}"}


class ControlApp:
    """An ASGI WebSocket app that runs control commands with the given emit."""

    def __init__(self, emit_factory: Callable[[], Emit]) -> None:
        self.emit_factory = emit_factory

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Accepts the control socket and answers each command in turn."""
        if scope["type"] != "websocket":
            return
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        emit = self.emit_factory()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            reply = await run_command(json.loads(message.get("text") or "{}"), emit)
            await send({"type": "websocket.send", "text": json.dumps(reply)})
