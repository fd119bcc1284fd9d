"""The tool dispatcher: runs tool calls and guarantees each tool_executing is paired.

`ToolDispatcher` is the process's; `RunTools` is one run's view of it, bound to the run's
emitter and user (its `call(name, args)` is what an agent calls)."""

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from pydantic import BaseModel

from agents import selectors
from agents.approval_flow import ApprovalPending, approval_reason, request_approval
from agents.emitter import RunEmitter
from agents.errors import ToolCrashedError, ToolError
from agents.tools import Tool, ToolContext, ToolRegistry
from chat import metrics
from chat.errors import report_exception

logger = logging.getLogger("netra.tools")

# Grace beyond a tool's timeout before a call counts as unpaired (it ignored cancellation).
UNPAIRED_GRACE = 1.0


@dataclass
class ToolOutcome:
    """What a tool call came to: `result` when ok, `error` {code, message} otherwise."""

    tool_call_id: str
    tool: str
    status: str
    args: Any = None
    result: Any = None
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        """True if the tool returned a result."""
        return self.status == "ok"


def _json_result(tool_name: str, result: Any) -> Any:
    """Returns the result as it will be logged (pydantic models dumped); raises
    ToolError(bad_result) when it is not JSON."""
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        logger.warning("tool %s returned a value that is not JSON: %s", tool_name, exc)
        raise ToolError(
            "bad_result", f"The {tool_name} tool returned a value that is not JSON."
        ) from exc
    return result


class ToolDispatcher:
    """Executes tool calls with per-tool timeouts; tool_completed always follows."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self.in_flight: dict[str, float] = {}
        self.contexts: dict[uuid.UUID, ToolContext] = {}

    def unpaired_now(self) -> int:
        """Counts calls running past their timeout (and grace), for the metric."""
        now = time.monotonic()
        return sum(1 for deadline in self.in_flight.values() if now > deadline)

    @contextlib.asynccontextmanager
    async def run_scope(
        self,
        emitter: RunEmitter,
        *,
        user_id: Any,
        tools: Iterable[str] | None = None,
        username: str | None = None,
    ) -> AsyncIterator["RunTools"]:
        """Binds a run to its user for the duration of the block: every call of that run
        (through the yielded RunTools or `call(emitter, ...)`) gets that user's context
        (`username`, if not given, is read)."""
        if username is None:
            username = await database_sync_to_async(selectors.username_of)(user_id=user_id)
        context = ToolContext(
            user_id=user_id,
            username=username,
            thread_id=emitter.thread_id,
            run_id=emitter.run_id,
            tool_call_id="",
        )
        outer = self.contexts.get(emitter.run_id)
        self.contexts[emitter.run_id] = context
        try:
            yield RunTools(self, emitter, context, None if tools is None else frozenset(tools))
        finally:
            if outer is None:
                self.contexts.pop(emitter.run_id, None)
            else:
                self.contexts[emitter.run_id] = outer

    async def _invoke(
        self,
        tool: Tool | None,
        tool_name: str,
        args: Any,
        context: ToolContext | None,
        argument_error: str | None,
    ) -> Any:
        if tool is None:
            raise ToolError("unknown_tool", f"There is no tool named {tool_name!r}.")
        if argument_error is not None:
            raise ToolError("bad_arguments", argument_error)
        if not isinstance(args, dict):
            raise ToolError("bad_arguments", "Tool arguments must be a JSON object.")
        if not tool.takes_context:
            result = await asyncio.wait_for(tool.func(args), timeout=tool.timeout)
        elif context is None:
            logger.error("tool %s needs a run context and the call has none", tool_name)
            raise ToolError("internal_error", "The tool cannot tell whom it acts for.")
        else:
            result = await asyncio.wait_for(tool.func(args, context), timeout=tool.timeout)
        return _json_result(tool_name, result)

    async def call(
        self,
        emitter: RunEmitter,
        tool_name: str,
        args: Any,
        tool_call_id: str | None = None,
        *,
        argument_error: str | None = None,
        allowed: frozenset[str] | None = None,
        context: ToolContext | None = None,
        approved: bool = False,
    ) -> ToolOutcome:
        """Runs one tool call between tool_executing and tool_completed; never raises for
        a tool's failure (only for cancellation, after tool_completed was emitted).

        A tool that requires approval (and is not `approved` already) gets its
        approval_requested right after tool_executing; then ApprovalPending ends the run's
        task, the call left open for the worker that receives the answer
        (agents/approval_flow.py).

        `argument_error` says the caller could not decode the arguments (a model's invalid
        JSON): the call is still announced and paired, and fails with bad_arguments.
        `allowed` limits the tools this call may reach (an agent's subset); `context` is
        the run's (default: the one run_scope bound to the emitter's run). One function on
        purpose: every outcome, cancellation included, leaves through its `finally`."""
        call_id = tool_call_id or f"call_{uuid.uuid4().hex[:16]}"
        tool = self.registry.get(tool_name)
        if allowed is not None and tool_name not in allowed:
            tool = None
        run_context = context or self.contexts.get(emitter.run_id)
        context = dataclasses.replace(run_context, tool_call_id=call_id) if run_context else None
        await emitter.tool_executing(tool_call_id=call_id, tool=tool_name, args=args)
        if not approved and argument_error is None:
            reason = approval_reason(tool, args, context)
            if reason is not None:  # the call stays open; whoever gets the answer completes it
                approval_id = await request_approval(
                    emitter, tool_call_id=call_id, tool=tool_name, args=args, reason=reason
                )
                raise ApprovalPending(approval_id)
        timeout = tool.timeout if tool is not None else 0.0
        self.in_flight[call_id] = time.monotonic() + timeout + UNPAIRED_GRACE
        started = time.monotonic()
        outcome = ToolOutcome(
            call_id,
            tool_name,
            "error",
            args=args,
            error={"code": "internal_error", "message": "The tool failed."},
        )
        try:
            result = await self._invoke(tool, tool_name, args, context, argument_error)
            outcome = ToolOutcome(call_id, tool_name, "ok", args=args, result=result)
        except ToolError as exc:
            outcome.error = {"code": exc.code, "message": exc.message}
            logger.info(
                "tool %s failed: %s %s",
                tool_name,
                exc.code,
                exc.message,
                extra={
                    "run_id": emitter.run_id,
                    "tool": tool_name,
                    "tool_call_id": call_id,
                    "code": exc.code,
                },
            )
        except TimeoutError:
            outcome.error = {
                "code": "timeout",
                "message": f"The tool did not finish within {timeout:g} s.",
            }
            logger.warning(
                "tool %s timed out after %.1f s",
                tool_name,
                timeout,
                extra={"run_id": emitter.run_id, "tool": tool_name, "tool_call_id": call_id},
            )
        except asyncio.CancelledError:
            outcome.error = {"code": "cancelled", "message": "The run was cancelled."}
            raise
        except Exception as exc:  # noqa: BLE001 - a crashing tool must not break the pairing
            crash = ToolCrashedError(f"tool {tool_name!r} raised {type(exc).__name__}")
            crash.__cause__ = exc
            report_exception(
                crash,
                "tool crashed",
                run_id=emitter.run_id,
                thread_id=emitter.thread_id,
                tool=tool_name,
                tool_call_id=call_id,
            )
            outcome.error = {
                "code": "tool_crashed",
                "message": f"The {tool_name} tool failed unexpectedly.",
            }
        finally:
            self.in_flight.pop(call_id, None)
            metrics.TOOL_CALLS.labels(tool=tool_name, status=outcome.status).inc()
            await emitter.tool_completed(
                tool_call_id=call_id,
                tool=tool_name,
                status=outcome.status,
                result=outcome.result,
                error=outcome.error,
                duration_ms=int((time.monotonic() - started) * 1000),
            )
        return outcome


@dataclass
class RunTools:
    """One run's tools: what an agent calls (`await tools.call(name, args)`), limited to
    the agent's subset, with the run's emitter and user bound."""

    dispatcher: ToolDispatcher
    emitter: RunEmitter
    context: ToolContext
    allowed: frozenset[str] | None = None

    @property
    def names(self) -> list[str]:
        """The names of the tools this run may call."""
        return [name for name in self.dispatcher.registry.tools if self._may(name)]

    def _may(self, name: str) -> bool:
        return self.allowed is None or name in self.allowed

    def get(self, name: str) -> Tool | None:
        """Returns the tool of that name if this run may call it, else None."""
        return self.dispatcher.registry.get(name) if self._may(name) else None

    def schemas(self) -> list[dict[str, Any]]:
        """Returns the schemas (chat-completions `tools` format) of this run's tools."""
        return self.dispatcher.registry.schemas(self.names)

    async def call(
        self,
        name: str,
        args: Any,
        tool_call_id: str | None = None,
        *,
        argument_error: str | None = None,
    ) -> ToolOutcome:
        """Runs one tool call, paired and typed; never raises for a failed tool."""
        return await self.dispatcher.call(
            self.emitter,
            name,
            args,
            tool_call_id,
            argument_error=argument_error,
            allowed=self.allowed,
            context=self.context,
        )
