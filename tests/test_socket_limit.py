"""The per-user socket limit holds for handshakes fired at once, against a real daphne.

Counting the user's sockets and registering the new one are one atomic step
(chat.connections.ConnectionTracker.register), so concurrent handshakes with one token
cannot all see room under the limit. The same race across two workers on Redis and
PostgreSQL is in tests/test_cluster.py.
"""

import asyncio
from typing import Any

from tests.servers import Server
from tests.sockets import Socket

LIMIT = 20
HANDSHAKES = 50
SERVER_ENV = {"WS_MAX_SOCKETS_PER_USER": str(LIMIT)}


async def fire_handshakes(
    servers: list[Server], thread_id: str, token: str, count: int
) -> tuple[list[Socket], list[dict[str, Any]]]:
    """Opens `count` sockets at once with one token, spread over `servers`; returns the
    accepted sockets and the refused ones' frames, after waiting for each refusal's close."""
    sockets = [Socket(servers[i % len(servers)], thread_id, token=token) for i in range(count)]
    firsts = await asyncio.gather(*(socket.open(timeout=60) for socket in sockets))
    accepted = [s for s, f in zip(sockets, firsts, strict=True) if f["type"] != "error"]
    refused = [s for s, f in zip(sockets, firsts, strict=True) if f["type"] == "error"]
    for socket in refused:
        await socket.wait_closed(10)
    frames = [{**socket.frames[0], "closed_with": socket.close_code} for socket in refused]
    return accepted, frames


def assert_limit_held(accepted: list[Socket], refused: list[dict[str, Any]], limit: int) -> None:
    """Exactly `limit` accepted; every other one refused with the 4429 frame and close."""
    assert len(accepted) == limit, f"{len(accepted)} accepted, the limit is {limit}"
    assert all(s.frames[0]["type"] == "connection_established" for s in accepted)
    assert len(refused) == HANDSHAKES - limit
    for frame in refused:
        assert (frame["code"], frame["close_code"], frame["closed_with"]) == (
            "rate_limited",
            4429,
            4429,
        ), frame
        assert frame["retry_after"] > 0


async def test_concurrent_handshakes_with_one_token_keep_the_socket_limit(
    server: Server,
) -> None:
    token = server.make_user("racer")
    status, body = server.api("POST", "/api/threads/", token, {"title": "race"})
    assert status == 201, body
    accepted, refused = await fire_handshakes([server], body["id"], token, HANDSHAKES)
    try:
        assert_limit_held(accepted, refused, LIMIT)
        # Closing one makes room for exactly one more.
        await accepted.pop().close()
        again = Socket(server, body["id"], token=token)
        assert (await again.open())["type"] == "connection_established"
        accepted.append(again)
        extra = Socket(server, body["id"], token=token)
        assert (await extra.open())["code"] == "rate_limited"
    finally:
        await asyncio.gather(*(socket.close() for socket in accepted))
