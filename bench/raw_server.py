"""Contender L: a raw `websockets` broadcast server, the practical limit for Python.

`/ws/raw/<thread>/` subscribes a socket to a thread; `/bench/control/` runs the emit driver,
whose emit encodes the event once and sends it to each subscribed socket.
"""

import argparse
import asyncio
import json
from collections import defaultdict
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.control import Emit, run_command

groups: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def emit(thread: str, data: dict[str, Any]) -> None:
    """Sends one event to the thread's sockets."""
    text = json.dumps({"type": "partial_result", "thread_id": thread, "data": data})
    for socket in list(groups.get(thread, ())):
        try:
            await socket.send(text)
        except ConnectionClosed:
            groups[thread].discard(socket)


async def handler(socket: ServerConnection) -> None:
    """Serves one socket: the control endpoint or a thread subscription."""
    path = socket.request.path if socket.request else ""
    driver: Emit = emit
    if path == "/bench/control/":
        async for message in socket:
            await socket.send(json.dumps(await run_command(json.loads(message), driver)))
        return
    thread = path.strip("/").split("/")[-1]
    groups[thread].add(socket)
    try:
        async for message in socket:
            if json.loads(message).get("type") == "ping":
                await socket.send('{"type":"pong"}')
    except ConnectionClosed:
        pass
    finally:
        groups[thread].discard(socket)


async def main(port: int) -> None:
    """Serves until killed."""
    async with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=None, max_size=None
    ):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
