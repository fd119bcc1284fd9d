"""The testing kit for agents and tools, for your own test suite and ours.

    pytest_plugins = ["agents.testing"]      # in your conftest.py: the fixtures below

    from agents.testing import assert_run_invariants, run_agent, text_reply

    @pytest.mark.django_db(transaction=True)
    async def test_support_answers(scripted_llm):
        scripted_llm.script(text_reply("Hello."))
        events = await run_agent("openai", "hi")
        assert_run_invariants(events)

- `run_agent(agent, text, *, user=None, thread=None)`: one run through the real emitter,
  dispatcher and event log; returns its events as clients see them.
- `assert_run_invariants(events)`: AssertionError naming each broken run invariant.
- fixture `scripted_llm`: a `ScriptedLLM` chat-completions server on loopback, the
  `openai` agent pointed at it for the test (`point(name)` points one of your own).
See docs/extending.md.
"""

from agents.testing.plugin import scripted_llm
from agents.testing.runner import (
    assert_run_invariants,
    restore_agent,
    run_agent,
    run_invariant_violations,
    swap_agent,
)
from agents.testing.scripted import (
    API_KEY,
    MODEL,
    Reply,
    Request,
    ScriptedLLM,
    call_piece,
    call_start,
    chunk,
    error_reply,
    strict_schema,
    text_chunks,
    text_reply,
    tool_call_reply,
    tool_chunks,
)

__all__ = [
    "API_KEY",
    "MODEL",
    "Reply",
    "Request",
    "ScriptedLLM",
    "assert_run_invariants",
    "call_piece",
    "call_start",
    "chunk",
    "error_reply",
    "restore_agent",
    "run_agent",
    "run_invariant_violations",
    "scripted_llm",
    "strict_schema",
    "swap_agent",
    "text_chunks",
    "text_reply",
    "tool_call_reply",
    "tool_chunks",
]
