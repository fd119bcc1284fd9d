"""The tool dispatcher: runs tool calls and guarantees each tool_executing is paired."""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from agents.emitter import RunEmitter
from agents.errors import ToolCrashedError, ToolError
from agents.tools import ToolRegistry
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


class ToolDispatcher:
    """Executes tool calls with per-tool timeouts; tool_completed always follows."""

    def __init__(self, registry: ToolRegistry) -> None:
        self.registry = registry
        self.in_flight: dict[str, float] = {}

    def unpaired_now(self) -> int:
        """Counts calls running past their timeout (and grace), for the metric."""
        now = time.monotonic()
        return sum(1 for deadline in self.in_flight.values() if now > deadline)

    async def call(
        self,
        emitter: RunEmitter,
        tool_name: str,
        args: Any,
        tool_call_id: str | None = None,
        *,
        argument_error: str | None = None,
    ) -> ToolOutcome:
        """Runs one tool call between tool_executing and tool_completed; never raises for
        a tool's failure (only for cancellation, after tool_completed was emitted).

        `argument_error` says the caller could not decode the arguments (a model's invalid
        JSON): the call is still announced and paired, and fails with bad_arguments."""
        call_id = tool_call_id or f"call_{uuid.uuid4().hex[:16]}"
        tool = self.registry.get(tool_name)
        await emitter.tool_executing(tool_call_id=call_id, tool=tool_name, args=args)
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
            if tool is None:
                raise ToolError("unknown_tool", f"There is no tool named {tool_name!r}.")
            if argument_error is not None:
                raise ToolError("bad_arguments", argument_error)
            if not isinstance(args, dict):
                raise ToolError("bad_arguments", "Tool arguments must be a JSON object.")
            result = await asyncio.wait_for(tool.func(args), timeout=tool.timeout)
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
