"""End to end against a real daphne process with a real WebSocket client."""

import asyncio
import json
import uuid
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from agents.invariants import run_violations
from tests.servers import Server


@pytest.fixture(scope="module")
def token(server: Server) -> str:
    """An API token of the user `erin`."""
    return server.make_user("erin")


async def recv(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(ws: Any, kind: str, timeout: float = 15) -> list[dict[str, Any]]:
    frames = []
    while True:
        frames.append(await recv(ws, timeout))
        if frames[-1]["type"] == kind:
            return frames


def new_thread(server: Server, token: str) -> str:
    status, body = server.api("POST", "/api/threads/", token, {"title": "e2e"})
    assert status == 201, body
    return str(body["id"])


async def test_token_client_runs_the_agent_and_replays(server: Server, token: str) -> None:
    thread_id = new_thread(server, token)
    url = f"{server.ws}/ws/chat/{thread_id}/"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        first = await recv(ws)
        assert first["type"] == "connection_established" and first["last_seq"] == 0
        await ws.send(
            json.dumps(
                {
                    "type": "user_message",
                    "client_msg_id": "e2e-1",
                    "text": "what is 12*7 and 2**10 and 1/0",
                }
            )
        )
        frames = await until(ws, "agent_completed")
    assert frames[0]["type"] == "ack"
    events = [f for f in frames if "seq" in f]
    calls = [e for e in events if e["type"] == "tool_completed"]
    assert [c["data"]["status"] for c in calls] == ["ok", "ok", "error"]
    assert "84" in events[-1]["data"]["text"] and "1024" in events[-1]["data"]["text"]
    assert run_violations(events) == []
    async with websockets.connect(url + "?after_seq=0", additional_headers=headers) as ws:
        assert (await recv(ws))["type"] == "connection_established"
        replay = await until(ws, "resume_complete")
    assert [f for f in replay if "seq" in f] == events


async def test_cookie_client_connects_with_same_origin(server: Server) -> None:
    token = server.make_user("frank")
    cookie = server.login_cookie("frank")
    thread_id = new_thread(server, token)
    async with websockets.connect(
        f"{server.ws}/ws/chat/{thread_id}/",
        additional_headers={"Cookie": cookie},
        origin=Origin(server.http),
    ) as ws:
        assert (await recv(ws))["type"] == "connection_established"
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_foreign_origin_with_cookie_gets_http_403(server: Server) -> None:
    server.make_user("gina")
    cookie = server.login_cookie("gina")
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            f"{server.ws}/ws/chat/{uuid.uuid4()}/",
            additional_headers={"Cookie": cookie},
            origin=Origin("https://evil.example"),
        ):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(("auth", "code"), [("nt_wrong", 4401), (None, 4401)])
async def test_refusals_arrive_as_close_codes_with_their_frame(
    server: Server, token: str, auth: str | None, code: int
) -> None:
    thread_id = new_thread(server, token)
    headers = {"Authorization": f"Bearer {auth}"} if auth else {}
    async with websockets.connect(
        f"{server.ws}/ws/chat/{thread_id}/", additional_headers=headers, origin=Origin(server.http)
    ) as ws:
        frame = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert frame["type"] == "error" and frame["close_code"] == code
    assert ws.close_code == code


async def test_unknown_thread_is_4404_over_the_network(server: Server, token: str) -> None:
    async with websockets.connect(
        f"{server.ws}/ws/chat/{uuid.uuid4()}/",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        frame = await recv(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert (frame["code"], ws.close_code) == ("thread_not_found", 4404)


async def test_run_started_over_http_completes_on_the_server(server: Server, token: str) -> None:
    thread_id = new_thread(server, token)
    status, ids = server.api(
        "POST",
        f"/api/threads/{thread_id}/messages/",
        token,
        {"text": "what is 6*7", "client_msg_id": "http-e2e"},
    )
    assert status == 202 and ids["duplicate"] is False
    async with websockets.connect(
        f"{server.ws}/ws/chat/{thread_id}/?after_seq=0",
        additional_headers={"Authorization": f"Bearer {token}"},
    ) as ws:
        frames = await until(ws, "agent_completed")
    events = [f for f in frames if "seq" in f]
    assert events[-1]["data"]["status"] == "completed" and "42" in events[-1]["data"]["text"]
    assert run_violations(events) == []
    status, page = server.api("GET", f"/api/threads/{thread_id}/events/", token)
    assert status == 200 and page["events"] == events
