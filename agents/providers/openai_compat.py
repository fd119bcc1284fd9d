"""An agent backed by any OpenAI-compatible chat-completions server, streamed, with tools.

A run is a loop of model calls (steps). Each step streams: text deltas become coalesced
partial_result events, reasoning deltas become agent_thinking, tool-call deltas are
assembled by index. When the model asks for tools, each call goes through the dispatcher
(so it is paired) and the results go back to the model in the next step; the loop ends on
an answer without tools, or fails with max_steps. Every upstream failure becomes an
AgentFailure with a typed code and is counted in netra_llm_requests_total{outcome}.
"""

import asyncio
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import openai
from django.conf import settings
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall

from agents.builtin import RunInput
from agents.dispatcher import ToolDispatcher, ToolOutcome
from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from chat import metrics

logger = logging.getLogger("netra.llm")

# Reasoning is shown as agent_thinking steps: coarser than answer text, so that a model
# thinking token by token does not turn into hundreds of steps.
REASONING_FLUSH_CHARS = 400
REASONING_FLUSH_INTERVAL = 1.0
# Fields in which OpenAI-compatible servers stream reasoning (vLLM, llama.cpp, DeepSeek:
# reasoning_content; Ollama, OpenRouter: reasoning).
REASONING_FIELDS = ("reasoning_content", "reasoning")
DETAIL_LIMIT = 300
SECRET_LIKE = re.compile(r"\bsk-[A-Za-z0-9_*-]{6,}")
# The outcomes of netra_llm_requests_total; they start at 0, so that increase() sees the
# first failure of a process.
OUTCOMES = (
    "ok",
    "length",
    "content_filter",
    "unavailable",
    "auth",
    "rate_limited",
    "server_error",
    "rejected",
    "stream_error",
    "timeout",
    "cancelled",
)
for _outcome in OUTCOMES:
    metrics.LLM_REQUESTS.labels(outcome=_outcome)


@dataclass(frozen=True)
class ConfigProblem:
    """One misconfiguration, with the id of the system check that reports it."""

    id: str
    message: str
    hint: str


def url_problem(url: str) -> str | None:
    """Returns why `url` cannot be a chat-completions base URL, or None if it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc})."
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://."
    if not parts.hostname:
        return f"{url!r} has no host."
    if port == 0:
        return f"{url!r} has port 0."
    if parts.query or parts.fragment:
        return f"{url!r} must not have a query or fragment."
    return None


@dataclass(frozen=True)
class ProviderConfig:
    """Everything the provider needs, read once from the settings."""

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    system_prompt: str = ""
    max_steps: int = 8
    request_timeout: float = 120.0
    connect_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_retries: int = 2
    retry_max_wait: float = 20.0
    retry_base: float = 0.5
    history_chars: int = 24000
    flush_chars: int = 64
    flush_interval: float = 0.05

    @classmethod
    def from_settings(cls) -> "ProviderConfig":
        """Reads the LLM provider block of the settings."""
        return cls(
            base_url=settings.OPENAI_BASE_URL,
            model=settings.AGENT_MODEL,
            api_key=settings.OPENAI_API_KEY,
            system_prompt=settings.AGENT_SYSTEM_PROMPT,
            max_steps=settings.AGENT_MAX_STEPS,
            request_timeout=settings.AGENT_LLM_TIMEOUT,
            connect_timeout=settings.AGENT_LLM_CONNECT_TIMEOUT,
            idle_timeout=settings.AGENT_LLM_IDLE_TIMEOUT,
            max_retries=settings.AGENT_LLM_MAX_RETRIES,
            retry_max_wait=settings.AGENT_LLM_RETRY_MAX_WAIT,
            history_chars=settings.AGENT_HISTORY_CHARS,
        )

    def problems(self) -> list[ConfigProblem]:
        """Returns what makes this configuration unusable (empty when it is fine)."""
        found: list[ConfigProblem] = []
        if not self.model.strip():
            found.append(
                ConfigProblem(
                    "netra.E102",
                    "AGENT_PROVIDER is openai but AGENT_MODEL is not set.",
                    "Set AGENT_MODEL to a model the server serves, e.g. gpt-4o-mini or "
                    "qwen2.5:7b (docs/providers.md).",
                )
            )
        problem = url_problem(self.base_url)
        if problem is not None:
            found.append(
                ConfigProblem(
                    "netra.E103",
                    f"OPENAI_BASE_URL {problem}",
                    "Use the server's OpenAI-compatible root, e.g. http://127.0.0.1:11434/v1.",
                )
            )
        elif urlsplit(self.base_url).hostname == "api.openai.com" and not self.api_key:
            found.append(
                ConfigProblem(
                    "netra.E104",
                    "OPENAI_BASE_URL is api.openai.com but OPENAI_API_KEY is not set.",
                    "Set OPENAI_API_KEY, or point OPENAI_BASE_URL at a local server.",
                )
            )
        numbers = {
            "AGENT_MAX_STEPS": self.max_steps >= 1,
            "AGENT_LLM_TIMEOUT": self.request_timeout > 0,
            "AGENT_LLM_CONNECT_TIMEOUT": self.connect_timeout > 0,
            "AGENT_LLM_IDLE_TIMEOUT": self.idle_timeout > 0,
            "AGENT_LLM_MAX_RETRIES": self.max_retries >= 0,
            "AGENT_LLM_RETRY_MAX_WAIT": self.retry_max_wait >= 0,
            "AGENT_HISTORY_CHARS": self.history_chars >= 0,
        }
        for name, ok in numbers.items():
            if not ok:
                found.append(
                    ConfigProblem(
                        "netra.E105",
                        f"{name} is out of range.",
                        "Steps must be at least 1, timeouts above 0, the rest at least 0.",
                    )
                )
        return found

    def redact(self, text: str) -> str:
        """Removes the API key (and anything shaped like one) from text shown or logged."""
        if self.api_key:
            text = text.replace(self.api_key, "[redacted]")
        return SECRET_LIKE.sub("[redacted]", text)


# --- conversation --------------------------------------------------------------------------


def build_messages(
    *, system_prompt: str, history: list[dict[str, str]], text: str, budget: int
) -> list[dict[str, Any]]:
    """Returns the chat messages of a run: the system prompt, the most recent earlier
    messages that fit in `budget` characters, then the user's text.

    Consecutive messages of one role are merged (an unanswered message leaves two user
    turns in a row), since strict chat templates of local servers require alternation,
    and the history never opens with an assistant turn.
    """
    kept: list[dict[str, str]] = []
    used = len(text)
    for item in reversed(history):
        role, content = item.get("role"), item.get("text", "")
        if role not in ("user", "assistant") or not content:
            continue
        if used + len(content) > budget:
            break
        used += len(content)
        kept.append({"role": role, "content": content})
    kept.reverse()
    while kept and kept[0]["role"] == "assistant":
        kept.pop(0)
    turns: list[dict[str, Any]] = []
    for turn in [*kept, {"role": "user", "content": text}]:
        if turns and turns[-1]["role"] == turn["role"]:
            turns[-1]["content"] += "\n\n" + turn["content"]
        else:
            turns.append(dict(turn))
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return system + turns


# --- streaming -----------------------------------------------------------------------------


class DeltaCoalescer:
    """Buffers streamed text and emits it in pieces: at most one piece per `interval`
    seconds, unless `max_chars` have built up first."""

    def __init__(
        self,
        emit: Callable[[str], Awaitable[None]],
        *,
        max_chars: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.max_chars = max_chars
        self.interval = interval
        self.clock = clock
        self.parts: list[str] = []
        self.size = 0
        self.emitted = 0
        self.last_flush = float("-inf")

    async def add(self, text: str) -> None:
        """Takes one delta; emits the buffer if it is big enough or a piece is due."""
        if not text:
            return
        self.parts.append(text)
        self.size += len(text)
        if self.size >= self.max_chars or self.due_in() == 0.0:
            await self.flush()

    def due_in(self) -> float | None:
        """Seconds until the buffer should be emitted; None when it is empty."""
        if not self.size:
            return None
        return max(0.0, self.last_flush + self.interval - self.clock())

    async def flush(self) -> None:
        """Emits whatever is buffered."""
        if not self.size:
            return
        text = "".join(self.parts)
        self.parts.clear()
        self.size = 0
        self.emitted += len(text)
        self.last_flush = self.clock()
        await self.emit(text)


@dataclass
class AssembledCall:
    """One tool call of the model, put together from its streamed pieces."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


class ToolCallAssembler:
    """Assembles streamed tool-call deltas; parallel calls are told apart by index."""

    def __init__(self) -> None:
        self.calls: dict[int, AssembledCall] = {}

    def add(self, deltas: list[ChoiceDeltaToolCall]) -> None:
        """Takes the tool-call deltas of one chunk."""
        for delta in deltas:
            index = delta.index if isinstance(delta.index, int) else self._guess_index(delta)
            call = self.calls.setdefault(index, AssembledCall(index=index))
            if delta.id and not call.id:
                call.id = delta.id
            function = delta.function
            if function is not None:
                if function.name and not call.name:
                    call.name = function.name
                if function.arguments:
                    call.arguments += function.arguments

    def _guess_index(self, delta: ChoiceDeltaToolCall) -> int:
        # A server that sends no index: a new id starts a new call, pieces join the last.
        known = {call.id: index for index, call in self.calls.items() if call.id}
        if delta.id and delta.id not in known:
            return len(self.calls)
        if delta.id:
            return known[delta.id]
        return max(self.calls, default=0)

    def finished(self) -> list[AssembledCall]:
        """Returns the assembled calls in index order."""
        return [self.calls[index] for index in sorted(self.calls)]


@dataclass
class StepResult:
    """What one model call came to."""

    text: str
    tool_calls: list[AssembledCall]
    finish_reason: str | None


class StreamIdleError(Exception):
    """The model server sent nothing for longer than the idle timeout."""


def reasoning_of(delta: ChoiceDelta) -> str:
    """Returns the reasoning text of a delta, where the server sends one."""
    extra = delta.model_extra or {}
    for name in REASONING_FIELDS:
        value = getattr(delta, name, None) or extra.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


async def _next_chunk(iterator: AsyncIterator[ChatCompletionChunk]) -> ChatCompletionChunk | None:
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None


class StreamReader:
    """Reads one streamed model response into events and a StepResult."""

    def __init__(self, emitter: RunEmitter, config: ProviderConfig) -> None:
        self.config = config
        self.text = DeltaCoalescer(
            emitter.partial, max_chars=config.flush_chars, interval=config.flush_interval
        )
        self.reasoning = DeltaCoalescer(
            emitter.thinking, max_chars=REASONING_FLUSH_CHARS, interval=REASONING_FLUSH_INTERVAL
        )
        self.calls = ToolCallAssembler()
        self.answer: list[str] = []
        self.finish_reason: str | None = None

    @property
    def started(self) -> bool:
        """True once anything of this response was taken (a retry would then repeat it)."""
        return bool(
            self.answer or self.calls.calls or self.reasoning.size or self.reasoning.emitted
        )

    async def read(self, stream: AsyncIterator[ChatCompletionChunk]) -> StepResult:
        """Consumes the stream; raises StreamIdleError when it stalls past the idle timeout.

        The next chunk is awaited in its own task, so that buffered text can be flushed
        on time while the model is slow, without cancelling a read half-way.
        """
        loop = asyncio.get_running_loop()
        iterator = aiter(stream)
        pending: asyncio.Task[ChatCompletionChunk | None] | None = None
        last_data = loop.time()
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(_next_chunk(iterator))
                idle_left = last_data + self.config.idle_timeout - loop.time()
                if idle_left <= 0:
                    raise StreamIdleError
                dues = [d for d in (self.text.due_in(), self.reasoning.due_in()) if d is not None]
                done, _ = await asyncio.wait({pending}, timeout=min([idle_left, *dues]))
                if not done:
                    await self._flush_due()
                    continue
                task, pending = pending, None
                chunk = task.result()
                if chunk is None:
                    break
                last_data = loop.time()
                await self._take(chunk)
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.wait({pending})
        await self.flush()
        return StepResult("".join(self.answer), self.calls.finished(), self.finish_reason)

    async def _flush_due(self) -> None:
        for coalescer in (self.reasoning, self.text):
            due = coalescer.due_in()
            if due is not None and due <= 0.002:
                await coalescer.flush()

    async def _take(self, chunk: ChatCompletionChunk) -> None:
        for choice in chunk.choices or []:
            if choice.index:
                continue  # n=1: only the first choice is ours
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            reasoning = reasoning_of(delta)
            if reasoning:
                await self.text.flush()
                await self.reasoning.add(reasoning)
            if delta.content:
                await self.reasoning.flush()
                self.answer.append(delta.content)
                await self.text.add(delta.content)
            if delta.tool_calls:
                self.calls.add(delta.tool_calls)

    async def flush(self) -> None:
        """Emits everything buffered, reasoning first."""
        await self.reasoning.flush()
        await self.text.flush()


# --- failures ------------------------------------------------------------------------------


def retry_delay(
    headers: Any, *, attempt: int, base: float, max_wait: float, now: datetime | None = None
) -> float | None:
    """Returns the seconds to wait before retry `attempt` (0-based): the server's
    Retry-After (or retry-after-ms) when it sends one, else exponential backoff with
    jitter. None when the server asks for longer than `max_wait`: waiting that long
    would hold the run, so it fails at once instead."""
    asked: float | None = None
    millis = headers.get("retry-after-ms") if headers is not None else None
    value = headers.get("retry-after") if headers is not None else None
    if millis:
        try:
            asked = float(millis) / 1000
        except ValueError:
            asked = None
    if asked is None and value:
        try:
            asked = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                asked = (when - (now or datetime.now(UTC))).total_seconds()
    if asked is not None:
        asked = max(0.0, asked)
        return asked if asked <= max_wait else None
    backoff = min(max_wait, base * 2**attempt)
    return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret


def _caused_by_connect(exc: BaseException) -> bool:
    # httpx raises ConnectTimeout / ConnectError under the client's own exceptions; the
    # class names are the stable part across httpx packagings.
    seen: BaseException | None = exc.__cause__ or exc.__context__
    while seen is not None:
        if type(seen).__name__ in ("ConnectTimeout", "ConnectError"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _detail(exc: openai.APIError, config: ProviderConfig) -> str:
    body = exc.body
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
    text = str(message) if message else exc.message
    text = config.redact(" ".join(text.split()))
    return text[:DETAIL_LIMIT]


def classify(exc: openai.APIError, config: ProviderConfig) -> tuple[str, AgentFailure, bool]:
    """Maps a client error to (metric outcome, failure, whether a retry may help)."""
    if isinstance(exc, openai.APITimeoutError) and not _caused_by_connect(exc):
        return "timeout", llm_timeout(config.request_timeout), False
    if isinstance(exc, openai.APIConnectionError):
        return (
            "unavailable",
            AgentFailure(
                "llm_unavailable",
                "The model server could not be reached; try again shortly.",
                retryable=True,
            ),
            True,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            return (
                "auth",
                AgentFailure(
                    "llm_auth",
                    f"The model server refused the credentials (HTTP {status}); "
                    "an operator must check OPENAI_API_KEY.",
                    retryable=False,
                ),
                False,
            )
        if status == 429:
            return (
                "rate_limited",
                AgentFailure(
                    "llm_rate_limited",
                    "The model server is rate limiting requests; try again in a minute.",
                    retryable=True,
                ),
                True,
            )
        if status >= 500:
            return (
                "server_error",
                AgentFailure(
                    "llm_error", f"The model server failed (HTTP {status}).", retryable=True
                ),
                True,
            )
        return (
            "rejected",
            AgentFailure(
                "llm_error",
                f"The model server rejected the request (HTTP {status}): {_detail(exc, config)}",
                retryable=False,
            ),
            False,
        )
    return (
        "stream_error",
        AgentFailure(
            "llm_error",
            f"The model server reported an error: {_detail(exc, config)}",
            retryable=True,
        ),
        False,
    )


def llm_timeout(seconds: float, *, idle: bool = False) -> AgentFailure:
    """Returns the failure of a model call that took too long or stalled."""
    what = "sent nothing for" if idle else "did not finish within"
    return AgentFailure("llm_timeout", f"The model server {what} {seconds:g} s.", retryable=True)


FINISH_FAILURES = {
    "length": (
        "llm_length",
        "The model's answer was cut off at its output limit; the partial answer is kept.",
    ),
    "content_filter": (
        "llm_content_filter",
        "The model server's content filter stopped the answer; the partial answer is kept.",
    ),
}


# --- the agent -----------------------------------------------------------------------------


def tool_message(call_id: str, outcome: ToolOutcome) -> dict[str, Any]:
    """Returns the `tool` message that tells the model a call's outcome."""
    payload = {"result": outcome.result} if outcome.ok else {"error": outcome.error}
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps(payload, default=str, ensure_ascii=False),
    }


def decode_arguments(raw: str) -> tuple[Any, str | None]:
    """Returns (arguments, None), or (the raw text, why it is not valid JSON)."""
    if not raw.strip():
        return {}, None
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as exc:
        return raw, f"The arguments are not valid JSON ({exc.msg} at character {exc.pos})."


class OpenAICompatAgent:
    """Answers through an OpenAI-compatible chat-completions server, with tool calling."""

    name = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    def client(self) -> openai.AsyncOpenAI:
        """Returns a client for one run (closed with the run, so a cancel closes its
        connections at once)."""
        config = self.config
        return openai.AsyncOpenAI(
            base_url=config.base_url,
            # Local servers need no key, but the client insists on one.
            api_key=config.api_key or "no-key",
            timeout=openai.Timeout(
                config.request_timeout,
                connect=min(config.connect_timeout, config.request_timeout),
            ),
            max_retries=0,  # retries are ours: bounded, counted, honouring Retry-After
        )

    async def run(
        self, run_input: RunInput, emitter: RunEmitter, dispatcher: ToolDispatcher
    ) -> None:
        """Calls the model until it answers without tools, running the tools it asks for."""
        config = self.config
        problems = config.problems()
        if problems:
            raise AgentFailure(
                "llm_misconfigured",
                f"The model provider is misconfigured: {problems[0].message}",
                retryable=False,
            )
        messages = build_messages(
            system_prompt=config.system_prompt,
            history=run_input.history,
            text=run_input.text,
            budget=config.history_chars,
        )
        tools = dispatcher.registry.schemas()
        call_ids: set[str] = set()
        await emitter.thinking(f"Asking the model ({config.model}).")
        async with self.client() as client:
            for step in range(1, config.max_steps + 1):
                result = await self._step(client, messages, tools, emitter)
                if result.finish_reason in FINISH_FAILURES:
                    code, message = FINISH_FAILURES[result.finish_reason]
                    raise AgentFailure(code, message, retryable=False)
                if not result.tool_calls:
                    return
                if step == config.max_steps:
                    break
                calls = [(self._call_id(call, call_ids), call) for call in result.tool_calls]
                decoded = [decode_arguments(call.arguments) for _, call in calls]
                messages.append(
                    {
                        "role": "assistant",
                        "content": result.text or None,
                        "tool_calls": [
                            {
                                "id": call_id,
                                "type": "function",
                                "function": {
                                    "name": call.name,
                                    # Invalid JSON is not sent back: strict servers would
                                    # refuse the whole request; the tool message says why.
                                    "arguments": call.arguments if error is None else "{}",
                                },
                            }
                            for (call_id, call), (_, error) in zip(calls, decoded, strict=True)
                        ],
                    }
                )
                for (call_id, call), (args, error) in zip(calls, decoded, strict=True):
                    outcome = await dispatcher.call(
                        emitter, call.name, args, call_id, argument_error=error
                    )
                    messages.append(tool_message(call_id, outcome))
                count = len(calls)
                await emitter.thinking(
                    f"Sending {count} tool result{'s' if count > 1 else ''} back to the model."
                )
        raise AgentFailure(
            "max_steps",
            f"The model was still calling tools after {config.max_steps} steps; stopped.",
            retryable=False,
        )

    @staticmethod
    def _call_id(call: AssembledCall, used: set[str]) -> str:
        # The model's id is kept; a missing or repeated one (some local servers) is replaced,
        # consistently in the events and in what goes back to the model.
        call_id = call.id if call.id and call.id not in used else f"call_{uuid.uuid4().hex[:16]}"
        used.add(call_id)
        return call_id

    async def _step(
        self,
        client: openai.AsyncOpenAI,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        emitter: RunEmitter,
    ) -> StepResult:
        """One model call with bounded retries of the failures a retry may fix."""
        config = self.config
        attempt = 0
        while True:
            reader = StreamReader(emitter, config)
            try:
                async with asyncio.timeout(config.request_timeout):
                    stream = await client.chat.completions.create(
                        model=config.model,
                        messages=cast(Any, messages),
                        tools=cast(Any, tools) if tools else openai.omit,
                        stream=True,
                    )
                    async with stream:
                        result = await reader.read(stream)
            except asyncio.CancelledError:
                metrics.LLM_REQUESTS.labels(outcome="cancelled").inc()
                raise
            except StreamIdleError as exc:
                self._count_failure("timeout", emitter, attempt)
                raise llm_timeout(config.idle_timeout, idle=True) from exc
            except TimeoutError as exc:
                self._count_failure("timeout", emitter, attempt)
                raise llm_timeout(config.request_timeout) from exc
            except openai.APIError as exc:
                outcome, failure, retry = classify(exc, config)
                self._count_failure(outcome, emitter, attempt, exc)
                if not retry or reader.started or attempt >= config.max_retries:
                    raise failure from exc
                response = getattr(exc, "response", None)
                delay = retry_delay(
                    response.headers if response is not None else None,
                    attempt=attempt,
                    base=config.retry_base,
                    max_wait=config.retry_max_wait,
                )
                if delay is None:
                    raise failure from exc
                attempt += 1
                await asyncio.sleep(delay)
                continue
            metrics.LLM_REQUESTS.labels(
                outcome=result.finish_reason if result.finish_reason in FINISH_FAILURES else "ok"
            ).inc()
            return result

    def _count_failure(
        self,
        outcome: str,
        emitter: RunEmitter,
        attempt: int,
        exc: openai.APIError | None = None,
    ) -> None:
        metrics.LLM_REQUESTS.labels(outcome=outcome).inc()
        status = getattr(exc, "status_code", None)
        logger.warning(
            "model request failed: %s%s (attempt %d)",
            outcome,
            f" HTTP {status}" if status else "",
            attempt + 1,
            extra={
                "run_id": emitter.run_id,
                "thread_id": emitter.thread_id,
                "outcome": outcome,
                "status": status,
                "model": self.config.model,
            },
        )
