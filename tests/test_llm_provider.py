"""The OpenAI-compatible agent against the testing kit's scripted chat-completions server:
streamed answers, tool calling, and daphne end to end.

The server (agents.testing.ScriptedLLM) speaks real HTTP/1.1 on loopback and streams
server-sent events shaped like the chat-completions API (`data: {chunk}` ... `data:
[DONE]`, chunked transfer encoding); the official client talks to it unmocked. Runs go
through the real socket path. Failures are in test_llm_failures.py, units in
test_llm_units.py.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from agents.testing import (
    API_KEY,
    MODEL,
    Reply,
    ScriptedLLM,
    assert_run_invariants,
    call_piece,
    call_start,
    chunk,
    text_chunks,
    tool_chunks,
)
from tests.llm import assert_failed, chat, llm_count, of_type
from tests.servers import Server, Servers

pytestmark = [pytest.mark.django_db(transaction=True)]

THREAD_AGENT = "openai"


# --- streamed answers ------------------------------------------------------------------------


async def test_plain_streamed_answer(
    thread: Any, token: str, scripted_llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = "Hello! " + "The quick brown fox jumps over the lazy dog. " * 6
    pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    reasoning = chunk({"role": "assistant", "reasoning_content": "The user greets me."})
    scripted_llm.script(Reply(chunks=[reasoning, *text_chunks(*pieces)]))
    before = llm_count("ok")

    events = await chat(thread, token, "say hello")

    assert [e["type"] for e in events[:3]] == ["agent_started", "agent_thinking", "agent_thinking"]
    assert events[0]["data"]["agent"] == "openai"
    assert of_type(events, "agent_thinking")[1]["text"] == "The user greets me."
    partials = of_type(events, "partial_result")
    assert "".join(p["text"] for p in partials) == answer
    assert 1 < len(partials) < len(pieces) / 3, "deltas are coalesced"
    assert events[-1]["data"]["status"] == "completed" and events[-1]["data"]["text"] == answer
    assert llm_count("ok") == before + 1

    (request,) = scripted_llm.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == MODEL and request.body["stream"] is True
    assert request.body["messages"] == [
        {"role": "system", "content": "You are a test assistant."},
        {"role": "user", "content": "say hello"},
    ]
    names = {tool["function"]["name"] for tool in request.body["tools"]}
    assert {"calculator", "clock"} <= names
    assert API_KEY not in json.dumps(events)
    assert API_KEY not in caplog.text


async def test_earlier_messages_go_to_the_model(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=text_chunks("Paris.")), Reply(chunks=text_chunks("About 2.1 million."))
    )
    await chat(thread, token, "capital of France?")
    await chat(thread, token, "and its population?")
    assert scripted_llm.requests[1].body["messages"][1:] == [
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "and its population?"},
    ]


# --- tool calling ----------------------------------------------------------------------------


async def test_tool_call_with_arguments_split_over_chunks(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(
            chunks=tool_chunks(
                call_start(0, "call_abc", "calculator"),
                call_piece(0, '{"exp'),
                call_piece(0, "ression"),
                call_piece(0, '": "12'),
                call_piece(0, '*7"}'),
            )
        ),
        Reply(chunks=text_chunks("12*7 is ", "84.")),
    )
    events = await chat(thread, token, "what is 12*7?")

    types = [e["type"] for e in events]
    assert types[:5] == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_thinking",
    ]
    (executing,) = of_type(events, "tool_executing")
    assert executing == {
        "tool_call_id": "call_abc",
        "tool": "calculator",
        "args": {"expression": "12*7"},
    }
    (completed,) = of_type(events, "tool_completed")
    assert completed["status"] == "ok" and completed["result"]["value"] == 84
    assert events[-1]["data"]["text"] == "12*7 is 84."

    followup = scripted_llm.requests[1].body["messages"]
    assert followup[-2]["role"] == "assistant"
    assert followup[-2]["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "12*7"}'},
        }
    ]
    assert followup[-1]["role"] == "tool" and followup[-1]["tool_call_id"] == "call_abc"
    assert json.loads(followup[-1]["content"])["result"]["value"] == 84


async def test_two_parallel_tool_calls(thread: Any, token: str, scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(
        Reply(
            chunks=tool_chunks(
                call_start(0, "call_one", "calculator"),
                call_start(1, "call_two", "calculator"),
                call_piece(1, '{"expression": '),
                call_piece(0, '{"expression": "2**10"}'),
                call_piece(1, '"1/0"}'),
            )
        ),
        Reply(chunks=text_chunks("2**10 = 1024; 1/0 cannot be computed.")),
    )
    events = await chat(thread, token, "2**10 and 1/0")

    executing = of_type(events, "tool_executing")
    assert [(e["tool_call_id"], e["args"]) for e in executing] == [
        ("call_one", {"expression": "2**10"}),
        ("call_two", {"expression": "1/0"}),
    ]
    completed = {c["tool_call_id"]: c for c in of_type(events, "tool_completed")}
    assert completed["call_one"]["status"] == "ok"
    assert completed["call_two"]["error"]["code"] == "division_by_zero"
    tool_messages = [m for m in scripted_llm.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_one", "call_two"]
    assert json.loads(tool_messages[1]["content"])["error"]["code"] == "division_by_zero"
    assert events[-1]["data"]["status"] == "completed"


async def test_invalid_json_arguments_are_bad_arguments_and_the_model_is_told(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(
            chunks=tool_chunks(
                call_start(0, "call_bad", "calculator"), call_piece(0, '{"expression": "2+')
            )
        ),
        Reply(chunks=text_chunks("Sorry, I sent a broken call.")),
    )
    events = await chat(thread, token, "2+2")

    (completed,) = of_type(events, "tool_completed")
    assert completed["status"] == "error" and completed["error"]["code"] == "bad_arguments"
    assert of_type(events, "tool_executing")[0]["args"] == '{"expression": "2+'
    followup = scripted_llm.requests[1].body["messages"]
    assert followup[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    told = json.loads(followup[-1]["content"])
    assert told["error"]["code"] == "bad_arguments" and "not valid JSON" in told["error"]["message"]
    assert events[-1]["data"]["status"] == "completed"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_in_arguments_are_bad_arguments_not_a_failed_run(
    thread: Any, token: str, scripted_llm: ScriptedLLM, constant: str
) -> None:
    arguments = f'{{"expression": {constant}}}'
    scripted_llm.script(
        Reply(
            chunks=tool_chunks(call_start(0, "call_nan", "calculator"), call_piece(0, arguments))
        ),
        Reply(chunks=text_chunks("Sorry.")),
    )
    events = await chat(thread, token, "compute NaN")

    assert not of_type(events, "agent_error")
    (completed,) = of_type(events, "tool_completed")
    assert completed["status"] == "error" and completed["error"]["code"] == "bad_arguments"
    assert of_type(events, "tool_executing")[0]["args"] == arguments
    followup = scripted_llm.requests[1].body["messages"]
    assert followup[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    told = json.loads(followup[-1]["content"])
    assert told["error"]["code"] == "bad_arguments" and constant in told["error"]["message"]
    assert events[-1]["data"]["status"] == "completed"


async def test_unknown_tool_is_reported_and_the_model_is_told(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=tool_chunks(call_start(0, "call_x", "teleport"), call_piece(0, "{}"))),
        Reply(chunks=text_chunks("I cannot teleport.")),
    )
    events = await chat(thread, token, "teleport me")

    (completed,) = of_type(events, "tool_completed")
    assert completed["error"]["code"] == "unknown_tool" and completed["tool"] == "teleport"
    told = json.loads(scripted_llm.requests[1].body["messages"][-1]["content"])
    assert told["error"]["code"] == "unknown_tool"
    assert events[-1]["data"]["text"] == "I cannot teleport."


async def test_max_steps(thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any) -> None:
    scripted_llm.point(max_steps=2)
    scripted_llm.default = Reply(
        chunks=tool_chunks(call_start(0, "", "clock"), call_piece(0, "{}"))
    )
    events = await chat(thread, token, "loop forever")

    assert_failed(events, "max_steps", retryable=False)
    assert len(scripted_llm.requests) == 2
    ids = [e["tool_call_id"] for e in of_type(events, "tool_executing")]
    assert len(ids) == 1 and ids[0].startswith("call_"), "a missing id is generated"


# --- end to end: daphne with AGENT_PROVIDER=openai ---------------------------------------------


@pytest.fixture
def daphne_with(servers: Servers) -> Iterator[Any]:
    """Starts daphne with extra environment; stops it after the test."""
    started: list[Server] = []

    def start(env: dict[str, str]) -> Server:
        started.append(servers.start(env=env))
        return started[-1]

    yield start
    for server in started:
        server.stop()


async def test_daphne_streams_a_model_answer_with_a_tool_call(daphne_with: Any) -> None:
    fake = await ScriptedLLM().start()
    try:
        fake.script(
            Reply(chunks=tool_chunks(call_start(0, "call_e2e", "calculator"), call_piece(0, "")))
        )
        fake.script(
            Reply(
                chunks=tool_chunks(
                    call_start(0, "call_e2e2", "calculator"),
                    call_piece(0, '{"expression":'),
                    call_piece(0, '"6*7"}'),
                )
            ),
            Reply(chunks=text_chunks("6*7 ", "= 42.")),
        )
        server = daphne_with(
            {
                "AGENT_PROVIDER": "openai",
                "OPENAI_BASE_URL": fake.url,
                "OPENAI_API_KEY": API_KEY,
                "AGENT_MODEL": MODEL,
            }
        )
        token = server.make_user("llm-user")
        status, created = server.api("POST", "/api/threads/", token, {"title": "llm"})
        assert status == 201
        async with websockets.connect(
            f"{server.ws}/ws/chat/{created['id']}/",
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            assert json.loads(await ws.recv())["type"] == "connection_established"
            await ws.send(
                json.dumps(
                    {"type": "user_message", "text": "6*7?", "client_msg_id": uuid.uuid4().hex}
                )
            )
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1].get("type") != "agent_completed":
                frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        events = [f for f in frames if "seq" in f]
        assert_run_invariants(events)
        assert events[0]["data"]["agent"] == "openai"
        completed = of_type(events, "tool_completed")
        assert [c["status"] for c in completed] == ["error", "ok"]
        assert completed[0]["error"]["code"] == "bad_arguments"
        assert completed[1]["result"]["value"] == 42
        assert events[-1]["data"] == {**events[-1]["data"], "status": "completed"}
        assert events[-1]["data"]["text"] == "6*7 = 42."
        assert API_KEY not in server.log_text()
    finally:
        await fake.stop()
