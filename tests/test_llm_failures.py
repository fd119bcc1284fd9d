"""The OpenAI-compatible agent's typed failures, retries, context window, tool choice and
timeouts, against the testing kit's scripted chat-completions server (agents.testing)."""

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from agents.providers.openai_compat.context import MESSAGE_OVERHEAD, estimate_tokens
from agents.testing import (
    API_KEY,
    Reply,
    ScriptedLLM,
    assert_run_invariants,
    call_piece,
    call_start,
    text_chunks,
    tool_chunks,
)
from tests import helpers
from tests.llm import assert_failed, chat, llm_count, of_type

pytestmark = [pytest.mark.django_db(transaction=True)]

THREAD_AGENT = "openai"


# --- failures --------------------------------------------------------------------------------


async def test_unreachable_server_is_llm_unavailable(
    thread: Any,
    token: str,
    scripted_llm: ScriptedLLM,
    service: Any,
    sentry_events: list[dict[str, Any]],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    scripted_llm.point(base_url=f"http://127.0.0.1:{closed_port}/v1")
    before = llm_count("unavailable")

    events = await chat(thread, token, "hello?")

    assert_failed(events, "llm_unavailable", retryable=True)
    assert llm_count("unavailable") == before + 3, "first try and two bounded retries"
    assert sentry_events == []


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A loopback port whose accept queue is full, so that connecting to it hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in [*fillers, listener]:
        sock.close()


async def test_connect_timeout_is_llm_unavailable(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any, blackhole_port: int
) -> None:
    before = llm_count("unavailable")
    scripted_llm.point(
        base_url=f"http://127.0.0.1:{blackhole_port}/v1", connect_timeout=0.3, max_retries=0
    )
    events = await chat(thread, token, "hello?")
    assert_failed(events, "llm_unavailable", retryable=True)
    assert llm_count("unavailable") == before + 1, "a server never reached, not a slow model"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_llm_auth(
    status: int,
    thread: Any,
    token: str,
    scripted_llm: ScriptedLLM,
    sentry_events: list[dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "type": "auth"}}
    scripted_llm.script(Reply(status=status, body=body))
    before = llm_count("auth")

    events = await chat(thread, token, "hello")

    assert_failed(events, "llm_auth", retryable=False)
    assert len(scripted_llm.requests) == 1, "credentials are not retried"
    assert llm_count("auth") == before + 1
    assert API_KEY not in json.dumps(events) and API_KEY not in caplog.text
    assert sentry_events == []


async def test_rate_limit_is_retried_after_retry_after(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=429, headers={"retry-after-ms": "10"}),
        Reply(chunks=text_chunks("Made it.")),
    )
    events = await chat(thread, token, "hello")
    assert events[-1]["data"] == {**events[-1]["data"], "status": "completed", "text": "Made it."}
    assert len(scripted_llm.requests) == 3


async def test_rate_limit_gives_up_after_the_bound(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = Reply(status=429, headers={"Retry-After": "0"})
    before = llm_count("rate_limited")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_rate_limited", retryable=True)
    assert len(scripted_llm.requests) == 3
    assert llm_count("rate_limited") == before + 3


async def test_rate_limit_longer_than_the_bound_fails_at_once(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = Reply(status=429, headers={"Retry-After": "3600"})
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_rate_limited", retryable=True)
    assert len(scripted_llm.requests) == 1


async def test_server_errors_are_retried_then_llm_error(
    thread: Any, token: str, scripted_llm: ScriptedLLM, sentry_events: list[dict[str, Any]]
) -> None:
    scripted_llm.default = Reply(status=500, body={"error": {"message": "overloaded"}})
    before = llm_count("server_error")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert len(scripted_llm.requests) == 3
    assert llm_count("server_error") == before + 3
    assert sentry_events == []


async def test_one_server_error_then_an_answer(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(status=503), Reply(chunks=text_chunks("Back.")))
    events = await chat(thread, token, "hello")
    assert events[-1]["data"]["status"] == "completed" and events[-1]["data"]["text"] == "Back."


async def test_other_client_errors_are_llm_error_with_the_reason(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(status=404, body={"error": {"message": "model 'x' not found"}}))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=False)
    assert "model 'x' not found" in events[-2]["data"]["message"]
    assert len(scripted_llm.requests) == 1


async def test_error_event_in_the_stream_is_llm_error(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    error = json.dumps({"error": {"message": "the model crashed", "type": "server_error"}})
    scripted_llm.script(Reply(chunks=text_chunks("Part", finish_reason="")[:2], raw_events=[error]))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "the model crashed" in events[-2]["data"]["message"]


async def test_a_stream_ending_without_a_finish_reason_is_a_failure_not_a_completion(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(chunks=text_chunks("Hel", "lo")[:-1], done=False))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "without finishing it" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Hello", "the partial answer is kept"
    assert len(scripted_llm.requests) == 1


CONTEXT_ERROR = {
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you "
        "requested 5031 tokens (5031 in the messages, None in the completion).",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
}


async def test_an_empty_stream_over_the_context_window_is_llm_context_exceeded(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    # llama-cpp-python answers a prompt over its window with HTTP 200 and an empty body;
    # unstreamed, the same request gets the error that names the context.
    scripted_llm.script(Reply(chunks=[], done=False), Reply(status=400, body=CONTEXT_ERROR))
    before = llm_count("context_exceeded")
    events = await chat(thread, token, "a long message")

    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert "context window" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == ""
    asked_again = scripted_llm.requests[1].body
    assert asked_again.get("stream") is not True and asked_again["max_tokens"] == 1
    assert asked_again["messages"] == scripted_llm.requests[0].body["messages"]
    assert llm_count("context_exceeded") == before + 1


async def test_an_empty_stream_for_another_reason_is_llm_error(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(chunks=[], done=False), Reply(status=500))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "before sending any of it" in events[-2]["data"]["message"]
    assert len(scripted_llm.requests) == 2


async def test_a_context_error_body_is_llm_context_exceeded_at_once(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(status=400, body=CONTEXT_ERROR))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert len(scripted_llm.requests) == 1


async def test_a_validation_error_is_not_retried(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    detail = "1 validation error: {'msg': 'Input should be a valid string'}"
    scripted_llm.script(Reply(status=500, body={"error": {"message": detail}}))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=False)
    assert "Input should be a valid string" in events[-2]["data"]["message"]
    assert len(scripted_llm.requests) == 1


async def test_the_turn_after_a_tool_call_is_accepted_by_a_strict_server(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    # The fake server refuses a message whose content is not a string, as
    # llama-cpp-python does; the tool-call turn used to carry "content": null.
    scripted_llm.script(
        Reply(chunks=tool_chunks(call_start(0, "call_c", "clock"), call_piece(0, "{}"))),
        Reply(chunks=text_chunks("It is late.")),
    )
    events = await chat(thread, token, "what time is it?")

    assert not of_type(events, "agent_error")
    assert events[-1]["data"]["text"] == "It is late."
    followup = scripted_llm.requests[1].body["messages"]
    assert followup[-2]["role"] == "assistant" and followup[-2]["content"] == ""
    assert all(isinstance(m["content"], str) for m in followup)


async def test_a_connection_dropped_mid_answer_says_so(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(Reply(chunks=text_chunks("Part of ", "an answer")[:-1], drop=True))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_unavailable", retryable=True)
    assert "dropped the connection mid-answer" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Part of an answer"
    assert len(scripted_llm.requests) == 1


async def test_a_message_over_the_context_window_fails_before_asking(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any
) -> None:
    scripted_llm.point(context_tokens=1024)
    events = await chat(thread, token, "The quick brown fox jumps over the lazy dog. " * 100)
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert "AGENT_CONTEXT_TOKENS" in events[-2]["data"]["message"]
    assert scripted_llm.requests == []


async def test_the_history_is_fitted_into_the_context_window(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any
) -> None:
    scripted_llm.point(context_tokens=2048)
    scripted_llm.default = Reply(chunks=text_chunks("Noted."))
    for index in range(6):
        await chat(thread, token, f"note {index}: " + "lorem ipsum dolor sit amet " * 40)
    sent = scripted_llm.requests[-1].body
    tokens = sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in sent["messages"])
    tokens += estimate_tokens(json.dumps(sent["tools"]))
    assert tokens <= 2048 - 512, "the answer's reserve stays free"
    assert 2 < len(sent["messages"]) < 11, "the most recent earlier messages are kept"
    assert sent["messages"][-1]["content"].startswith("note 5:")


@pytest.mark.parametrize(
    ("choice", "first", "second"),
    [
        ("auto", None, None),
        ("required", "required", None),
        ("clock", {"type": "function", "function": {"name": "clock"}}, None),
        ("none", None, None),
    ],
)
async def test_tool_choice(
    thread: Any,
    token: str,
    scripted_llm: ScriptedLLM,
    service: Any,
    choice: str,
    first: Any,
    second: Any,
) -> None:
    scripted_llm.point(tool_choice=choice)
    if choice == "none":
        scripted_llm.script(Reply(chunks=text_chunks("No tools.")))
    else:
        scripted_llm.script(
            Reply(chunks=tool_chunks(call_start(0, "call_t", "clock"), call_piece(0, "{}"))),
            Reply(chunks=text_chunks("Done.")),
        )
    events = await chat(thread, token, "what time is it?")

    assert events[-1]["data"]["status"] == "completed"
    bodies = [request.body for request in scripted_llm.requests]
    assert bodies[0].get("tool_choice") == first
    assert ("tools" in bodies[0]) is (choice != "none"), "none offers no tools"
    if len(bodies) > 1:
        assert bodies[1].get("tool_choice") == second, "only the first step is forced"


async def test_max_output_tokens_is_sent_only_when_set(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any
) -> None:
    scripted_llm.script(Reply(chunks=text_chunks("One.")), Reply(chunks=text_chunks("Two.")))
    await chat(thread, token, "hello")
    scripted_llm.point(max_output_tokens=64)
    await chat(thread, token, "hello again")
    assert "max_tokens" not in scripted_llm.requests[0].body
    assert scripted_llm.requests[1].body["max_tokens"] == 64


async def test_idle_stream_is_llm_timeout_and_closes_the_request(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any
) -> None:
    scripted_llm.point(idle_timeout=0.5)
    scripted_llm.script(
        Reply(chunks=text_chunks("Thinking about", finish_reason="")[:2], hold=True)
    )
    before = llm_count("timeout")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_timeout", retryable=True)
    assert "sent nothing" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Thinking about"
    assert llm_count("timeout") == before + 1
    await asyncio.wait_for(scripted_llm.closed_by_client.wait(), timeout=10)


async def test_request_timeout_is_llm_timeout(
    thread: Any, token: str, scripted_llm: ScriptedLLM, service: Any
) -> None:
    scripted_llm.point(request_timeout=0.5)
    scripted_llm.script(
        Reply(chunks=text_chunks("Slow", finish_reason="")[:2], hold=True, trickle=0.05)
    )
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_timeout", retryable=True)
    assert "did not finish" in events[-2]["data"]["message"]
    await asyncio.wait_for(scripted_llm.closed_by_client.wait(), timeout=10)


@pytest.mark.parametrize(
    ("finish_reason", "code"), [("length", "llm_length"), ("content_filter", "llm_content_filter")]
)
async def test_cut_off_answers_are_reported(
    finish_reason: str, code: str, thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=text_chunks("An answer that stops", finish_reason=finish_reason))
    )
    before = llm_count(finish_reason)
    events = await chat(thread, token, "hello")
    assert_failed(events, code, retryable=False)
    assert events[-1]["data"]["text"] == "An answer that stops"
    assert llm_count(finish_reason) == before + 1


async def test_cancel_mid_stream_closes_the_upstream_request(
    thread: Any, token: str, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=text_chunks("Once upon a time", finish_reason="")[:2], hold=True)
    )
    before = llm_count("cancelled")
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("tell me a long story"))
    frames = await helpers.receive_until(comm, lambda f: f.get("type") == "partial_result")
    assert not scripted_llm.closed_by_client.is_set()
    await helpers.send(comm, {"type": "cancel", "run_id": frames[0]["run_id"]})
    frames += await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()

    events = helpers.run_events(frames)
    assert_run_invariants(events)
    assert events[-1]["data"]["status"] == "cancelled"
    assert events[-1]["data"]["text"] == "Once upon a time"
    await asyncio.wait_for(scripted_llm.closed_by_client.wait(), timeout=10)
    assert llm_count("cancelled") == before + 1
