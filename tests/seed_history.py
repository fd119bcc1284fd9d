"""Writes finished runs straight into a server's database, for the browser tests of the
chat page's history (a run of 7 logged events, its user message and its answer).

Run inside the server's environment: `server.manage("shell", "-c", seed_command(...))`.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any


def _events(
    *, run_id: uuid.UUID, asked: uuid.UUID, answered: uuid.UUID, answer: str, failed: bool
) -> list[tuple[str, dict[str, Any]]]:
    call = f"call_{run_id.hex[:8]}"
    events: list[tuple[str, dict[str, Any]]] = [
        ("agent_started", {"agent": "builtin", "message_id": str(asked)}),
        ("agent_thinking", {"text": "Working out 6*7.", "step": 1}),
        (
            "tool_executing",
            {"tool_call_id": call, "tool": "calculator", "args": {"expression": "6*7"}},
        ),
    ]
    if failed:
        events += [
            (
                "tool_completed",
                {
                    "tool_call_id": call,
                    "tool": "calculator",
                    "status": "error",
                    "error": {"code": "timeout", "message": "the tool timed out"},
                    "duration_ms": 1500,
                },
            ),
            (
                "agent_error",
                {"code": "llm_unavailable", "message": "The model is down.", "retryable": True},
            ),
            (
                "agent_completed",
                {"status": "failed", "message_id": None, "text": "", "duration_ms": 1600},
            ),
        ]
        return events
    return [
        *events,
        (
            "tool_completed",
            {
                "tool_call_id": call,
                "tool": "calculator",
                "status": "ok",
                "result": {"value": 42},
                "duration_ms": 12,
            },
        ),
        ("partial_result", {"message_id": str(answered), "text": answer}),
        (
            "agent_completed",
            {
                "status": "completed",
                "message_id": str(answered),
                "text": answer,
                "duration_ms": 250,
            },
        ),
    ]


def seed(
    thread_id: str,
    runs: int,
    answer: str,
    *,
    question: str = "what is 6*7",
    failed_last: bool = False,
) -> None:
    """Appends `runs` finished runs to the thread (the last one failed with `failed_last`)."""
    from chat.models import Event, Message, Thread  # Django is set up by `manage.py shell`

    thread = Thread.objects.get(pk=thread_id)
    seq = thread.last_seq
    start = datetime.now(UTC) - timedelta(seconds=runs * 2 + 10)
    messages: list[Message] = []
    events: list[Event] = []
    for index in range(runs):
        run_id, asked, answered = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        failed = failed_last and index == runs - 1
        moment = start + timedelta(seconds=index * 2)
        messages.append(
            Message(
                id=asked,
                thread=thread,
                role="user",
                text=f"{question} (#{index + 1})",
                run_id=run_id,
            )
        )
        for kind, data in _events(
            run_id=run_id, asked=asked, answered=answered, answer=answer, failed=failed
        ):
            seq += 1
            events.append(
                Event(
                    thread=thread, seq=seq, run_id=run_id, type=kind, data=data, created_at=moment
                )
            )
        if not failed:
            messages.append(
                Message(id=answered, thread=thread, role="assistant", text=answer, run_id=run_id)
            )
    Message.objects.bulk_create(messages)
    # created_at is auto_now_add: give the messages their order in time explicitly.
    for offset, message in enumerate(messages):
        message.created_at = start + timedelta(milliseconds=offset * 10)
    Message.objects.bulk_update(messages, ["created_at"], batch_size=500)
    Event.objects.bulk_create(events, batch_size=500)
    Thread.objects.filter(pk=thread.pk).update(last_seq=seq)


def seed_command(thread_id: str, runs: int, answer: str, **options: Any) -> str:
    """The `manage.py shell -c` text that calls `seed` with these arguments."""
    args = json.dumps([thread_id, runs, answer])
    call = f"seed(*json.loads({args!r}), **{options!r})"
    return f"import json; from tests.seed_history import seed; {call}"
