"""Reads of the agent runtime (sync)."""

from typing import Any

from agents.emitter import RunEmitter
from agents.errors import AgentFailure
from agents.services import RunSpec
from chat.models import Event
from chat.runevents import fold_run


def emitter_from_log(*, broadcaster: Any, spec: RunSpec) -> RunEmitter:
    """Rebuilds a run's emitter from its logged events, to close the run out elsewhere."""
    rows = (
        Event.objects.filter(thread_id=spec.thread_id, run_id=spec.run_id)
        .order_by("seq")
        .values("type", "seq", "data")
    )
    state = fold_run(rows)
    error = state.error
    return RunEmitter(
        broadcaster,
        thread_id=spec.thread_id,
        run_id=spec.run_id,
        message_id=spec.message_id,
        assistant_message_id=spec.assistant_message_id,
        agent=spec.agent,
        step=state.step,
        text_parts=list(state.text_parts),
        open_calls={call_id: call.tool for call_id, call in state.open_calls.items()},
        is_started=state.started,
        is_completed=state.completed,
        error=None
        if error is None
        else AgentFailure(error["code"], error["message"], retryable=bool(error.get("retryable"))),
    )
