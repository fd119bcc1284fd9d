"""The agent loop of the OpenAI-compatible provider.

A run is a loop of model calls (steps). Each step streams (stream.py). When the model
asks for tools, each call goes through the dispatcher (so it is paired) and the results
go back to the model in the next step; the loop ends on an answer without tools, or
fails with max_steps. Every upstream failure becomes an AgentFailure with a typed code
(failures.py) and is counted in netra_llm_requests_total{outcome}.
"""

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import openai

from agents.dispatcher import RunTools
from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.providers.base import RunInput
from agents.providers.openai_compat.config import ProviderConfig
from agents.providers.openai_compat.context import conversation_budget
from agents.providers.openai_compat.failures import (
    FINISH_FAILURES,
    classify,
    empty_stream,
    incomplete_stream,
    llm_timeout,
    retry_delay,
)
from agents.providers.openai_compat.messages import (
    assistant_tool_turn,
    build_messages,
    decode_arguments,
    rebuild_from_journal,
    tool_message,
)
from agents.providers.openai_compat.stream import (
    AssembledCall,
    StepResult,
    StreamIdleError,
    StreamReader,
)
from chat import metrics

logger = logging.getLogger("netra.llm")


class OpenAICompatAgent:
    """Answers through an OpenAI-compatible chat-completions server, with tool calling.

    A team defines an LLM agent of its own by subclassing it with class attributes, each
    subclass its own NETRA_AGENTS entry; what a subclass leaves as None comes from the
    settings (AGENT_MODEL, AGENT_SYSTEM_PROMPT; no temperature is sent by default):

        class SupportAgent(OpenAICompatAgent):
            description = "Answers questions about your orders."
            model = "gpt-4o-mini"
            system_prompt = "You are the support assistant of Example Ltd."
            tools = ["my_threads", "shipping_status"]
            temperature = 0.2
    """

    name = "openai"
    description = "A model behind an OpenAI-compatible chat-completions server, with tools."
    model: str | None = None
    system_prompt: str | None = None
    tools: Sequence[str] | None = None
    temperature: float | None = None
    # It continues a run from its journal (messages.rebuild_from_journal).
    can_continue = True

    def __init__(self, config: ProviderConfig | None = None) -> None:
        """Reads the settings, then applies the class's own model, prompt and temperature
        (a config given explicitly is used as it is)."""
        if config is None:
            config = self.configured(ProviderConfig.from_settings())
        self.config = config

    @classmethod
    def configured(cls, config: ProviderConfig) -> ProviderConfig:
        """Returns `config` with the class attributes that are set applied to it."""
        if cls.model is not None:
            config = dataclasses.replace(config, model=cls.model)
        if cls.system_prompt is not None:
            config = dataclasses.replace(config, system_prompt=cls.system_prompt)
        if cls.temperature is not None:
            config = dataclasses.replace(config, temperature=cls.temperature)
        return config

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

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Calls the model until it answers without tools, running the tools it asks for."""
        config = self.config
        problems = config.problems()
        if problems:
            raise AgentFailure(
                "llm_misconfigured",
                f"The model provider is misconfigured: {problems[0].message}",
                retryable=False,
            )
        schemas = tools.schemas() if config.tool_choice != "none" else []
        budget = conversation_budget(
            context_tokens=config.context_tokens,
            max_output_tokens=config.max_output_tokens,
            system_prompt=config.system_prompt,
            tools=schemas,
            text=run_input.text,
        )
        messages = build_messages(
            system_prompt=config.system_prompt,
            history=run_input.history,
            text=run_input.text,
            budget=config.history_chars,
            tokens=budget,
        )
        # A continued run goes on from its journal: the conversation so far, then the rest.
        rebuilt = rebuild_from_journal(run_input.journal)
        messages += rebuilt.turns
        call_ids = set(rebuilt.call_ids)
        if not run_input.journal:
            await emitter.thinking(f"Asking the model ({config.model}).")
        async with self.client() as client:
            for step in range(rebuilt.steps + 1, config.max_steps + 1):
                request = ModelRequest(
                    messages,
                    schemas,
                    tool_choice_of(config.tool_choice) if step == 1 and schemas else None,
                    config.max_output_tokens,
                    config.temperature,
                )
                result = await self._step(client, request, emitter)
                if result.finish_reason in FINISH_FAILURES:
                    code, message = FINISH_FAILURES[result.finish_reason]
                    raise AgentFailure(code, message, retryable=False)
                if not result.tool_calls:
                    return
                if step == config.max_steps:
                    break
                await self._run_tools(result, messages, call_ids, emitter, tools)
        raise AgentFailure(
            "max_steps",
            f"The model was still calling tools after {config.max_steps} steps; stopped.",
            retryable=False,
        )

    async def _run_tools(
        self,
        result: StepResult,
        messages: list[dict[str, Any]],
        call_ids: set[str],
        emitter: RunEmitter,
        tools: RunTools,
    ) -> None:
        """Runs the tool calls of one step through the run's tools (so they are paired) and
        appends the assistant's tool-call turn and one tool message per call."""
        calls = [(self._call_id(call, call_ids), call) for call in result.tool_calls]
        decoded = [decode_arguments(call.arguments) for _, call in calls]
        messages.append(
            assistant_tool_turn(
                result.text,
                [
                    (call_id, call, error)
                    for (call_id, call), (_, error) in zip(calls, decoded, strict=True)
                ],
            )
        )
        for (call_id, call), (args, error) in zip(calls, decoded, strict=True):
            outcome = await tools.call(call.name, args, call_id, argument_error=error)
            messages.append(tool_message(call_id, outcome))
        count = len(calls)
        await emitter.thinking(
            f"Sending {count} tool result{'s' if count > 1 else ''} back to the model."
        )

    @staticmethod
    def _call_id(call: AssembledCall, used: set[str]) -> str:
        # The model's id is kept; a missing or repeated one (some local servers) is replaced,
        # consistently in the events and in what goes back to the model.
        call_id = call.id if call.id and call.id not in used else f"call_{uuid.uuid4().hex[:16]}"
        used.add(call_id)
        return call_id

    async def _step(
        self, client: openai.AsyncOpenAI, request: "ModelRequest", emitter: RunEmitter
    ) -> StepResult:
        """One model call with bounded retries of the failures a retry may fix."""
        config = self.config
        attempt = 0
        while True:
            reader = StreamReader(emitter, config)
            try:
                async with asyncio.timeout(config.request_timeout):
                    stream = await client.chat.completions.create(
                        **request.arguments(config.model), stream=True
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
                outcome, failure, retry = classify(exc, config, mid_answer=reader.started)
                self._count_failure(outcome, emitter, attempt, exc)
                await reader.flush()  # what came before the failure is kept, all of it
                delay = None
                if retry and not reader.started and attempt < config.max_retries:
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
            if result.finish_reason is None:
                await self._unfinished(client, request, emitter, started=reader.started)
            metrics.LLM_REQUESTS.labels(
                outcome=result.finish_reason if result.finish_reason in FINISH_FAILURES else "ok"
            ).inc()
            return result

    async def _unfinished(
        self,
        client: openai.AsyncOpenAI,
        request: "ModelRequest",
        emitter: RunEmitter,
        *,
        started: bool,
    ) -> None:
        """Fails a stream that ended without a finish reason: never a completed answer.

        A stream that ended before anything came is asked again, unstreamed and for one
        token, to learn why: llama.cpp's servers answer a request longer than their
        context window with an empty stream, but unstreamed with an error naming the
        context. (llama-cpp-python also breaks the kept-alive connection of the empty
        stream, so a connection error is asked once more, on a new connection.)
        """
        if started:
            self._count_failure("incomplete", emitter, 0)
            raise incomplete_stream()
        for attempt in range(2):
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    await client.chat.completions.create(
                        **{**request.arguments(self.config.model), "max_tokens": 1}
                    )
            except openai.APIConnectionError:
                logger.info("asking again after an empty stream: connection failed")
                continue
            except openai.APIError as exc:
                outcome, failure, _ = classify(exc, self.config)
                if outcome == "context_exceeded":
                    self._count_failure(outcome, emitter, attempt, exc)
                    raise failure from exc
                logger.info("asking again after an empty stream failed too: %s", outcome)
            except TimeoutError:
                logger.info("asking again after an empty stream timed out")
            break
        self._count_failure("incomplete", emitter, 0)
        raise empty_stream()

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


@dataclass(frozen=True)
class ModelRequest:
    """What one step sends: the conversation, the tools offered, the tool choice."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str | dict[str, Any] | None
    max_tokens: int = 0
    temperature: float | None = None

    def arguments(self, model: str) -> dict[str, Any]:
        """Returns the arguments of chat.completions.create, without `stream`."""
        return {
            "model": model,
            "messages": cast(Any, self.messages),
            "tools": cast(Any, self.tools) if self.tools else openai.omit,
            "tool_choice": cast(Any, self.tool_choice) if self.tool_choice else openai.omit,
            "max_tokens": self.max_tokens or openai.omit,
            "temperature": openai.omit if self.temperature is None else self.temperature,
        }


def tool_choice_of(setting: str) -> str | dict[str, Any] | None:
    """Returns the `tool_choice` of a run's first step for AGENT_TOOL_CHOICE.

    `auto` sends none: the API's default with tools is auto, and llama-cpp-python treats
    an explicit "auto" as a mode it cannot stream (it answers with an empty stream).
    `required` or a tool's name forces the first step only; forced on every step, the
    model could never answer after its tools. (`none` offers no tools at all.)
    """
    if setting in ("auto", "none"):
        return None
    if setting == "required":
        return "required"
    return {"type": "function", "function": {"name": setting}}
