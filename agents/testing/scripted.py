"""A scripted OpenAI-compatible chat-completions server for tests: real HTTP on loopback.

    server = await ScriptedLLM().start()
    server.script(text_reply("Hello ", "there."), tool_call_reply("clock", {}))
    server.point("openai")          # the `openai` agent now talks to it
    ...
    await server.stop()

The `scripted_llm` fixture (agents.testing) does the starting, pointing and stopping.
Replies are written as chunks of the streaming API (`chunk`, `text_chunks`, `tool_chunks`,
`call_start`, `call_piece`), or with the shortcuts `text_reply`, `tool_call_reply` and
`error_reply`; a Reply can also be slow (`delay`, `chunk_delay`), hang (`hold`,
`trickle`), drop the connection (`drop`) or end without `[DONE]` (`done=False`).
"""

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agents.providers.openai_compat import OpenAICompatAgent, ProviderConfig
from agents.registry import AGENTS
from agents.testing.runner import restore_agent, swap_agent

MODEL = "test-model"
API_KEY = "sk-test-SECRET-0123456789abcdef"


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
    """One scripted answer of the server: a stream of chunks (status 200) or an error."""

    status: int = 200
    chunks: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw_events: list[str] = field(default_factory=list)  # `data:` payloads sent as they are
    hold: bool = False  # after the chunks, keep the stream open until the client closes it
    trickle: float = 0.0  # with hold: send a content delta every `trickle` seconds
    done: bool = True  # end with `data: [DONE]` (llama-cpp-python's empty stream does not)
    drop: bool = False  # after the chunks, close the connection mid-body
    delay: float = 0.0  # seconds before the answer starts (a slow model)
    chunk_delay: float = 0.0  # seconds between chunks (a slow stream)


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


class ScriptedLLM:
    """An OpenAI-compatible chat-completions server on a loopback port (real HTTP/1.1,
    server-sent events in chunked transfer encoding), answering each request with the next
    scripted Reply (or `default` when none is left) and keeping what it received in
    `requests`. It validates message shapes as strictly as llama-cpp-python: a message
    whose content is not a string is refused with that server's HTTP 500."""

    model = MODEL
    api_key = API_KEY

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.default: Reply | None = None
        self.requests: list[Request] = []
        self.closed_by_client = asyncio.Event()
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._swaps: list[tuple[str, Any]] = []

    @property
    def url(self) -> str:
        """The base URL a client is configured with."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> "ScriptedLLM":
        """Starts listening."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Puts back the agents `point` replaced, stops listening, ends open connections."""
        while self._swaps:
            name, previous = self._swaps.pop()
            restore_agent(name, previous)
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    def script(self, *replies: Reply) -> None:
        """Queues replies, one per request, in order."""
        self.replies.extend(replies)

    def point(self, name: str = "openai", **overrides: Any) -> OpenAICompatAgent:
        """Points the NETRA_AGENTS agent `name` (an OpenAI-compatible one; default the
        built-in `openai`) at this server until `stop()`: a new instance of its class, with
        `config(**overrides)` and the class's own model, prompt and temperature (the
        built-in `openai` keeps the test model and prompt). Returns the instance."""
        current = AGENTS.get(name)
        cls = type(current) if isinstance(current, OpenAICompatAgent) else OpenAICompatAgent
        config = self.config(**overrides)
        if cls is not OpenAICompatAgent:
            config = cls.configured(config)
        agent = cls(config)
        self._swaps.append((name, swap_agent(name, agent)))
        return agent

    def config(self, **overrides: Any) -> ProviderConfig:
        """A provider configuration pointing at this server, fast retries."""
        values: dict[str, Any] = {
            "base_url": self.url,
            "model": self.model,
            "api_key": self.api_key,
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
        if reply.delay:
            await asyncio.sleep(reply.delay)
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
        for index, payload in enumerate([json.dumps(c) for c in reply.chunks] + reply.raw_events):
            if index and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
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


def text_reply(*pieces: str, finish_reason: str = "stop", **options: Any) -> Reply:
    """A streamed text answer, one chunk per piece."""
    return Reply(chunks=text_chunks(*pieces, finish_reason=finish_reason), **options)


def tool_call_reply(*calls: tuple[str, dict[str, Any]] | str, **options: Any) -> Reply:
    """A streamed answer calling tools: each call a tool name or (name, arguments), sent
    as its start delta then its JSON arguments."""
    deltas = []
    for index, call in enumerate(calls):
        name, args = (call, {}) if isinstance(call, str) else call
        deltas.append(call_start(index, f"call_{index}_{name}", name))
        deltas.append(call_piece(index, json.dumps(args)))
    return Reply(chunks=tool_chunks(*deltas), **options)


def error_reply(status: int, message: str = "error", **options: Any) -> Reply:
    """An HTTP error answer with the API's error body."""
    return Reply(status=status, body={"error": {"message": message, "type": "test"}}, **options)
