"""The testing kit (agents.testing): run_agent with an instance and with a name,
assert_run_invariants catching each broken invariant, and the scripted_llm server's
replies, tool calls, delays, failures and strict message validation."""

import asyncio
import copy
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from channels.db import database_sync_to_async

from agents.testing import (
    Reply,
    ScriptedLLM,
    assert_run_invariants,
    error_reply,
    run_agent,
    text_chunks,
    text_reply,
    tool_call_reply,
)
from tests import helpers
from tests.agentmods.good import EchoAgent

pytestmark = [pytest.mark.django_db(transaction=True)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# --- run_agent -------------------------------------------------------------------------------


async def test_run_agent_with_an_instance(service: Any) -> None:
    events = await run_agent(EchoAgent(), "2**10")
    assert_run_invariants(events)
    assert types(events) == [
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "partial_result",
        "agent_completed",
    ]
    assert events[0]["data"]["agent"] == "echo"
    assert events[3]["data"]["result"]["value"] == 1024
    assert events[-1]["data"]["text"] == "It is 1024."
    assert service.agents.get("echo") is None, "the instance was reachable for the run only"


async def test_run_agent_with_a_name_on_a_given_thread(user: Any, service: Any) -> None:
    thread = await database_sync_to_async(helpers.make_thread)(user)
    first = await run_agent("builtin", "what is 12*7", user=user, thread=thread)
    second = await run_agent("builtin", "and 2+3", user=user, thread=thread)
    for events in (first, second):
        assert_run_invariants(events)
        assert {e["run_id"] for e in events} == {events[0]["run_id"]}, "one run's events only"
    assert first[-1]["data"]["text"] == "`12*7` = 84."
    assert second[0]["seq"] == first[-1]["seq"] + 1
    assert second[-1]["data"]["text"] == "`2+3` = 5."


async def test_run_agent_refuses_an_unknown_name() -> None:
    with pytest.raises(LookupError, match="'nobody'"):
        await run_agent("nobody", "hello")


# --- assert_run_invariants -------------------------------------------------------------------


@pytest.fixture
async def whole_run(service: Any) -> list[dict[str, Any]]:
    """A real run with a tool call: thinking, executing, completed, partial, completed."""
    return await run_agent(EchoAgent(), "6*7")


def broken(events: list[dict[str, Any]], how: str) -> list[dict[str, Any]]:
    """Returns a copy of a whole run with one invariant broken."""
    events = copy.deepcopy(events)
    by_type = {e["type"]: e for e in events}
    if how == "no agent_started":
        events.remove(by_type["agent_started"])
    elif how == "agent_completed twice":
        events.append({**copy.deepcopy(events[-1]), "seq": events[-1]["seq"] + 1})
    elif how == "seq gap":
        for event in events[3:]:
            event["seq"] += 1
    elif how == "seq out of order":
        events[1]["seq"], events[2]["seq"] = events[2]["seq"], events[1]["seq"]
    elif how == "unpaired tool call":
        events.remove(by_type["tool_completed"])
    elif how == "tool before thinking":
        events.remove(by_type["agent_thinking"])
    elif how == "text mismatch":
        by_type["agent_completed"]["data"]["text"] = "something else"
    elif how == "failed without agent_error":
        by_type["agent_completed"]["data"]["status"] = "failed"
    elif how == "agent_error not last":
        error = {
            **copy.deepcopy(by_type["agent_thinking"]),
            "type": "agent_error",
            "data": {"code": "x", "message": "x", "retryable": False},
        }
        events.insert(2, error)
    return events


BROKEN_INVARIANTS = {
    "no agent_started": "agent_started is not first exactly once",
    "agent_completed twice": "agent_completed is not last exactly once",
    "seq gap": "its seqs have a gap",
    "seq out of order": "seqs are not strictly increasing",
    "unpaired tool call": "agent_completed with unpaired tool calls",
    "tool before thinking": "tool_executing before any agent_thinking",
    "text mismatch": "partial_result texts do not add up to agent_completed.text",
    "failed without agent_error": "a failed run has no agent_error",
    "agent_error not last": "agent_error is not directly before agent_completed, once",
}


async def test_a_whole_run_passes(whole_run: list[dict[str, Any]]) -> None:
    assert_run_invariants(whole_run)


@pytest.mark.parametrize("how", sorted(BROKEN_INVARIANTS))
async def test_each_broken_invariant_is_named(whole_run: list[dict[str, Any]], how: str) -> None:
    with pytest.raises(AssertionError) as caught:
        assert_run_invariants(broken(whole_run, how))
    message = str(caught.value)
    assert BROKEN_INVARIANTS[how] in message
    assert f"run {whole_run[0]['run_id']}" in message, "the broken run is named"


def test_no_events_is_a_broken_run() -> None:
    with pytest.raises(AssertionError, match="no events"):
        assert_run_invariants([])


async def test_two_broken_invariants_are_both_named(whole_run: list[dict[str, Any]]) -> None:
    events = broken(broken(whole_run, "unpaired tool call"), "text mismatch")
    with pytest.raises(AssertionError) as caught:
        assert_run_invariants(events)
    assert BROKEN_INVARIANTS["unpaired tool call"] in str(caught.value)
    assert BROKEN_INVARIANTS["text mismatch"] in str(caught.value)


# --- scripted_llm ----------------------------------------------------------------------------


async def test_scripted_replies_are_streamed_to_the_openai_agent(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.script(text_reply("Hello ", "from ", "the script."))
    events = await run_agent("openai", "hi")
    assert_run_invariants(events)
    assert events[0]["data"]["agent"] == "openai"
    assert events[-1]["data"]["text"] == "Hello from the script."
    (request,) = scripted_llm.requests
    assert request.body["stream"] is True
    assert request.body["messages"][-1] == {"role": "user", "content": "hi"}


async def test_scripted_tool_calls_run_and_their_results_go_back(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.script(
        tool_call_reply(("calculator", {"expression": "6*7"}), "clock"),
        text_reply("42, and it is late."),
    )
    events = await run_agent("openai", "6*7 and the time?")
    assert_run_invariants(events)
    done = [e["data"] for e in events if e["type"] == "tool_completed"]
    assert [(d["tool"], d["status"]) for d in done] == [("calculator", "ok"), ("clock", "ok")]
    assert done[0]["result"]["value"] == 42
    tool_messages = [m for m in scripted_llm.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_0_calculator", "call_1_clock"]
    assert events[-1]["data"]["text"] == "42, and it is late."


async def test_scripted_delays_slow_the_answer(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(
        Reply(chunks=text_chunks("slow ", "and ", "steady"), delay=0.3, chunk_delay=0.1)
    )
    started = time.monotonic()
    events = await run_agent("openai", "take your time")
    assert time.monotonic() - started >= 0.3 + 4 * 0.1
    assert_run_invariants(events)
    assert events[-1]["data"]["text"] == "slow and steady"


async def test_a_delay_past_the_agents_timeout_is_llm_timeout(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.point(request_timeout=0.3, max_retries=0)
    scripted_llm.script(text_reply("too late", delay=2.0))
    events = await run_agent("openai", "hello")
    assert_run_invariants(events)
    assert events[-2]["data"]["code"] == "llm_timeout"


@pytest.mark.parametrize(
    ("reply", "code", "requests"),
    [
        (error_reply(500, "overloaded"), "llm_error", 3),
        (error_reply(401, "bad key"), "llm_auth", 1),
        (error_reply(429), "llm_rate_limited", 3),
        (Reply(chunks=text_chunks("cut")[:-1], drop=True), "llm_unavailable", 1),
    ],
)
async def test_scripted_failures_are_typed(
    scripted_llm: ScriptedLLM, reply: Reply, code: str, requests: int
) -> None:
    scripted_llm.default = reply
    events = await run_agent("openai", "hello")
    assert_run_invariants(events)
    assert types(events)[-2:] == ["agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == code
    assert len(scripted_llm.requests) == requests


async def test_the_server_validates_messages_like_llama_cpp(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.script(text_reply("never sent"))
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": None}]}

    def post() -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{scripted_llm.url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    status, error = await asyncio.to_thread(post)
    assert status == 500
    assert "Input should be a valid string" in error["error"]["message"]
