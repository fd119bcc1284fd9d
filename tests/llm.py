"""What the tests of the OpenAI-compatible agent share: one chat turn over a socket with
its invariants checked, the run's events by type, the failure shape, the request metric.

The model server is the testing kit's (agents.testing: ScriptedLLM and its `scripted_llm`
fixture); the modules that use it set THREAD_AGENT = "openai" so that their threads are
answered by the `openai` agent the fixture points at it.
"""

from typing import Any

from agents.testing import assert_run_invariants
from tests import helpers


def llm_count(outcome: str) -> float:
    """The current value of netra_llm_requests_total{outcome}."""
    return helpers.metric("netra_llm_requests_total", outcome=outcome)


async def chat(thread: Any, token: str, text: str) -> list[dict[str, Any]]:
    """Sends one message over a socket; returns the run's events, checked for invariants."""
    comm, _ = await helpers.open_socket(thread.id, token=token)
    await helpers.send(comm, helpers.message(text))
    frames = await helpers.receive_until(comm, helpers.completed, timeout=30)
    await comm.disconnect()
    events = helpers.run_events(frames)
    assert_run_invariants(events)
    return events


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The data of the events of one type."""
    return [e["data"] for e in events if e["type"] == kind]


def assert_failed(events: list[dict[str, Any]], code: str, *, retryable: bool) -> None:
    """The run ended with agent_error{code} then agent_completed{failed}."""
    assert [e["type"] for e in events[-2:]] == ["agent_error", "agent_completed"]
    assert events[-2]["data"]["code"] == code
    assert events[-2]["data"]["retryable"] is retryable
    assert events[-1]["data"]["status"] == "failed"
