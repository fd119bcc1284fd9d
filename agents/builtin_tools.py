"""The built-in tools: calculator, clock, wait and send_note, always registered."""

import ast
import asyncio
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field

from agents.errors import ToolError
from agents.tooldef import tool

# --- calculator: a safe evaluator of arithmetic, no eval --------------------------------------

MAX_EXPRESSION = 200
MAX_NODES = 64
MAX_RESULT_BITS = 4096
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError("too_large", "The result is too large to compute.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("too_large", "The result overflows.")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > 10000:
        raise ToolError("too_large", "The exponent is too large.")
    big = isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1
    if big and exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
        raise ToolError("too_large", "The result is too large to compute.")
    try:
        return base**exponent
    except OverflowError as exc:
        raise ToolError("too_large", "The result overflows.") from exc
    except ZeroDivisionError as exc:
        raise ToolError("division_by_zero", "division by zero") from exc


def _evaluate(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError as exc:
            raise ToolError("division_by_zero", "division by zero") from exc
        except OverflowError as exc:
            raise ToolError("too_large", "The result overflows.") from exc
    raise ToolError("bad_expression", "Only numbers, + - * / // % ** and parentheses are allowed.")


def calculate(expression: str) -> int | float:
    """Evaluates an arithmetic expression safely; raises ToolError on bad or huge input."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(
            "bad_expression", f"Expressions are limited to {MAX_EXPRESSION} characters."
        )
    try:
        tree = ast.parse(
            expression.replace("^", "**").replace("×", "*").replace("÷", "/"), mode="eval"
        )
    except SyntaxError as exc:
        raise ToolError("bad_expression", "That is not an arithmetic expression.") from exc
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolError("bad_expression", "The expression is too long.")
    value: int | float = _evaluate(tree)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


@tool(timeout=2.0)
async def calculator(expression: str) -> dict[str, Any]:
    """Evaluates one arithmetic expression (+ - * / // % ** and parentheses)."""
    if not expression.strip():
        raise ToolError("bad_arguments", "'expression' must be a non-empty string.")
    value = calculate(expression.strip())
    return {"expression": expression.strip(), "value": value}


@tool(timeout=1.0)
async def clock() -> dict[str, Any]:
    """Returns the current date and time in UTC."""
    now = datetime.now(UTC)
    return {
        "utc": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "timezone": "UTC",
    }


MAX_WAIT = 30.0


@tool(timeout=MAX_WAIT + 1.0)
async def wait(seconds: Annotated[float, Field(strict=True)]) -> dict[str, Any]:
    """Waits the given number of seconds (at most 30), then returns."""
    if seconds < 0:
        raise ToolError("bad_arguments", "'seconds' must be a number >= 0.")
    if seconds > MAX_WAIT:
        raise ToolError("bad_arguments", f"I wait at most {MAX_WAIT:g} seconds.")
    await asyncio.sleep(seconds)
    return {"waited": seconds}


MAX_NOTE = 500


def _ask_to_send(args: dict[str, Any], context: Any) -> str:
    """The approval policy of send_note: always ask, quoting the note."""
    return f"Send this note to the thread: {str(args.get('text', '')).strip()[:200]}"


@tool(timeout=2.0, requires_approval=_ask_to_send)
async def send_note(
    text: Annotated[str, Field(min_length=1, max_length=MAX_NOTE)],
) -> dict[str, Any]:
    """Sends a note to the thread; it asks the user for approval first (a demo of approvals)."""
    note = text.strip()
    if not note:
        raise ToolError("bad_arguments", "'text' must not be blank.")
    return {"sent": True, "note": note}


CALCULATOR = calculator
CLOCK = clock
WAIT = wait
SEND_NOTE = send_note
