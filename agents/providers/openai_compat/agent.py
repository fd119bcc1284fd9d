"""The agent loop of the OpenAI-compatible provider.

A run is a loop of model calls (steps). Each step streams (stream.py). When the model
asks for tools, each call goes through the dispatcher (so it is paired) and the results
go back to the model in the next step; the loop ends on an answer without tools, or
fails with max_steps. Every upstream failure becomes an AgentFailure with a typed code
(failures.py) and is counted in netra_llm_requests_total{outcome}.
"""

import asyncio
import logging
import uuid
from typing import Any, cast

import openai

from agents.dispatcher import ToolDispatcher
from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.providers.base import RunInput
from agents.providers.openai_compat.config import ProviderConfig
from agents.providers.openai_compat.failures import (
    FINISH_FAILURES,
    classify,
    llm_timeout,
    retry_delay,
)
from agents.providers.openai_compat.messages import (
    assistant_tool_turn,
    build_messages,
    decode_arguments,
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
                await self._run_tools(result, messages, call_ids, emitter, dispatcher)
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
        dispatcher: ToolDispatcher,
    ) -> None:
        """Runs the tool calls of one step through the dispatcher (so they are paired) and
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
            outcome = await dispatcher.call(emitter, call.name, args, call_id, argument_error=error)
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
