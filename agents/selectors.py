"""Reads of the agent runtime (sync)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q
from django.utils import timezone

from agents.emitter import RunEmitter
from agents.errors import AgentFailure, run_not_found
from agents.models import ACTIVE_STATUSES, AgentRun
from chat.events import events_after, to_wire
from chat.hotcursor import hot_cursor, hot_db
from chat.models import Event, Message, Thread
from chat.ports import SubmitResult
from chat.runevents import fold_run

if TYPE_CHECKING:  # services import these reads; the run's spec is only a type here
    from agents.services import RunSpec


def run_journal(*, spec: RunSpec) -> list[dict[str, Any]]:
    """Returns the events this run logged so far, as clients see them, in seq order."""
    rows = (
        Event.objects.filter(thread_id=spec.thread_id, run_id=spec.run_id)
        .order_by("seq")
        .values_list("type", "seq", "created_at", "data")
    )
    return [
        to_wire(type=t, seq=s, thread_id=spec.thread_id, run_id=spec.run_id, created_at=c, data=d)
        for t, s, c, d in rows
    ]


def emitter_from_log(*, broadcaster: Any, spec: RunSpec) -> RunEmitter:
    """Rebuilds a run's emitter from its logged events, to close or continue the run
    elsewhere; it writes at the spec's attempt."""
    return emitter_from_journal(broadcaster=broadcaster, spec=spec, journal=run_journal(spec=spec))


def emitter_from_journal(
    *, broadcaster: Any, spec: RunSpec, journal: list[dict[str, Any]]
) -> RunEmitter:
    """Rebuilds a run's emitter from its journal (see run_journal)."""
    state = fold_run(journal)
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
        pending_approvals={a.approval_id: a.tool_call_id for a in state.pending_approvals.values()},
        is_started=state.started,
        is_completed=state.completed,
        attempt=spec.attempt,
        error=None
        if error is None
        else AgentFailure(error["code"], error["message"], retryable=bool(error.get("retryable"))),
    )


# --- runs: submits, history, ownership, staleness -------------------------------------------

HISTORY_LIMIT = 20


# The submit's two reads, in SQL: each is one indexed lookup, and building the same query
# through the ORM costs about 20 times running it (229 against 10 us on SQLite), on the path
# every question takes before its ack (docs/benchmarks.md, round 4).
_THREAD_AGENT = "SELECT agent FROM chat_thread WHERE id = %s AND owner_id = %s AND is_probe = %s"
_HISTORY = (
    "SELECT role, text FROM chat_message WHERE thread_id = %s AND id <> %s"
    " ORDER BY created_at DESC LIMIT %s"
)


def submit_thread_agent(*, thread_id: uuid.UUID, user: Any, probe: bool) -> str | None:
    """Returns the agent of the user's thread, or None if it is not theirs (or no such
    thread, or not of the kind asked: a health-check probe's or a user's)."""
    db = hot_db()
    with hot_cursor(db) as cursor:
        owner = Thread._meta.get_field("owner").get_db_prep_value(user.pk, db)
        cursor.execute(_THREAD_AGENT, [_uuid_param(Thread, thread_id, db), owner, probe])
        row = cursor.fetchone()
    return None if row is None else str(row[0])


def submit_of(*, thread_id: uuid.UUID, client_msg_id: str) -> SubmitResult | None:
    """Returns the earlier submit of this client_msg_id on the thread (a retry), or None."""
    message = Message.objects.filter(thread_id=thread_id, client_msg_id=client_msg_id).first()
    if message is None:
        return None
    run_id = AgentRun.objects.filter(message=message).values_list("id", flat=True).first()
    assert run_id is not None, "a user message with a client_msg_id always has its run"
    return SubmitResult(message_id=message.id, run_id=run_id, duplicate=True)


def run_history(*, spec: RunSpec) -> list[dict[str, str]]:
    """Returns the thread's messages before this run's, oldest first (bounded)."""
    db = hot_db()
    params = [
        _uuid_param(Thread, spec.thread_id, db),
        _uuid_param(Message, spec.message_id, db),
        HISTORY_LIMIT,
    ]
    with hot_cursor(db) as cursor:
        cursor.execute(_HISTORY, params)
        rows = cursor.fetchall()
    return [{"role": role, "text": text} for role, text in reversed(rows)]


def _uuid_param(model: Any, value: uuid.UUID, db: BaseDatabaseWrapper) -> Any:
    """A UUID primary key as database `db` takes it (hex text on SQLite, uuid on PostgreSQL)."""
    return model._meta.pk.get_db_prep_value(value, db)


def username_of(*, user_id: Any) -> str:
    """Returns the username of a run's user ("" if the account is gone), for ToolContext."""
    name = get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first()
    return name or ""


def run_for_user(*, run_id: uuid.UUID, user: Any) -> AgentRun:
    """Returns the user's run, or raises the 404 that hides other users' runs."""
    run = AgentRun.objects.filter(pk=run_id, user=user).first()
    if run is None:
        raise run_not_found()
    return run


def stale_runs(*, stale_after: float) -> list[AgentRun]:
    """Returns active runs whose heartbeat is older than `stale_after` seconds."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    return list(
        AgentRun.objects.filter(status__in=ACTIVE_STATUSES, heartbeat_at__lt=cutoff).select_related(
            "message"
        )
    )


def active_run_ids(*, thread_id: uuid.UUID) -> list[uuid.UUID]:
    """Returns the ids of the thread's queued or running runs."""
    return list(
        AgentRun.objects.filter(thread_id=thread_id, status__in=ACTIVE_STATUSES).values_list(
            "id", flat=True
        )
    )


def adoptable_runs(*, stale_after: float) -> list[uuid.UUID]:
    """Returns the ids of active runs another worker may take over: released by a draining
    worker, or silent for `stale_after` seconds; released ones first, oldest first."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    return list(
        AgentRun.objects.filter(status__in=ACTIVE_STATUSES)
        .filter(Q(released=True) | Q(heartbeat_at__lt=cutoff))
        .order_by("-released", "created_at")
        .values_list("id", flat=True)
    )


def run_of_client_msg(*, user: Any, client_msg_id: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(thread id, run id) of the user's run started with this client_msg_id (an AG-UI
    runId), the newest if several threads have one; None if there is none."""
    row = (
        AgentRun.objects.filter(
            user=user, message__client_msg_id=client_msg_id, thread__is_probe=False
        )
        .order_by("-created_at")
        .values_list("thread_id", "id")
        .first()
    )
    return None if row is None else (row[0], row[1])


def run_events_through(
    *, thread_id: uuid.UUID, run_id: uuid.UUID, seq: int
) -> list[dict[str, Any]]:
    """The run's logged events (envelopes) with seq <= `seq`, in order."""
    first = (
        Event.objects.filter(thread_id=thread_id, run_id=run_id)
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    if first is None or first > seq:
        return []
    page = events_after(thread_id=thread_id, after_seq=first - 1, up_to=seq)
    return [event for event in page if event["run_id"] == str(run_id)]
