"""The built-in agent: offline and deterministic, so the product works with no API key."""

import asyncio
import re
from typing import Any

from django.conf import settings

from agents.dispatcher import RunTools, ToolOutcome
from agents.emitter import RunEmitter
from agents.providers.base import RunInput

_NUMBER = r"\d+(?:\.\d+)?"
_OPERAND = rf"\(*\s*[-+]?\s*{_NUMBER}\s*\)*"
_OPERATOR = r"(?:\*\*|//|[-+*/%^×÷])"
EXPRESSION = re.compile(rf"{_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CLOCK_WORDS = re.compile(r"\b(time|date|today|day|clock|weekday|year|month)\b", re.IGNORECASE)
WAIT_WORDS = re.compile(
    r"\b(?:wait|sleep|pause)\s+(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)?\b", re.IGNORECASE
)


def _balance(expression: str) -> str:
    expression = expression.strip()
    while expression.count("(") > expression.count(")") and expression.startswith("("):
        expression = expression[1:].strip()
    while expression.count(")") > expression.count("(") and expression.endswith(")"):
        expression = expression[:-1].strip()
    return expression


def find_expressions(text: str) -> list[str]:
    """Returns the arithmetic expressions in a message, in order."""
    found = []
    for match in EXPRESSION.finditer(text):
        expression = _balance(match.group(0))
        if expression and not ISO_DATE.match(expression):
            found.append(expression)
    return found


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def compose_answer(outcomes: list[ToolOutcome]) -> str:
    """Writes the answer from the tool outcomes."""
    sentences = []
    for outcome in outcomes:
        if outcome.tool == "calculator":
            if outcome.ok:
                sentences.append(
                    f"{outcome.result['expression']} = {_format(outcome.result['value'])}."
                )
            else:
                assert outcome.error is not None
                expression = (outcome.args or {}).get("expression", "One expression")
                sentences.append(f"{expression} could not be computed: {outcome.error['message']}.")
        elif outcome.tool == "clock":
            if outcome.ok:
                r = outcome.result
                sentences.append(f"It is {r['time']} UTC on {r['weekday']}, {r['date']}.")
            else:
                sentences.append("I could not read the clock.")
        elif outcome.tool == "wait":
            sentences.append("I waited as asked." if outcome.ok else "I could not wait as asked.")
    return " ".join(sentences)


CAPABILITIES = (
    'I am the built-in offline agent. I can do arithmetic (try "what is 12*7 '
    'and 2**10"), tell the current date and time, and wait a few seconds '
    '("wait 3 seconds"). For anything else, connect a real model.'
)


class BuiltinAgent:
    """Calls the calculator once per expression, the clock for date and time questions."""

    name = "builtin"
    description = "The offline agent: arithmetic, the date and time, waiting a few seconds."
    tools: tuple[str, ...] | None = ("calculator", "clock", "wait")

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Answers from the tools it calls; says what it can do when it has no tool for it."""
        text = run_input.text
        expressions = find_expressions(text)
        wants_clock = bool(CLOCK_WORDS.search(text))
        wait = WAIT_WORDS.search(text)
        plan = []  # in the order the tools run below
        if wait:
            plan.append(f"wait {wait.group(1)} s")
        if expressions:
            plan.append(
                f"compute {len(expressions)} expression{'s' if len(expressions) > 1 else ''}"
            )
        if wants_clock:
            plan.append("read the clock")
        if not plan:
            await emitter.thinking("No tool of mine fits this request.")
            await stream(emitter, CAPABILITIES)
            return
        await emitter.thinking("I will " + ", then ".join(plan) + ".")
        outcomes: list[ToolOutcome] = []
        if wait:
            outcomes.append(await tools.call("wait", {"seconds": float(wait.group(1))}))
        for expression in expressions:
            outcomes.append(await tools.call("calculator", {"expression": expression}))
        if wants_clock:
            outcomes.append(await tools.call("clock", {}))
        failures = sum(1 for outcome in outcomes if not outcome.ok)
        await emitter.thinking(
            "Writing the answer" + (f"; {failures} tool call(s) failed." if failures else ".")
        )
        await stream(emitter, compose_answer(outcomes))


async def stream(emitter: RunEmitter, answer: str) -> None:
    """Streams an answer as partial_result deltas of about AGENT_STREAM_CHUNK characters."""
    size = max(1, settings.AGENT_STREAM_CHUNK)
    delay = settings.AGENT_STREAM_DELAY
    chunk = ""
    for word in re.findall(r"\S+\s*", answer):
        chunk += word
        if len(chunk) >= size:
            await emitter.partial(chunk)
            chunk = ""
            if delay > 0:
                await asyncio.sleep(delay)
    if chunk:
        await emitter.partial(chunk)
