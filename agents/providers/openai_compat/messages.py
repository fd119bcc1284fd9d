"""The conversation sent to the model: the messages of a run, the tool messages that
carry outcomes back, and the decoding of the model's tool arguments."""

import json
import math
from dataclasses import dataclass, field
from typing import Any, cast

from agents.dispatcher import ToolOutcome
from agents.providers.openai_compat.context import message_tokens
from agents.providers.openai_compat.stream import AssembledCall
from chat.runevents import EventType, FinishedCall, fold_run


def build_messages(
    *,
    system_prompt: str,
    history: list[dict[str, str]],
    text: str,
    budget: int,
    tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Returns the chat messages of a run: the system prompt, the most recent earlier
    messages that fit in `budget` characters and in `tokens` estimated tokens (see
    context.py), then the user's text.

    Consecutive messages of one role are merged (an unanswered message leaves two user
    turns in a row), since strict chat templates of local servers require alternation,
    and the history never opens with an assistant turn.
    """
    kept: list[dict[str, str]] = []
    used = len(text)
    tokens_left = tokens
    for item in reversed(history):
        role, content = item.get("role"), item.get("text", "")
        if role not in ("user", "assistant") or not content:
            continue
        if used + len(content) > budget:
            break
        if tokens_left is not None:
            tokens_left -= message_tokens(content)
            if tokens_left < 0:
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


def assistant_tool_turn(
    text: str, calls: list[tuple[str, AssembledCall, str | None]]
) -> dict[str, Any]:
    """Returns the assistant turn that carries a step's tool calls: (call id, call, why
    its arguments are invalid or None) each."""
    return {
        "role": "assistant",
        # An empty string, not null: strict servers (llama-cpp-python's) refuse a null
        # content, and others a missing key, with a validation error.
        "content": text,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {
                    "name": call.name,
                    # Invalid JSON is not sent back: strict servers would refuse the whole
                    # request; the tool message says why.
                    "arguments": call.arguments if error is None else "{}",
                },
            }
            for call_id, call, error in calls
        ],
    }


def tool_message(call_id: str, outcome: ToolOutcome) -> dict[str, Any]:
    """Returns the `tool` message that tells the model a call's outcome."""
    payload = {"result": outcome.result} if outcome.ok else {"error": outcome.error}
    return {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps(payload, default=str, ensure_ascii=False),
    }


class NonFiniteNumberError(ValueError):
    """A number JSON cannot carry (NaN, Infinity or one too large for a float)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumberError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NonFiniteNumberError(text)
    return value


def decode_arguments(raw: str) -> tuple[Any, str | None]:
    """Returns (arguments, None), or (the raw text, why it is not valid JSON).

    Parsing is strict: Python's json accepts NaN, Infinity and -Infinity (and reads 1e999
    as infinity), which JSON does not; the event log's JSON column would then refuse the
    call's tool_executing row and fail the whole run, so they are invalid arguments.
    """
    if not raw.strip():
        return {}, None
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float), None
    except json.JSONDecodeError as exc:
        return raw, f"The arguments are not valid JSON ({exc.msg} at character {exc.pos})."
    except NonFiniteNumberError as exc:
        return raw, f"The arguments are not valid JSON ({exc.text} is not a JSON number)."


CONTINUE_PROMPT = (
    "Your previous answer was interrupted after the text above. Continue it from exactly "
    "where it stopped, without repeating any of it."
)


@dataclass
class Rebuilt:
    """A continued run's conversation so far, rebuilt from its journal: the turns to
    append after the user's text, the model steps already taken and the call ids used."""

    turns: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    call_ids: set[str] = field(default_factory=set)


def rebuild_from_journal(journal: list[dict[str, Any]]) -> Rebuilt:
    """Rebuilds the conversation of a continued run: one assistant tool-call turn per model
    step that called tools (the text it streamed before them, its calls) with one tool
    message per call's outcome; then the answer text streamed since, if any, as an
    assistant turn followed by the request to continue it. Outcomes come from the fold
    (a call still open counts as interrupted; the runtime completes open calls first)."""
    outcomes = {f.call.tool_call_id: f for f in fold_run(journal).finished_calls}
    rebuilt = Rebuilt()
    text, calls = "", cast(list[dict[str, Any]], [])

    def close_step() -> None:
        nonlocal text, calls
        rebuilt.steps += 1
        assembled: list[tuple[str, AssembledCall, str | None]] = [
            (
                str(d["tool_call_id"]),
                AssembledCall(
                    index=i,
                    id=str(d["tool_call_id"]),
                    name=str(d.get("tool")),
                    arguments=json.dumps(d.get("args"), ensure_ascii=False),
                ),
                None,
            )
            for i, d in enumerate(calls)
        ]
        rebuilt.turns.append(assistant_tool_turn(text, assembled))
        for call_id, call, _ in assembled:
            rebuilt.call_ids.add(call_id)
            rebuilt.turns.append(tool_message(call_id, _journal_outcome(call, outcomes)))
        text, calls = "", []

    for event in journal:
        kind = event["type"]
        if kind == EventType.TOOL_EXECUTING:
            calls.append(event["data"])
        elif calls and kind in (EventType.PARTIAL_RESULT, EventType.AGENT_THINKING):
            close_step()
        if kind == EventType.PARTIAL_RESULT:
            text += str(event["data"].get("text", ""))
    if calls:
        close_step()
    if text:
        rebuilt.turns.append({"role": "assistant", "content": text})
        rebuilt.turns.append({"role": "user", "content": CONTINUE_PROMPT})
    return rebuilt


def _journal_outcome(call: AssembledCall, outcomes: dict[str, FinishedCall]) -> ToolOutcome:
    finished = outcomes.get(call.id)
    if finished is None:
        return ToolOutcome(
            call.id,
            call.name,
            "error",
            error={"code": "interrupted", "message": "The call was interrupted."},
        )
    return ToolOutcome(
        call.id, call.name, finished.status, result=finished.result, error=finished.error
    )
