"""Tools the agent can call: a registry of definitions, and the built-in tools."""

import ast
import asyncio
import math
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents.errors import ToolError

ToolFunc = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """A callable tool: its name, what it does, its JSON-schema parameters and its timeout."""

    name: str
    description: str
    parameters: dict[str, Any]
    func: ToolFunc
    timeout: float = 5.0

    def schema(self) -> dict[str, Any]:
        """Returns the tool in the chat-completions `tools` format."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass
class ToolRegistry:
    """The tools an agent may call, by name."""

    tools: dict[str, Tool] = field(default_factory=dict)

    def register(self, tool: Tool) -> Tool:
        """Adds a tool (replacing one of the same name)."""
        self.tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        """Returns the tool of that name, or None."""
        return self.tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        """Returns every tool's schema."""
        return [tool.schema() for tool in self.tools.values()]


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


async def _calculator(args: dict[str, Any]) -> dict[str, Any]:
    expression = args.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("bad_arguments", "'expression' must be a non-empty string.")
    value = calculate(expression.strip())
    return {"expression": expression.strip(), "value": value}


async def _clock(args: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "utc": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "timezone": "UTC",
    }


MAX_WAIT = 30.0


async def _wait(args: dict[str, Any]) -> dict[str, Any]:
    seconds = args.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ToolError("bad_arguments", "'seconds' must be a number >= 0.")
    if seconds > MAX_WAIT:
        raise ToolError("bad_arguments", f"I wait at most {MAX_WAIT:g} seconds.")
    await asyncio.sleep(float(seconds))
    return {"waited": seconds}


CALCULATOR = Tool(
    name="calculator",
    description="Evaluates one arithmetic expression (+ - * / // % ** and parentheses).",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
        "additionalProperties": False,
    },
    func=_calculator,
    timeout=2.0,
)
CLOCK = Tool(
    name="clock",
    description="Returns the current date and time in UTC.",
    parameters={"type": "object", "properties": {}, "additionalProperties": False},
    func=_clock,
    timeout=1.0,
)
WAIT = Tool(
    name="wait",
    description="Waits the given number of seconds (at most 30), then returns.",
    parameters={
        "type": "object",
        "properties": {"seconds": {"type": "number"}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
    func=_wait,
    timeout=MAX_WAIT + 1.0,
)


def default_registry() -> ToolRegistry:
    """Returns a registry with the built-in tools."""
    registry = ToolRegistry()
    for tool in (CALCULATOR, CLOCK, WAIT):
        registry.register(tool)
    return registry
