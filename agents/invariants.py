"""The run invariants of docs/protocol.md, checked over a run's events.

Used by the test suites over every run they make; returns violations, empty when whole.
The pairing rules (tool calls, approvals, thinking first, the answer text) and those of a
continued run (no event after agent_completed, a resumed agent_thinking only after
agent_started) come from the fold over the run, `chat.runevents.fold_run`; the rules
about the run's shape are here.
"""

from collections.abc import Iterable
from typing import Any

from chat.runevents import EventType, fold_run


def run_violations(events: Iterable[dict[str, Any]]) -> list[str]:
    """Returns what is wrong with one run's events (given in seq order)."""
    events = list(events)
    if not events:
        return ["the run has no events"]
    problems: list[str] = []
    types = [e["type"] for e in events]
    seqs = [e["seq"] for e in events]
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
        problems.append(f"seqs are not strictly increasing: {seqs}")
    if types[0] != EventType.AGENT_STARTED or types.count(EventType.AGENT_STARTED) != 1:
        problems.append("agent_started is not first exactly once")
    if types[-1] != EventType.AGENT_COMPLETED or types.count(EventType.AGENT_COMPLETED) != 1:
        problems.append("agent_completed is not last exactly once")
    problems += fold_run(events).anomalies
    problems += _approval_problems(events)
    if EventType.AGENT_ERROR in types:
        at = types.index(EventType.AGENT_ERROR)
        if types.count(EventType.AGENT_ERROR) != 1 or at != len(types) - 2:
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


DECISION_OUTCOMES = {"denied": "denied", "expired": "approval_expired"}


def _approval_problems(events: list[dict[str, Any]]) -> list[str]:
    """Invariant 6 beyond the fold's pairing: approval_requested directly after its call's
    tool_executing, a known decision, and the call's outcome matching it (denied:
    status denied; expired: error approval_expired; approved: the tool ran)."""
    problems: list[str] = []
    decisions: dict[str, str] = {}  # tool_call_id -> decision
    calls: dict[str, str] = {}  # approval_id -> tool_call_id
    for before, event in zip([None, *events], events, strict=False):
        data = event.get("data") or {}
        if event["type"] == EventType.APPROVAL_REQUESTED:
            call_id = str(data.get("tool_call_id"))
            calls[str(data.get("approval_id"))] = call_id
            if (
                before is None
                or before["type"] != EventType.TOOL_EXECUTING
                or (str((before.get("data") or {}).get("tool_call_id")) != call_id)
            ):
                problems.append(f"approval_requested not right after tool_executing of {call_id}")
        elif event["type"] == EventType.APPROVAL_RESOLVED:
            decision = str(data.get("decision"))
            if decision not in ("approved", "denied", "expired"):
                problems.append(f"approval_resolved has decision {decision!r}")
            asked_for = calls.get(str(data.get("approval_id")))
            if asked_for is not None:
                decisions[asked_for] = decision
        elif event["type"] == EventType.TOOL_COMPLETED:
            decision = decisions.get(str(data.get("tool_call_id")), "")
            status, code = data.get("status"), (data.get("error") or {}).get("code")
            if decision == "approved" and status == "denied":
                problems.append("an approved call completed as denied")
            elif decision == "denied" and status != "denied":
                problems.append("a denied call did not complete as denied")
            elif decision == "expired" and code != "approval_expired":
                problems.append("an expired approval's call did not fail approval_expired")
    return problems
