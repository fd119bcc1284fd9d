"""The AG-UI endpoint against a real daphne server, driven by the official TypeScript client
(@ag-ui/client's HttpAgent, whose run pipeline verifies every event), every event also
validated with the ag-ui-protocol Python models (docs/protocol.md, "AG-UI")."""

import asyncio
import json
import subprocess
import threading
import time
import uuid
from typing import Any

import pytest
from ag_ui.core import CustomEvent

from agents.agui import AguiRun
from chat.runevents import fold_run
from tests.httpstreams import (
    AGUI_EVENT,
    TESTS,
    agui_input,
    node,
    node_clients,
    parse_sse,
    read_sse,
    validate_agui,
)
from tests.servers import Server, free_port
from tests.sockets import Socket, completed_run

SERVER_ENV = {"WS_RATE_MESSAGES_PER_MINUTE": "1000"}
STARTS = {"RUN_STARTED", "TOOL_CALL_START", "TEXT_MESSAGE_START"}


@pytest.fixture(scope="module")
def alice(server: Server) -> str:
    return server.make_user("alice")


def new_thread(server: Server, token: str) -> str:
    status, thread = server.api("POST", "/api/threads/", token, {"title": "agui"})
    assert status == 201
    return str(thread["id"])


def run(server: Server, token: str, thread_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """One run through the official client; returns its events, ids, messages, error."""
    run_id = extra.pop("runId", f"run-{uuid.uuid4()}")
    options = {
        "mode": "run",
        "url": f"{server.http}/api/agui/",
        "token": token,
        "threadId": thread_id,
        "runId": run_id,
        "text": text,
        **extra,
    }
    result = node(options)
    result["runId"] = run_id
    return result


def replay(server: Server, token: str, run_id: str, **headers: str) -> list[Any]:
    """The run's stream read raw from the rejoin endpoint, validated by the Python models."""
    read = read_sse(server, f"/api/agui/runs/{run_id}/", token=token, headers=headers, seconds=15)
    assert read.status == 200, read.body
    ids = [event.id for event in read.events if event.id is not None]
    assert len(ids) == len(read.events), "every event has an id"
    assert ids == sorted(ids), "ids never decrease"
    return validate_agui(read.events)


def shape(event: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an AG-UI event, timestamps aside."""
    return (
        event["type"],
        event.get("toolCallId"),
        event.get("messageId"),
        event.get("delta"),
        event.get("content"),
    )


def test_official_client_completes_tool_calls_and_the_deltas_add_up(
    server: Server, alice: str
) -> None:
    result = run(server, alice, new_thread(server, alice), "what is 12*7 and 2**10")
    assert result["error"] is None, result["stderr"]
    events = result["events"]
    types = [e["type"] for e in events]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_FINISHED"
    assert types.count("TOOL_CALL_START") == 2 == types.count("TOOL_CALL_RESULT")
    assert "REASONING_MESSAGE_CONTENT" in types
    results = [json.loads(e["content"]) for e in events if e["type"] == "TOOL_CALL_RESULT"]
    assert [r["result"]["value"] for r in results] == [84, 1024]
    text = "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert text == events[-1]["result"]["text"]
    assert "84" in text and "1024" in text
    answer = [m for m in result["messages"] if m["role"] == "assistant" and m.get("content")]
    assert answer[-1]["content"] == text
    models = replay(server, alice, result["runId"])
    assert [m.type.value for m in models] == types


def test_a_failing_tool_is_a_tool_result_and_the_run_finishes(server: Server, alice: str) -> None:
    result = run(server, alice, new_thread(server, alice), "what is 1/0")
    assert result["error"] is None, result["stderr"]
    outcome = next(json.loads(e["content"]) for e in result["events"] if "content" in e)
    assert outcome["status"] == "error" and outcome["error"]["code"] == "division_by_zero"
    assert result["events"][-1]["type"] == "RUN_FINISHED"
    replay(server, alice, result["runId"])


def test_a_cancelled_run_finishes_with_the_cancelled_outcome(server: Server, alice: str) -> None:
    thread_id = new_thread(server, alice)
    outcome: dict[str, Any] = {}
    client = threading.Thread(
        target=lambda: outcome.update(run(server, alice, thread_id, "wait 20 seconds"))
    )
    client.start()
    run_id = None
    deadline = time.monotonic() + 20
    while run_id is None and time.monotonic() < deadline:
        _, page = server.api("GET", f"/api/threads/{thread_id}/events/", alice)
        run_id = next((e["run_id"] for e in page["events"]), None)
        time.sleep(0.1)
    assert run_id is not None
    status, _ = server.api("POST", f"/api/runs/{run_id}/cancel/", alice)
    assert status == 202
    client.join(timeout=30)
    assert outcome["error"] is None, outcome["stderr"]
    last = outcome["events"][-1]
    assert last["type"] == "RUN_FINISHED" and last["outcome"] == {"type": "cancelled"}


def test_a_failed_run_is_a_run_error(servers: Any) -> None:
    dead = free_port()  # nothing listens: every model request fails at once
    failing = servers.start(
        env={
            "AGENT_PROVIDER": "openai",
            "AGENT_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{dead}/v1",
            "AGENT_LLM_MAX_RETRIES": "0",
        }
    )
    token = failing.make_user("bob")
    result = run(failing, token, new_thread(failing, token), "hello")
    assert result["error"] is None or "Cannot send" not in result["error"], result["error"]
    types = [e["type"] for e in result["events"]]
    assert types[0] == "RUN_STARTED" and types[-1] == "RUN_ERROR"
    assert "RUN_FINISHED" not in types
    replay(failing, token, result["runId"])


def test_a_retry_of_a_run_id_replays_the_same_run(server: Server, alice: str) -> None:
    thread_id = new_thread(server, alice)
    first = run(server, alice, thread_id, "what is 2+2", runId="same-run")
    again = run(server, alice, thread_id, "what is 2+2", runId="same-run")
    assert first["error"] is None and again["error"] is None
    assert [shape(e) for e in again["events"]] == [shape(e) for e in first["events"]]
    assert again["ids"] == first["ids"]
    _, page = server.api("GET", f"/api/threads/{thread_id}/events/", alice)
    assert sum(e["type"] == "agent_started" for e in page["events"]) == 1


def _cut_points(ids: list[int], events: list[dict[str, Any]]) -> dict[str, int]:
    """How many distinct ids to let through so that the cut leaves a tool call open, and
    the answer text open."""
    distinct = list(dict.fromkeys(ids))
    first_of = {t: ids[i] for i, t in reversed(list(enumerate(e["type"] for e in events)))}
    return {
        "tool call open": distinct.index(first_of["TOOL_CALL_START"]) + 1,
        "text open": distinct.index(first_of["TEXT_MESSAGE_START"]) + 1,
    }


def test_a_dropped_stream_rejoined_with_last_event_id_passes_and_misses_nothing(
    server: Server, alice: str
) -> None:
    thread_id = new_thread(server, alice)
    full = run(server, alice, thread_id, "what is 12*7 and 2**10")
    assert full["error"] is None
    for name, keep in _cut_points(full["ids"], full["events"]).items():
        cut = run(
            server, alice, new_thread(server, alice), "what is 12*7 and 2**10", cutAfterIds=keep
        )
        before = cut["events"]
        assert before and before[-1]["type"] != "RUN_FINISHED", name
        rejoined = node(
            {
                "mode": "rejoin",
                "url": f"{server.http}/api/agui/runs/{cut['runId']}/",
                "token": alice,
                "threadId": thread_id,
                "runId": cut["runId"],
                "lastEventId": cut["lastEventId"],
            }
        )
        assert rejoined["error"] is None, (name, rejoined["error"])
        after = rejoined["events"]
        assert after[0]["type"] == "RUN_STARTED" and after[-1]["type"] == "RUN_FINISHED"
        head = 0
        while (
            head < len(after)
            and after[head]["type"] in STARTS
            and rejoined["ids"][head] == cut["lastEventId"]
        ):
            head += 1
        resent = {shape(e) for e in after[:head]}
        assert resent <= {shape(e) for e in before}, "only STARTs the client had are re-sent"
        if name == "tool call open":
            assert any(e["type"] == "TOOL_CALL_START" for e in after[:head])
        if name == "text open":
            assert any(e["type"] == "TEXT_MESSAGE_START" for e in after[:head])
        joined = [shape(e) for e in before + after[head:]]
        whole = [shape(e) for e in replay_events(server, alice, cut["runId"])]
        assert joined == whole, name
        validate_agui_after = replay(
            server, alice, cut["runId"], **{"Last-Event-ID": str(cut["lastEventId"])}
        )
        assert [m.type.value for m in validate_agui_after] == [e["type"] for e in after]


def replay_events(server: Server, token: str, run_id: str) -> list[dict[str, Any]]:
    """The whole run's AG-UI events as JSON (camelCase), read raw."""
    return [
        m.model_dump(mode="json", by_alias=True, exclude_none=True)
        for m in replay(server, token, run_id)
    ]


def test_a_run_started_over_agui_is_seen_identically_over_the_websocket(
    server: Server, alice: str
) -> None:
    thread_id = new_thread(server, alice)

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        socket = Socket(server, thread_id, token=alice)
        await socket.open()
        result = await asyncio.to_thread(run, server, alice, thread_id, "what is 3*3")
        started = next(f for f in socket.frames if f.get("type") == "agent_started")
        await socket.wait_for(completed_run(started["run_id"]), timeout=20)
        await socket.close()
        return socket.events, result

    ws_events, result = asyncio.run(scenario())
    assert result["error"] is None
    _, page = server.api("GET", f"/api/threads/{thread_id}/events/", alice)
    assert ws_events == page["events"], "the socket saw the log, as it is"
    assert sorted(set(result["ids"])) == [e["seq"] for e in ws_events]
    ws_text = "".join(e["data"]["text"] for e in ws_events if e["type"] == "partial_result")
    agui_text = "".join(e["delta"] for e in result["events"] if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert ws_text == agui_text == ws_events[-1]["data"]["text"]
    calls = [e["data"]["tool_call_id"] for e in ws_events if e["type"] == "tool_executing"]
    assert calls == [e["toolCallId"] for e in result["events"] if e["type"] == "TOOL_CALL_START"]


def test_auth_401_without_credentials_and_404_for_another_users_thread_or_run(
    server: Server, alice: str
) -> None:
    thread_id = new_thread(server, alice)
    body = agui_input(thread_id, "auth-run", "hello")
    anonymous = read_sse(server, "/api/agui/", token=None, method="POST", body=body, seconds=5)
    assert anonymous.status == 401
    assert json.loads(anonymous.body)["error"]["code"] == "unauthenticated"
    mallory = server.make_user("mallory")
    theirs = read_sse(server, "/api/agui/", token=mallory, method="POST", body=body, seconds=5)
    assert theirs.status == 404
    assert json.loads(theirs.body)["error"]["code"] == "thread_not_found"
    mine = run(server, alice, thread_id, "hello", runId="alice-run")
    assert mine["error"] is None
    assert read_sse(server, "/api/agui/runs/alice-run/", token=mallory, seconds=5).status == 404
    bad = read_sse(
        server, "/api/agui/", token=alice, method="POST", body={"threadId": "x"}, seconds=5
    )
    assert bad.status == 400


def test_a_new_thread_id_creates_the_thread(server: Server, alice: str) -> None:
    thread_id = str(uuid.uuid4())
    result = run(server, alice, thread_id, "what is 5*5")
    assert result["error"] is None
    status, threads = server.api("GET", "/api/threads/", alice)
    assert status == 200 and thread_id in {t["id"] for t in threads["threads"]}


def test_the_node_client_is_installed_from_the_lock_file() -> None:
    """tests/package.json pins the clients; the lock file is what `npm ci` installs."""
    node_clients()
    result = subprocess.run(
        ["npm", "ls", "--json", "@ag-ui/client", "eventsource"],
        cwd=TESTS,
        capture_output=True,
        text=True,
        check=False,
    )
    tree = json.loads(result.stdout)["dependencies"]
    assert tree["@ag-ui/client"]["version"] == "1.0.0"


# --- the mapping, in process ------------------------------------------------------------------


def _envelopes(run_id: str) -> list[dict[str, Any]]:
    base = {"thread_id": "t", "run_id": run_id, "ts": "2026-01-01T00:00:00Z"}
    rows: list[tuple[str, dict[str, Any]]] = [
        ("agent_started", {"agent": "builtin", "message_id": "u1"}),
        ("agent_thinking", {"text": "Checking.", "step": 1}),
        ("tool_executing", {"tool_call_id": "c1", "tool": "delete", "args": {"x": 1}}),
        (
            "approval_requested",
            {
                "approval_id": "a1",
                "tool_call_id": "c1",
                "tool": "delete",
                "args": {"x": 1},
                "reason": "destructive",
                "expires_at": "2026-01-01T01:00:00Z",
            },
        ),
        ("approval_resolved", {"approval_id": "a1", "decision": "approved", "comment": ""}),
        ("tool_completed", {"tool_call_id": "c1", "tool": "delete", "status": "ok", "result": 1}),
        ("partial_result", {"message_id": "m1", "text": "Done"}),
        ("partial_result", {"message_id": "m1", "text": "."}),
        ("agent_completed", {"status": "completed", "message_id": "m1", "text": "Done."}),
    ]
    return [{**base, "type": t, "seq": i + 1, "data": d} for i, (t, d) in enumerate(rows)]


def test_the_mapping_of_every_event_validates_and_approvals_are_interrupts() -> None:
    renderer = AguiRun(thread_id="t", run_id="r", netra_run_id="n")
    other = {**_envelopes("other")[1], "seq": 99}
    assert renderer.map(other) == [], "another run's events are not written"
    events = [e for envelope in _envelopes("n") for e in renderer.map(envelope)]
    for event in events:
        AGUI_EVENT.validate_json(event.model_dump_json(by_alias=True))
    interrupt = next(e for e in events if isinstance(e, CustomEvent) and e.name == "on_interrupt")
    assert interrupt.value["id"] == "a1" and interrupt.value["toolCallId"] == "c1"
    assert [e.type.value for e in events][-3:] == [
        "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert renderer.finished


def test_reopen_re_sends_run_started_and_the_starts_still_open() -> None:
    envelopes = _envelopes("n")
    for cut, expected in [
        (3, ["RUN_STARTED", "TOOL_CALL_START"]),  # the call executing
        (7, ["RUN_STARTED", "TEXT_MESSAGE_START"]),  # the answer being written
        (9, []),  # the run is over: nothing to re-open
    ]:
        renderer = AguiRun(thread_id="t", run_id="r", netra_run_id="n")
        prelude = renderer.reopen(fold_run(envelopes[:cut]), text_message_id="m1", seq=cut)
        events, _ = parse_sse(prelude)
        assert [e.json["type"] for e in events] == expected
        assert all(e.id == cut for e in events)
        rest = [e.type.value for env in envelopes[cut:] for e in renderer.map(env)]
        if expected:
            assert rest[-1] == "RUN_FINISHED"
        assert renderer.finished


def test_a_rejoin_after_the_end_of_the_run_ends_at_once(server: Server, alice: str) -> None:
    result = run(server, alice, new_thread(server, alice), "what is 6*7")
    assert result["error"] is None
    started = time.monotonic()
    read = read_sse(
        server,
        f"/api/agui/runs/{result['runId']}/",
        token=alice,
        headers={"Last-Event-ID": str(result["ids"][-1])},
        seconds=10,
    )
    assert read.status == 200 and read.events == []
    assert time.monotonic() - started < 5, "the stream ended instead of waiting"
