"""Aged data for the prune tests, the same on SQLite (in process) and on PostgreSQL (in a
subprocess): threads whose runs are old or recent, finished, waiting or active; closed and
open connections (sync; database)."""

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count
from django.utils import timezone

from agents.models import AgentRun, RunStatus
from chat.events import event_append
from chat.models import Connection, ConnectionState, ConnectionStateLog, Event, Message, Thread

OLD = timedelta(days=45)
RECENT = timedelta(days=2)


def make_run(
    thread: Thread, *, age: timedelta, status: str = "completed", steps: int = 3
) -> uuid.UUID:
    """A user message, its AgentRun and its events; `status` "waiting" stops at a pending
    approval, "running" before any answer; all of it dated `age` ago."""
    message = Message.objects.create(thread=thread, role=Message.Role.USER, text="q")
    active = status in ("waiting", "running")
    run = AgentRun.objects.create(
        thread=thread,
        user=thread.owner,
        message=message,
        agent="builtin",
        status=RunStatus.RUNNING if active else status,
    )
    append = lambda type_, data: event_append(  # noqa: E731
        thread_id=thread.id, run_id=run.id, type=type_, data=data
    )
    append("agent_started", {"agent": "builtin", "message_id": str(message.id)})
    for step in range(steps):
        append("agent_thinking", {"text": f"step {step}", "step": step})
    if status == "waiting":
        append(
            "approval_requested",
            {"approval_id": str(uuid.uuid4()), "tool_call_id": "c1", "tool": "x", "args": {}},
        )
    if not active:
        append("partial_result", {"message_id": str(run.assistant_message_id), "text": "a"})
        append("agent_completed", {"status": status, "message_id": None, "text": "a"})
        Message.objects.create(
            id=run.assistant_message_id, thread=thread, role=Message.Role.ASSISTANT, text="a"
        )
    when = timezone.now() - age
    Event.objects.filter(run_id=run.id).update(created_at=when)
    AgentRun.objects.filter(pk=run.pk).update(created_at=when)
    return run.id


def make_connection(*, age: timedelta, state: str = ConnectionState.CLOSED) -> Connection:
    """A connection opened (and, if CLOSED, closed) `age` ago, with a state log of 3 rows."""
    when = timezone.now() - age
    closed = state == ConnectionState.CLOSED
    connection = Connection.objects.create(
        state=state, opened_at=when, state_changed_at=when, closed_at=when if closed else None
    )
    for from_state, to_state in (
        (ConnectionState.CONNECTING, ConnectionState.AUTHENTICATING),
        (ConnectionState.AUTHENTICATING, ConnectionState.CONNECTED),
        (ConnectionState.CONNECTED, ConnectionState.CLOSED),
    ):
        ConnectionStateLog.objects.create(
            connection=connection, from_state=from_state, to_state=to_state, created_at=when
        )
    return connection


def build() -> dict[str, Any]:
    """Creates the scenario; returns which runs and connections must go and which stay."""
    owner = get_user_model().objects.create_user(username=f"aged-{uuid.uuid4().hex[:6]}")
    a, b, c, d = (Thread.objects.create(owner=owner, title=t) for t in "abcd")
    pruned = [
        make_run(a, age=OLD),
        make_run(a, age=OLD, status="failed", steps=5),
        make_run(b, age=OLD, status="cancelled"),
        make_run(c, age=OLD, steps=1),
    ]
    kept = [
        make_run(a, age=OLD),  # a's newest run, old as it is
        make_run(b, age=OLD, status="waiting"),  # waiting for an approval
        make_run(c, age=RECENT),  # recent
        make_run(d, age=RECENT),
        make_run(d, age=RECENT),
    ]
    active_thread = Thread.objects.create(owner=owner, title="e")
    kept.append(make_run(active_thread, age=OLD, status="running"))
    old_closed = [make_connection(age=OLD).pk for _ in range(3)]
    kept_connections = [
        make_connection(age=RECENT).pk,
        make_connection(age=OLD, state=ConnectionState.CONNECTED).pk,
    ]
    return {
        "pruned_runs": [str(r) for r in pruned],
        "kept_runs": [str(r) for r in kept],
        "pruned_events": Event.objects.filter(run_id__in=pruned).count(),
        "kept_events": {str(r): Event.objects.filter(run_id=r).count() for r in kept},
        "pruned_connections": [str(pk) for pk in old_closed],
        "kept_connections": [str(pk) for pk in kept_connections],
        "messages": Message.objects.count(),
        "agent_runs": AgentRun.objects.count(),
    }


def state() -> dict[str, Any]:
    """What is in the database now, in the terms of `build`'s answer."""
    return {
        "events_by_run": {
            str(run_id): n
            for run_id, n in Event.objects.values_list("run_id").annotate(n=Count("id"))
        },
        "connections": sorted(str(pk) for pk in Connection.objects.values_list("pk", flat=True)),
        "state_log": ConnectionStateLog.objects.count(),
        "messages": Message.objects.count(),
        "agent_runs": AgentRun.objects.count(),
    }
