"""Reading one streamed model response: text deltas become coalesced partial_result
events, reasoning deltas agent_thinking steps, tool-call deltas are assembled by index."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDelta, ChoiceDeltaToolCall

from agents.emitter import RunEmitter
from agents.providers.openai_compat.config import ProviderConfig

# Reasoning is shown as agent_thinking steps: coarser than answer text, so that a model
# thinking token by token does not turn into hundreds of steps.
REASONING_FLUSH_CHARS = 400
REASONING_FLUSH_INTERVAL = 1.0
# Fields in which OpenAI-compatible servers stream reasoning (vLLM, llama.cpp, DeepSeek:
# reasoning_content; Ollama, OpenRouter: reasoning).
REASONING_FIELDS = ("reasoning_content", "reasoning")


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
