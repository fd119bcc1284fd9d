"""The OpenAI-compatible provider against a chat-completions server written here.

The server speaks real HTTP/1.1 on loopback and streams server-sent events shaped like
the chat-completions API (`data: {chunk}` ... `data: [DONE]`, chunked transfer encoding);
the official client talks to it unmocked. Runs go through the real socket path.
"""

import asyncio
import contextlib
import json
import logging
import socket
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import sentry_sdk
import websockets
from prometheus_client import REGISTRY

from agents.checks import check_llm_provider
from agents.invariants import run_violations
from agents.providers.openai_compat import (
    DeltaCoalescer,
    OpenAICompatAgent,
    ProviderConfig,
    build_messages,
    retry_delay,
    url_problem,
)
from agents.providers.openai_compat.context import MESSAGE_OVERHEAD, estimate_tokens
from tests import helpers
from tests.servers import Server, running

pytestmark = [pytest.mark.django_db(transaction=True)]

API_KEY = "sk-test-SECRET-0123456789abcdef"
MODEL = "test-model"


# --- the fake chat-completions server --------------------------------------------------------


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk`, as the streaming API sends it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def text_chunks(*pieces: str, finish_reason: str = "stop") -> list[dict[str, Any]]:
    """A streamed text answer: the role chunk, one chunk per piece, the finish chunk."""
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, finish_reason),
    ]


def call_start(index: int, call_id: str, name: str) -> dict[str, Any]:
    """The first delta of a tool call: its index, id and name, no arguments yet."""
    return {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }


def call_piece(index: int, arguments: str) -> dict[str, Any]:
    """A later delta of a tool call: a piece of its arguments."""
    return {"index": index, "function": {"arguments": arguments}}


def tool_chunks(*deltas: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed tool-call answer: one chunk per tool-call delta, then finish tool_calls."""
    first = {"role": "assistant", "content": None, "refusal": None}
    return [
        chunk({**first, "tool_calls": [deltas[0]]}),
        *(chunk({"tool_calls": [delta]}) for delta in deltas[1:]),
        chunk({}, "tool_calls"),
    ]


@dataclass
class Reply:
    """One scripted answer of the fake server."""

    status: int = 200
    chunks: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw_events: list[str] = field(default_factory=list)  # `data:` payloads sent as they are
    hold: bool = False  # after the chunks, keep the stream open until the client closes it
    trickle: float = 0.0  # with hold: send a content delta every `trickle` seconds
    done: bool = True  # end with `data: [DONE]` (llama-cpp-python's empty stream does not)
    drop: bool = False  # after the chunks, close the connection mid-body


@dataclass
class Request:
    """What the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def strict_schema(request: Request) -> Reply | None:
    """The answer of the strictest servers to a message whose content is not a string:
    llama-cpp-python's validation error (HTTP 500), whatever was scripted."""
    for index, message in enumerate(request.body.get("messages", [])):
        if not isinstance(message.get("content"), str):
            detail = (
                f"1 validation error: {{'type': 'string_type', 'loc': ('body', 'messages', "
                f"{index}, 'content'), 'msg': 'Input should be a valid string'}}"
            )
            return Reply(status=500, body={"error": {"message": detail, "type": "server"}})
    return None


class FakeLLM:
    """An OpenAI-compatible chat-completions server on a loopback port."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.requests: list[Request] = []
        self.closed_by_client = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL a client is configured with."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> "FakeLLM":
        """Starts listening."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stops listening and ends open connections."""
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    def script(self, *replies: Reply) -> None:
        """Queues replies, one per request, in order."""
        self.replies.extend(replies)

    def config(self, **overrides: Any) -> ProviderConfig:
        """A provider configuration pointing at this server, fast retries."""
        values: dict[str, Any] = {
            "base_url": self.url,
            "model": MODEL,
            "api_key": API_KEY,
            "system_prompt": "You are a test assistant.",
            "max_steps": 4,
            "request_timeout": 30.0,
            "idle_timeout": 10.0,
            "max_retries": 2,
            "retry_base": 0.01,
            "retry_max_wait": 5.0,
        }
        values.update(overrides)
        return ProviderConfig(**values)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                reply = self.replies.popleft() if self.replies else self.default
                assert reply is not None, "the fake server ran out of scripted replies"
                reply = strict_schema(request) or reply
                if not await self._respond(reply, reader, writer):
                    return
        except ConnectionError:
            self.closed_by_client.set()
        finally:
            self.handlers.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(path=path, headers=headers, body=json.loads(body or b"{}"))

    async def _respond(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Sends one reply; False when the connection is over."""
        if reply.status != 200:
            body = json.dumps(reply.body or {"error": {"message": "error", "type": "test"}})
            head = [f"HTTP/1.1 {reply.status} Error", "Content-Type: application/json"]
            head += [f"{k}: {v}" for k, v in reply.headers.items()]
            head.append(f"Content-Length: {len(body.encode())}")
            writer.write(("\r\n".join(head) + "\r\n\r\n" + body).encode())
            await writer.drain()
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for payload in [json.dumps(c) for c in reply.chunks] + reply.raw_events:
            await self._send(writer, f"data: {payload}\n\n")
        if reply.hold:
            await self._hold(reply, reader, writer)
            return False
        if reply.drop:
            return False
        if reply.done:
            await self._send(writer, "data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def _hold(
        self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Keeps the response open until the client closes the connection."""
        eof = asyncio.ensure_future(reader.read(1))
        while True:
            done, _ = await asyncio.wait({eof}, timeout=reply.trickle or None)
            if done:
                break
            await self._send(writer, f"data: {json.dumps(chunk({'content': '.'}))}\n\n")
        self.closed_by_client.set()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode()
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()


@pytest.fixture
async def llm(service: Any) -> AsyncIterator[FakeLLM]:
    """The fake server, and the service's agent pointed at it for the test."""
    server = await FakeLLM().start()
    original = service.agent
    service.agent = OpenAICompatAgent(server.config())
    try:
        yield server
    finally:
        await service.wait_idle(timeout=20)
        service.agent = original
        await server.stop()


@pytest.fixture
def sentry_events(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What would have gone to Sentry."""
    captured: list[BaseException] = []
    monkeypatch.setattr(sentry_sdk, "capture_exception", captured.append)
    return captured


def llm_count(outcome: str) -> float:
    """The current value of netra_llm_requests_total{outcome}."""
    return REGISTRY.get_sample_value("netra_llm_requests_total", {"outcome": outcome}) or 0.0


async def chat(thread: Any, token: str, text: str) -> list[dict[str, Any]]:
    """Sends one message over a socket; returns the run's events, checked for invariants."""
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message(text))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=30)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert run_violations(events) == []
    return events


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The data of the events of one type."""
    return [e["data"] for e in events if e["type"] == kind]


def assert_failed(events: list[dict[str, Any]], code: str, *, retryable: bool) -> None:
    """The run ended with agent_error{code} then agent_completed{failed}."""
    assert [e["type"] for e in events[-2:]] == ["agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == code
    assert events[-2]["data"]["retryable"] is retryable
    assert events[-1]["data"]["status"] == "failed"


# --- streamed answers ------------------------------------------------------------------------


async def test_plain_streamed_answer(
    thread: Any, token: str, llm: FakeLLM, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = "Hello! " + "The quick brown fox jumps over the lazy dog. " * 6
    pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]
    reasoning = chunk({"role": "assistant", "reasoning_content": "The user greets me."})
    llm.script(Reply(chunks=[reasoning, *text_chunks(*pieces)]))
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

    (request,) = llm.requests
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


async def test_earlier_messages_go_to_the_model(thread: Any, token: str, llm: FakeLLM) -> None:
    llm.script(Reply(chunks=text_chunks("Paris.")), Reply(chunks=text_chunks("About 2.1 million.")))
    await chat(thread, token, "capital of France?")
    await chat(thread, token, "and its population?")
    assert llm.requests[1].body["messages"][1:] == [
        {"role": "user", "content": "capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "and its population?"},
    ]


# --- tool calling ----------------------------------------------------------------------------


async def test_tool_call_with_arguments_split_over_chunks(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(
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

    followup = llm.requests[1].body["messages"]
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


async def test_two_parallel_tool_calls(thread: Any, token: str, llm: FakeLLM) -> None:
    llm.script(
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
    tool_messages = [m for m in llm.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_one", "call_two"]
    assert json.loads(tool_messages[1]["content"])["error"]["code"] == "division_by_zero"
    assert events[-1]["data"]["status"] == "completed"


async def test_invalid_json_arguments_are_bad_arguments_and_the_model_is_told(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(
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
    followup = llm.requests[1].body["messages"]
    assert followup[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    told = json.loads(followup[-1]["content"])
    assert told["error"]["code"] == "bad_arguments" and "not valid JSON" in told["error"]["message"]
    assert events[-1]["data"]["status"] == "completed"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_in_arguments_are_bad_arguments_not_a_failed_run(
    thread: Any, token: str, llm: FakeLLM, constant: str
) -> None:
    arguments = f'{{"expression": {constant}}}'
    llm.script(
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
    followup = llm.requests[1].body["messages"]
    assert followup[-2]["tool_calls"][0]["function"]["arguments"] == "{}"
    told = json.loads(followup[-1]["content"])
    assert told["error"]["code"] == "bad_arguments" and constant in told["error"]["message"]
    assert events[-1]["data"]["status"] == "completed"


async def test_unknown_tool_is_reported_and_the_model_is_told(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(
        Reply(chunks=tool_chunks(call_start(0, "call_x", "teleport"), call_piece(0, "{}"))),
        Reply(chunks=text_chunks("I cannot teleport.")),
    )
    events = await chat(thread, token, "teleport me")

    (completed,) = of_type(events, "tool_completed")
    assert completed["error"]["code"] == "unknown_tool" and completed["tool"] == "teleport"
    told = json.loads(llm.requests[1].body["messages"][-1]["content"])
    assert told["error"]["code"] == "unknown_tool"
    assert events[-1]["data"]["text"] == "I cannot teleport."


async def test_max_steps(thread: Any, token: str, llm: FakeLLM, service: Any) -> None:
    service.agent = OpenAICompatAgent(llm.config(max_steps=2))
    llm.default = Reply(chunks=tool_chunks(call_start(0, "", "clock"), call_piece(0, "{}")))
    events = await chat(thread, token, "loop forever")

    assert_failed(events, "max_steps", retryable=False)
    assert len(llm.requests) == 2
    ids = [e["tool_call_id"] for e in of_type(events, "tool_executing")]
    assert len(ids) == 1 and ids[0].startswith("call_"), "a missing id is generated"


# --- failures --------------------------------------------------------------------------------


async def test_unreachable_server_is_llm_unavailable(
    thread: Any, token: str, llm: FakeLLM, service: Any, sentry_events: list[BaseException]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    service.agent = OpenAICompatAgent(llm.config(base_url=f"http://127.0.0.1:{closed_port}/v1"))
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
    thread: Any, token: str, llm: FakeLLM, service: Any, blackhole_port: int
) -> None:
    before = llm_count("unavailable")
    service.agent = OpenAICompatAgent(
        llm.config(
            base_url=f"http://127.0.0.1:{blackhole_port}/v1", connect_timeout=0.3, max_retries=0
        )
    )
    events = await chat(thread, token, "hello?")
    assert_failed(events, "llm_unavailable", retryable=True)
    assert llm_count("unavailable") == before + 1, "a server never reached, not a slow model"


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_llm_auth(
    status: int,
    thread: Any,
    token: str,
    llm: FakeLLM,
    sentry_events: list[BaseException],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"error": {"message": f"Incorrect API key provided: {API_KEY}", "type": "auth"}}
    llm.script(Reply(status=status, body=body))
    before = llm_count("auth")

    events = await chat(thread, token, "hello")

    assert_failed(events, "llm_auth", retryable=False)
    assert len(llm.requests) == 1, "credentials are not retried"
    assert llm_count("auth") == before + 1
    assert API_KEY not in json.dumps(events) and API_KEY not in caplog.text
    assert sentry_events == []


async def test_rate_limit_is_retried_after_retry_after(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=429, headers={"retry-after-ms": "10"}),
        Reply(chunks=text_chunks("Made it.")),
    )
    events = await chat(thread, token, "hello")
    assert events[-1]["data"] == {**events[-1]["data"], "status": "completed", "text": "Made it."}
    assert len(llm.requests) == 3


async def test_rate_limit_gives_up_after_the_bound(thread: Any, token: str, llm: FakeLLM) -> None:
    llm.default = Reply(status=429, headers={"Retry-After": "0"})
    before = llm_count("rate_limited")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_rate_limited", retryable=True)
    assert len(llm.requests) == 3
    assert llm_count("rate_limited") == before + 3


async def test_rate_limit_longer_than_the_bound_fails_at_once(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.default = Reply(status=429, headers={"Retry-After": "3600"})
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_rate_limited", retryable=True)
    assert len(llm.requests) == 1


async def test_server_errors_are_retried_then_llm_error(
    thread: Any, token: str, llm: FakeLLM, sentry_events: list[BaseException]
) -> None:
    llm.default = Reply(status=500, body={"error": {"message": "overloaded"}})
    before = llm_count("server_error")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert len(llm.requests) == 3
    assert llm_count("server_error") == before + 3
    assert sentry_events == []


async def test_one_server_error_then_an_answer(thread: Any, token: str, llm: FakeLLM) -> None:
    llm.script(Reply(status=503), Reply(chunks=text_chunks("Back.")))
    events = await chat(thread, token, "hello")
    assert events[-1]["data"]["status"] == "completed" and events[-1]["data"]["text"] == "Back."


async def test_other_client_errors_are_llm_error_with_the_reason(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(status=404, body={"error": {"message": "model 'x' not found"}}))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=False)
    assert "model 'x' not found" in events[-2]["data"]["message"]
    assert len(llm.requests) == 1


async def test_error_event_in_the_stream_is_llm_error(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    error = json.dumps({"error": {"message": "the model crashed", "type": "server_error"}})
    llm.script(Reply(chunks=text_chunks("Part", finish_reason="")[:2], raw_events=[error]))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "the model crashed" in events[-2]["data"]["message"]


async def test_a_stream_ending_without_a_finish_reason_is_a_failure_not_a_completion(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(chunks=text_chunks("Hel", "lo")[:-1], done=False))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "without finishing it" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Hello", "the partial answer is kept"
    assert len(llm.requests) == 1


CONTEXT_ERROR = {
    "error": {
        "message": "This model's maximum context length is 4096 tokens. However, you "
        "requested 5031 tokens (5031 in the messages, None in the completion).",
        "type": "invalid_request_error",
        "code": "context_length_exceeded",
    }
}


async def test_an_empty_stream_over_the_context_window_is_llm_context_exceeded(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    # llama-cpp-python answers a prompt over its window with HTTP 200 and an empty body;
    # unstreamed, the same request gets the error that names the context.
    llm.script(Reply(chunks=[], done=False), Reply(status=400, body=CONTEXT_ERROR))
    before = llm_count("context_exceeded")
    events = await chat(thread, token, "a long message")

    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert "context window" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == ""
    asked_again = llm.requests[1].body
    assert asked_again.get("stream") is not True and asked_again["max_tokens"] == 1
    assert asked_again["messages"] == llm.requests[0].body["messages"]
    assert llm_count("context_exceeded") == before + 1


async def test_an_empty_stream_for_another_reason_is_llm_error(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(chunks=[], done=False), Reply(status=500))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=True)
    assert "before sending any of it" in events[-2]["data"]["message"]
    assert len(llm.requests) == 2


async def test_a_context_error_body_is_llm_context_exceeded_at_once(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(status=400, body=CONTEXT_ERROR))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert len(llm.requests) == 1


async def test_a_validation_error_is_not_retried(thread: Any, token: str, llm: FakeLLM) -> None:
    detail = "1 validation error: {'msg': 'Input should be a valid string'}"
    llm.script(Reply(status=500, body={"error": {"message": detail}}))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_error", retryable=False)
    assert "Input should be a valid string" in events[-2]["data"]["message"]
    assert len(llm.requests) == 1


async def test_the_turn_after_a_tool_call_is_accepted_by_a_strict_server(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    # The fake server refuses a message whose content is not a string, as
    # llama-cpp-python does; the tool-call turn used to carry "content": null.
    llm.script(
        Reply(chunks=tool_chunks(call_start(0, "call_c", "clock"), call_piece(0, "{}"))),
        Reply(chunks=text_chunks("It is late.")),
    )
    events = await chat(thread, token, "what time is it?")

    assert not of_type(events, "agent_error")
    assert events[-1]["data"]["text"] == "It is late."
    followup = llm.requests[1].body["messages"]
    assert followup[-2]["role"] == "assistant" and followup[-2]["content"] == ""
    assert all(isinstance(m["content"], str) for m in followup)


async def test_a_connection_dropped_mid_answer_says_so(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(chunks=text_chunks("Part of ", "an answer")[:-1], drop=True))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_unavailable", retryable=True)
    assert "dropped the connection mid-answer" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Part of an answer"
    assert len(llm.requests) == 1


async def test_a_message_over_the_context_window_fails_before_asking(
    thread: Any, token: str, llm: FakeLLM, service: Any
) -> None:
    service.agent = OpenAICompatAgent(llm.config(context_tokens=1024))
    events = await chat(thread, token, "The quick brown fox jumps over the lazy dog. " * 100)
    assert_failed(events, "llm_context_exceeded", retryable=False)
    assert "AGENT_CONTEXT_TOKENS" in events[-2]["data"]["message"]
    assert llm.requests == []


async def test_the_history_is_fitted_into_the_context_window(
    thread: Any, token: str, llm: FakeLLM, service: Any
) -> None:
    service.agent = OpenAICompatAgent(llm.config(context_tokens=2048))
    llm.default = Reply(chunks=text_chunks("Noted."))
    for index in range(6):
        await chat(thread, token, f"note {index}: " + "lorem ipsum dolor sit amet " * 40)
    sent = llm.requests[-1].body
    tokens = sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD for m in sent["messages"])
    tokens += estimate_tokens(json.dumps(sent["tools"]))
    assert tokens <= 2048 - 512, "the answer's reserve stays free"
    assert 2 < len(sent["messages"]) < 11, "the most recent earlier messages are kept"
    assert sent["messages"][-1]["content"].startswith("note 5:")


@pytest.mark.parametrize(
    ("choice", "first", "second"),
    [("auto", "auto", "auto"), ("required", "required", "auto"), ("none", None, None)],
)
async def test_tool_choice(
    thread: Any,
    token: str,
    llm: FakeLLM,
    service: Any,
    choice: str,
    first: str | None,
    second: str | None,
) -> None:
    service.agent = OpenAICompatAgent(llm.config(tool_choice=choice))
    if choice == "none":
        llm.script(Reply(chunks=text_chunks("No tools.")))
    else:
        llm.script(
            Reply(chunks=tool_chunks(call_start(0, "call_t", "clock"), call_piece(0, "{}"))),
            Reply(chunks=text_chunks("Done.")),
        )
    events = await chat(thread, token, "what time is it?")

    assert events[-1]["data"]["status"] == "completed"
    bodies = [request.body for request in llm.requests]
    assert bodies[0].get("tool_choice") == first
    assert ("tools" in bodies[0]) is (choice != "none"), "none offers no tools"
    if len(bodies) > 1:
        assert bodies[1].get("tool_choice") == second, "only the first step is forced"


async def test_idle_stream_is_llm_timeout_and_closes_the_request(
    thread: Any, token: str, llm: FakeLLM, service: Any
) -> None:
    service.agent = OpenAICompatAgent(llm.config(idle_timeout=0.5))
    llm.script(Reply(chunks=text_chunks("Thinking about", finish_reason="")[:2], hold=True))
    before = llm_count("timeout")
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_timeout", retryable=True)
    assert "sent nothing" in events[-2]["data"]["message"]
    assert events[-1]["data"]["text"] == "Thinking about"
    assert llm_count("timeout") == before + 1
    await asyncio.wait_for(llm.closed_by_client.wait(), timeout=10)


async def test_request_timeout_is_llm_timeout(
    thread: Any, token: str, llm: FakeLLM, service: Any
) -> None:
    service.agent = OpenAICompatAgent(llm.config(request_timeout=0.5))
    llm.script(Reply(chunks=text_chunks("Slow", finish_reason="")[:2], hold=True, trickle=0.05))
    events = await chat(thread, token, "hello")
    assert_failed(events, "llm_timeout", retryable=True)
    assert "did not finish" in events[-2]["data"]["message"]
    await asyncio.wait_for(llm.closed_by_client.wait(), timeout=10)


@pytest.mark.parametrize(
    ("finish_reason", "code"), [("length", "llm_length"), ("content_filter", "llm_content_filter")]
)
async def test_cut_off_answers_are_reported(
    finish_reason: str, code: str, thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(chunks=text_chunks("An answer that stops", finish_reason=finish_reason)))
    before = llm_count(finish_reason)
    events = await chat(thread, token, "hello")
    assert_failed(events, code, retryable=False)
    assert events[-1]["data"]["text"] == "An answer that stops"
    assert llm_count(finish_reason) == before + 1


async def test_cancel_mid_stream_closes_the_upstream_request(
    thread: Any, token: str, llm: FakeLLM
) -> None:
    llm.script(Reply(chunks=text_chunks("Once upon a time", finish_reason="")[:2], hold=True))
    before = llm_count("cancelled")
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message("tell me a long story"))
    frames = await helpers.receive_until(comm, lambda f: f.get("type") == "partial_result")
    assert not llm.closed_by_client.is_set()
    await helpers.send(comm, {"type": "cancel", "run_id": frames[0]["run_id"]})
    frames += await helpers.receive_until(comm, helpers.completed)
    await comm.disconnect()

    events = helpers.run_events(frames)
    assert run_violations(events) == []
    assert events[-1]["data"]["status"] == "cancelled"
    assert events[-1]["data"]["text"] == "Once upon a time"
    await asyncio.wait_for(llm.closed_by_client.wait(), timeout=10)
    assert llm_count("cancelled") == before + 1


# --- units: coalescing, retry delays, conversation, configuration ------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_coalescer_emits_by_size_or_interval() -> None:
    clock = FakeClock()
    sent: list[str] = []

    async def emit(text: str) -> None:
        sent.append(text)

    coalescer = DeltaCoalescer(emit, max_chars=10, interval=0.05, clock=clock)
    await coalescer.add("a")
    assert sent == ["a"], "the first delta goes out at once"
    await coalescer.add("bc")
    await coalescer.add("de")
    assert sent == ["a"] and coalescer.due_in() == pytest.approx(0.05)
    clock.now += 0.05
    await coalescer.add("f")
    assert sent == ["a", "bcdef"], "a piece is due after the interval"
    await coalescer.add("0123456789")
    assert sent[-1] == "0123456789", "enough characters go out at once"
    await coalescer.add("tail")
    await coalescer.flush()
    assert "".join(sent) == "abcdef0123456789tail" and coalescer.due_in() is None


def test_retry_delay_honours_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert retry_delay({"retry-after": "2"}, attempt=0, base=1, max_wait=10) == 2
    assert retry_delay({"retry-after-ms": "250"}, attempt=0, base=1, max_wait=10) == 0.25
    date = format_datetime(now + timedelta(seconds=4), usegmt=True)
    assert retry_delay({"retry-after": date}, attempt=0, base=1, max_wait=10, now=now) == 4
    assert retry_delay({"retry-after": "60"}, attempt=0, base=1, max_wait=10) is None
    backoff = retry_delay({}, attempt=3, base=1, max_wait=5)
    assert backoff is not None and 2.5 <= backoff <= 5


def test_conversation_is_bounded_and_alternates() -> None:
    history = [
        {"role": "user", "text": "old question " * 50},
        {"role": "assistant", "text": "old answer"},
        {"role": "user", "text": "unanswered"},
        {"role": "assistant", "text": ""},
    ]
    messages = build_messages(system_prompt="sys", history=history, text="now", budget=100)
    assert messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "unanswered\n\nnow"},
    ]


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.openai.com/v1", True),
        ("http://127.0.0.1:11434/v1", True),
        ("localhost:8080/v1", False),
        ("http://", False),
        ("http://host:99999/v1", False),
        ("ftp://host/v1", False),
    ],
)
def test_base_url_validation(url: str, ok: bool) -> None:
    assert (url_problem(url) is None) is ok


def test_system_check_reports_misconfiguration(settings: Any) -> None:
    settings.AGENT_PROVIDER = "openai"
    settings.AGENT_MODEL = ""
    settings.OPENAI_BASE_URL = "not a url"
    assert {m.id for m in check_llm_provider()} == {"netra.E102", "netra.E103"}
    settings.AGENT_MODEL = "m"
    settings.OPENAI_BASE_URL = "http://127.0.0.1:8080/v1"
    assert check_llm_provider() == []
    settings.AGENT_TOOL_CHOICE = "sometimes"
    settings.AGENT_CONTEXT_TOKENS = 100
    messages = check_llm_provider()
    assert {m.id for m in messages} == {"netra.E105", "netra.E106"}
    assert any("sometimes" in m.msg for m in messages)
    assert any("AGENT_CONTEXT_TOKENS" in m.msg for m in messages)
    settings.AGENT_TOOL_CHOICE = "required"
    settings.AGENT_CONTEXT_TOKENS = 4096
    assert check_llm_provider() == []
    settings.AGENT_PROVIDER = "gpt"
    assert [m.id for m in check_llm_provider()] == ["netra.E101"]


def test_api_key_is_not_in_the_config_repr() -> None:
    assert API_KEY not in repr(ProviderConfig(base_url="http://x/v1", model="m", api_key=API_KEY))


# --- end to end: daphne with AGENT_PROVIDER=openai ---------------------------------------------


@pytest.fixture
def daphne_with(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Starts daphne with extra environment; stops it after the test."""
    servers: list[Any] = []

    def start(env: dict[str, str]) -> Server:
        manager = running(env=env)
        server = manager.__enter__()
        servers.append(manager)
        return server

    yield start
    for manager in servers:
        manager.__exit__(None, None, None)


async def test_daphne_streams_a_model_answer_with_a_tool_call(daphne_with: Any) -> None:
    fake = await FakeLLM().start()
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
        assert run_violations(events) == []
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
