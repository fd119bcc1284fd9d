"""Runs that outlive their worker, the OpenAI-compatible agent: its conversation rebuilt
from a run's journal, and a continued run against the testing kit's scripted chat-completions server
(mid-answer and mid-tool)."""

import json
from typing import Any

import pytest

from agents.invariants import run_violations
from agents.providers.openai_compat.messages import CONTINUE_PROMPT, rebuild_from_journal
from agents.testing import (
    Reply,
    ScriptedLLM,
    call_piece,
    call_start,
    text_chunks,
    tool_chunks,
)
from tests.test_outlive import kill_and_continue, logged, resumed_count, wait_logged

pytestmark = [pytest.mark.django_db(transaction=True)]


# --- the OpenAI-compatible agent's conversation from the journal --------------------------------


def event(type: str, **data: Any) -> dict[str, Any]:
    """A journal entry."""
    return {"type": type, "seq": 0, "data": data}


def test_the_openai_agent_rebuilds_its_conversation_from_the_journal() -> None:
    journal = [
        event("agent_started", agent="openai", message_id="m"),
        event("agent_thinking", text="Asking the model.", step=1),
        event("partial_result", text="Let me compute. "),
        event("tool_executing", tool_call_id="c1", tool="calculator", args={"expression": "6*7"}),
        event("tool_completed", tool_call_id="c1", tool="calculator", status="ok", result=42),
        event("tool_executing", tool_call_id="c2", tool="wait", args={"seconds": 1}),
        event("agent_thinking", text="Continuing.", step=2, resumed=True),
        event(
            "tool_completed",
            tool_call_id="c2",
            tool="wait",
            status="error",
            error={"code": "interrupted", "message": "The call was interrupted."},
        ),
        event("agent_thinking", text="Sending 2 tool results back to the model.", step=3),
        event("partial_result", text="It is 4"),
    ]
    rebuilt = rebuild_from_journal(journal)
    assert rebuilt.steps == 1 and rebuilt.call_ids == {"c1", "c2"}
    roles = [turn["role"] for turn in rebuilt.turns]
    assert roles == ["assistant", "tool", "tool", "assistant", "user"]
    assert rebuilt.turns[0]["content"] == "Let me compute. "
    assert [c["id"] for c in rebuilt.turns[0]["tool_calls"]] == ["c1", "c2"]
    assert json.loads(rebuilt.turns[1]["content"]) == {"result": 42}
    assert json.loads(rebuilt.turns[2]["content"])["error"]["code"] == "interrupted"
    assert rebuilt.turns[3]["content"] == "It is 4"
    assert rebuilt.turns[4]["content"] == CONTINUE_PROMPT
    assert rebuild_from_journal([]).turns == []


# --- the OpenAI-compatible agent continued, against the testing kit's scripted server ------


THREAD_AGENT = "openai"  # the `thread` fixture's agent: the kit's scripted_llm answers it


async def test_the_openai_agent_continues_its_answer_from_the_journal(
    thread: Any, user: Any, service: Any, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=text_chunks("Once upon", finish_reason="")[:2], hold=True, trickle=0.05),
        Reply(chunks=text_chunks(" a time, the end.")),
    )
    result = await service.submit(
        thread_id=thread.id, user=user, text="tell a story", client_msg_id="o"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "partial_result" for e in es))
    await kill_and_continue(service, result.run_id)
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert resumed_count(events) == 1
    final = events[-1]["data"]
    so_far = "".join(
        e["data"]["text"]
        for e in events
        if e["type"] == "partial_result"
        and e["seq"] < next(x["seq"] for x in events if x["data"].get("resumed"))
    )
    assert so_far.startswith("Once upon")
    assert final["status"] == "completed" and final["text"] == so_far + " a time, the end."
    again = scripted_llm.requests[1].body["messages"]
    assert again[-2] == {"role": "assistant", "content": so_far}
    assert again[-1] == {"role": "user", "content": CONTINUE_PROMPT}


async def test_the_openai_agent_is_told_of_an_interrupted_call(
    thread: Any, user: Any, service: Any, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.script(
        Reply(chunks=tool_chunks(call_start(0, "call_w", "wait"), call_piece(0, '{"seconds": 5}'))),
        Reply(chunks=text_chunks("The wait was interrupted.")),
    )
    result = await service.submit(
        thread_id=thread.id, user=user, text="wait 5 seconds", client_msg_id="w"
    )
    await wait_logged(thread, lambda es: any(e["type"] == "tool_executing" for e in es))
    await kill_and_continue(service, result.run_id)
    events = await logged(thread)
    assert run_violations(events) == [], run_violations(events)
    assert tool_pairs_of(events, "call_w") == ["tool_executing", "tool_completed"]
    again = scripted_llm.requests[1].body["messages"]
    assert again[-2]["tool_calls"][0]["id"] == "call_w"
    assert again[-1]["role"] == "tool" and again[-1]["tool_call_id"] == "call_w"
    assert json.loads(again[-1]["content"])["error"]["code"] == "interrupted"
    assert events[-1]["data"]["text"] == "The wait was interrupted."


def tool_pairs_of(events: list[dict[str, Any]], tool_call_id: str) -> list[str]:
    """The event types that name one tool call, in order."""
    return [e["type"] for e in events if e["data"].get("tool_call_id") == tool_call_id]
