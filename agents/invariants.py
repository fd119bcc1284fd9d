"""The run invariants of DESIGN section 4, checked over a run's events.

Used by the tests and by the event-flow health check; returns violations, empty when whole.
"""

from collections.abc import Iterable
from typing import Any

TERMINAL_STATUSES = {"completed", "failed", "cancelled"}


def run_violations(events: Iterable[dict[str, Any]]) -> list[str]:
    """Returns what is wrong with one run's events (given in seq order)."""
    events = list(events)
    problems: list[str] = []
    types = [e["type"] for e in events]
    if not events:
        return ["the run has no events"]
    seqs = [e["seq"] for e in events]
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
        problems.append(f"seqs are not strictly increasing: {seqs}")
    if types[0] != "agent_started" or types.count("agent_started") != 1:
        problems.append("agent_started is not first exactly once")
    if types[-1] != "agent_completed" or types.count("agent_completed") != 1:
        problems.append("agent_completed is not last exactly once")
    open_calls: dict[str, str] = {}
    thought = False
    text = ""
    for event in events:
        kind, data = event["type"], event["data"]
        if kind == "agent_thinking":
            thought = True
        elif kind == "tool_executing":
            if not thought:
                problems.append("tool_executing before any agent_thinking")
            if data["tool_call_id"] in open_calls:
                problems.append(f"tool call {data['tool_call_id']} executing twice")
            open_calls[data["tool_call_id"]] = data["tool"]
        elif kind == "tool_completed":
            if open_calls.pop(data["tool_call_id"], None) is None:
                problems.append(f"tool_completed without tool_executing: {data['tool_call_id']}")
        elif kind == "partial_result":
            if not thought:
                problems.append("partial_result before any agent_thinking")
            text += data["text"]
        elif kind == "agent_completed":
            if open_calls:
                problems.append(f"agent_completed with unpaired tool calls: {sorted(open_calls)}")
            if data.get("status") not in TERMINAL_STATUSES:
                problems.append(f"agent_completed has status {data.get('status')!r}")
            if data.get("text") != text:
                problems.append("partial_result texts do not add up to agent_completed.text")
            if data.get("status") == "failed" and "agent_error" not in types:
                problems.append("a failed run has no agent_error")
    if "agent_error" in types:
        at = types.index("agent_error")
        if types.count("agent_error") != 1 or at != len(types) - 2:
            problems.append("agent_error is not directly before agent_completed, once")
        elif events[-1]["data"].get("status") != "failed":
            problems.append("agent_error not followed by agent_completed{failed}")
    return problems


def by_run(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Groups a thread's events by run, keeping seq order."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        runs.setdefault(event["run_id"], []).append(event)
    return runs
