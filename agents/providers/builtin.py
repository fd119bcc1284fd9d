"""The built-in agent: offline and deterministic, so the product works with no API key."""

import asyncio
import re
from typing import Any

from django.conf import settings

from agents.dispatcher import RunTools, ToolOutcome
from agents.emitter import RunEmitter
from agents.providers.base import RunInput
from chat.runevents import EventType, fold_run

_NUMBER = r"\d+(?:\.\d+)?"
_OPERAND = rf"\(*\s*[-+]?\s*{_NUMBER}\s*\)*"
_OPERATOR = r"(?:\*\*|//|[-+*/%^×÷])"
EXPRESSION = re.compile(rf"{_OPERAND}(?:\s*{_OPERATOR}\s*{_OPERAND})+")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
CLOCK_WORDS = re.compile(r"\b(time|date|today|day|clock|weekday|year|month)\b", re.IGNORECASE)
NOTE_WORDS = re.compile(r"\bsend (?:a )?note:\s*(.+)$", re.IGNORECASE | re.DOTALL)
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
                # In backticks: the answer is Markdown, where `2*3 ... 4*5` would be italics.
                sentences.append(
                    f"`{outcome.result['expression']}` = {_format(outcome.result['value'])}."
                )
            else:
                assert outcome.error is not None
                expression = (outcome.args or {}).get("expression")
                label = f"`{expression}`" if expression else "One expression"
                sentences.append(f"{label} could not be computed: {outcome.error['message']}.")
        elif outcome.tool == "clock":
            if outcome.ok:
                r = outcome.result
                sentences.append(f"It is {r['time']} UTC on {r['weekday']}, {r['date']}.")
            else:
                sentences.append("I could not read the clock.")
        elif outcome.tool == "wait":
            sentences.append("I waited as asked." if outcome.ok else "I could not wait as asked.")
        elif outcome.tool == "send_note":
            sentences.append(_note_sentence(outcome))
    return " ".join(sentences)


def _note_sentence(outcome: ToolOutcome) -> str:
    if outcome.ok:
        return f"I sent the note: {outcome.result['note']}"
    error = outcome.error or {}
    if outcome.status == "denied":
        comment = error.get("message", "")
        return "I did not send the note: you declined" + (f" ({comment})." if comment else ".")
    if error.get("code") == "approval_expired":
        return "I did not send the note: nobody approved it in time."
    return f"I could not send the note: {error.get('message', 'it failed')}."


CAPABILITIES = (
    'I am the built-in offline agent. I can do arithmetic (try "what is 12*7 '
    'and 2**10"), tell the current date and time, wait a few seconds '
    '("wait 3 seconds") and send a note after you approve it ("send a note: hello"). '
    "For anything else, connect a real model."
)


class Replay:
    """What a continued run already did, read from its journal: the thinking texts logged,
    the tool calls completed (reused in order instead of called again; an interrupted one
    is called again) and the answer text streamed so far."""

    def __init__(self, journal: list[dict[str, Any]]) -> None:
        state = fold_run(journal)
        self.thoughts = {
            str(e["data"].get("text")) for e in journal if e["type"] == EventType.AGENT_THINKING
        }
        self.calls = [
            ToolOutcome(
                finished.call.tool_call_id,
                finished.call.tool,
                finished.status,
                args=finished.call.args,
                result=finished.result,
                error=finished.error,
            )
            for finished in state.finished_calls
            if (finished.error or {}).get("code") != "interrupted"
        ]
        self.text = state.text

    async def think(self, emitter: RunEmitter, text: str) -> None:
        """Emits a thought unless the journal has it already."""
        if text not in self.thoughts:
            await emitter.thinking(text)

    async def call(self, tools: RunTools, tool: str, args: dict[str, Any]) -> ToolOutcome:
        """Returns the next completed call's outcome if it is this call, else calls it."""
        if self.calls and (self.calls[0].tool, self.calls[0].args) == (tool, args):
            return self.calls.pop(0)
        self.calls = []  # the plan left the journal's path: nothing further is reused
        return await tools.call(tool, args)

    async def answer(self, emitter: RunEmitter, answer: str) -> None:
        """Streams what the journal's answer text lacks of `answer` (invariant 5: the text
        is never repeated)."""
        if answer.startswith(self.text):
            await stream(emitter, answer[len(self.text) :])


class BuiltinAgent:
    """Calls the calculator once per expression, the clock for date and time questions,
    send_note (which asks for approval) for "send a note: <text>".

    It continues a run from its journal: its plan is a function of the text, so it
    replays the plan, reusing the completed calls and streaming only the missing text."""

    name = "builtin"
    description = (
        "The offline agent: arithmetic, the date and time, waiting a few seconds, "
        "sending a note after approval."
    )
    tools: tuple[str, ...] | None = ("calculator", "clock", "wait", "send_note")
    can_continue = True

    async def run(self, run_input: RunInput, emitter: RunEmitter, tools: RunTools) -> None:
        """Answers from the tools it calls; says what it can do when it has no tool for it."""
        text = run_input.text
        replay = Replay(run_input.journal)
        note = NOTE_WORDS.search(text)
        if note:  # the note is the rest of the message: no other tool reads it
            await self._send_note(note.group(1).strip(), replay, emitter, tools)
            return
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
            await replay.think(emitter, "No tool of mine fits this request.")
            await replay.answer(emitter, CAPABILITIES)
            return
        await replay.think(emitter, "I will " + ", then ".join(plan) + ".")
        outcomes: list[ToolOutcome] = []
        if wait:
            outcomes.append(await replay.call(tools, "wait", {"seconds": float(wait.group(1))}))
        for expression in expressions:
            outcomes.append(await replay.call(tools, "calculator", {"expression": expression}))
        if wants_clock:
            outcomes.append(await replay.call(tools, "clock", {}))
        failures = sum(1 for outcome in outcomes if not outcome.ok)
        await replay.think(
            emitter,
            "Writing the answer" + (f"; {failures} tool call(s) failed." if failures else "."),
        )
        await replay.answer(emitter, compose_answer(outcomes))

    @staticmethod
    async def _send_note(note: str, replay: Replay, emitter: RunEmitter, tools: RunTools) -> None:
        await replay.think(emitter, "I will send the note once you approve it.")
        outcome = await replay.call(tools, "send_note", {"text": note[:500]})
        await replay.think(emitter, "Writing the answer.")
        await replay.answer(emitter, compose_answer([outcome]))


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
