"""Reads of the agent runtime (sync)."""

from typing import Any

from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.services import RunSpec
from chat.models import Event


def emitter_from_log(*, broadcaster: Any, spec: RunSpec) -> RunEmitter:
    """Rebuilds a run's emitter from its logged events, to close the run out elsewhere."""
    emitter = RunEmitter(
        broadcaster,
        thread_id=spec.thread_id,
        run_id=spec.run_id,
        message_id=spec.message_id,
        assistant_message_id=spec.assistant_message_id,
        agent=spec.agent,
    )
    for type_, data in (
        Event.objects.filter(thread_id=spec.thread_id, run_id=spec.run_id)
        .order_by("seq")
        .values_list("type", "data")
    ):
        if type_ == "agent_started":
            emitter.is_started = True
        elif type_ == "agent_thinking":
            emitter.step = max(emitter.step, int(data.get("step", 0)))
        elif type_ == "tool_executing":
            emitter.open_calls[data["tool_call_id"]] = data["tool"]
        elif type_ == "tool_completed":
            emitter.open_calls.pop(data["tool_call_id"], None)
        elif type_ == "partial_result":
            emitter.text_parts.append(data["text"])
        elif type_ == "agent_error":
            emitter.error = AgentFailure(
                data["code"], data["message"], retryable=bool(data.get("retryable"))
            )
        elif type_ == "agent_completed":
            emitter.is_completed = True
    return emitter
