"""Writes of the agent runtime, each named run_<action> (sync; called through
database_sync_to_async). Reads are in agents/selectors.py."""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from agents import selectors
from agents.errors import run_in_progress, run_not_active
from agents.models import ACTIVE_STATUSES, AgentRun, RunAttempt, RunStatus
from chat import metrics
from chat.errors import NetraError, rate_limited, thread_not_found
from chat.events import event_append
from chat.hotcursor import hot_cursor, hot_db
from chat.inserts import PreparedInsert
from chat.models import Message
from chat.ports import SubmitResult
from chat.runevents import EventType
from chat.selectors import nth_newest_message_at

RATE_WINDOW = 60.0
# The rows of a submit and of a run's answer, their INSERTs compiled once (chat/inserts.py).
_MESSAGE_ROW = PreparedInsert(Message)
_RUN_ROW = PreparedInsert(AgentRun)
_ATTEMPT_ROW = PreparedInsert(RunAttempt)
# The run's end as the queryset update made it: this worker's run, still active. A status
# added to ACTIVE_STATUSES needs its placeholder here (the execute refuses a mismatch).
_FINISH = (
    "UPDATE agents_agentrun SET status = %s, finished_at = %s, error_code = %s,"
    " error_message = %s WHERE id = %s AND worker_id = %s AND status IN (%s, %s)"
)


@dataclass(frozen=True)
class RunSpec:
    """What the runtime needs to execute a run, read once at submit time."""

    run_id: uuid.UUID
    thread_id: uuid.UUID
    message_id: uuid.UUID
    assistant_message_id: uuid.UUID
    user_id: Any
    text: str
    agent: str
    # The attempt this worker executes (1 at submit; adoption increments it).
    attempt: int = 1
    # The user's name for ToolContext when known at submit (None: read when the run starts).
    username: str | None = None

    @classmethod
    def of(cls, run: AgentRun) -> "RunSpec":
        """The spec of a run read back from the database (select its message with it)."""
        return cls(
            run_id=run.id,
            thread_id=run.thread_id,
            message_id=run.message_id,
            assistant_message_id=run.assistant_message_id,
            user_id=run.user_id,
            text=run.message.text,
            agent=run.agent,
            attempt=run.attempt,
        )


@dataclass(frozen=True)
class NewRun:
    """A run just created: its spec, its agent_started as logged in the same transaction
    (None for a run recorded released, which its adopter starts), and the thread's messages
    before it (selectors.run_history), read once here."""

    spec: RunSpec
    started: dict[str, Any] | None
    history: list[dict[str, str]]


@dataclass(frozen=True)
class Adoption:
    """A run this worker took over: its spec at the new attempt, why it was free
    (`shutdown`: released by a draining worker; `worker_lost`: no heartbeat), whether it
    had started (then it is a continuation) and how many continuations it has had."""

    spec: RunSpec
    reason: str
    started: bool
    resumes: int
    cancel_requested: bool


class RunOwnershipLostError(RuntimeError):
    """The run was closed by someone else (the reaper) while this worker still held it."""


def _check_message_rate(user: Any) -> None:
    limit = settings.WS_RATE_MESSAGES_PER_MINUTE
    if limit <= 0:  # off: the operator limits elsewhere (a proxy), or a benchmark
        return
    oldest = nth_newest_message_at(user=user, seconds=RATE_WINDOW, n=limit)
    if oldest is not None:  # `limit` messages in the window already
        retry_after = RATE_WINDOW - (timezone.now() - oldest).total_seconds()
        metrics.RATE_LIMITED.labels(kind="messages").inc()
        raise rate_limited(
            f"At most {limit} messages a minute; retry in {max(retry_after, 0.1):.1f} s.",
            retry_after=round(max(retry_after, 0.1), 1),
        )


def run_create(
    *,
    thread_id: uuid.UUID,
    user: Any,
    text: str,
    client_msg_id: str,
    worker_id: str,
    probe: bool = False,
    released: bool = False,
) -> tuple[SubmitResult, NewRun | None]:
    """Records a user message and its run, answered by the thread's agent, running on
    `worker_id` with its agent_started logged, all in one transaction; idempotent on
    (thread, client_msg_id).

    Returns the answer and, for a new run, what executing it needs (NewRun). `released` (a
    draining worker) records the run queued and released instead, for another worker to
    adopt and start. Raises `thread_not_found` and `run_in_progress`. Concurrent submits
    are settled by the database's unique constraints (one message per client_msg_id, one
    active run per thread).
    """
    agent = selectors.submit_thread_agent(thread_id=thread_id, user=user, probe=probe)
    if agent is None:
        raise thread_not_found()
    try:
        _check_message_rate(user)
    except NetraError:
        # A retry of a message already recorded gets its ids, however many came since.
        found = selectors.submit_of(thread_id=thread_id, client_msg_id=client_msg_id)
        if found is not None:
            return found, None
        raise
    try:
        # A retry or a second active run is refused by a unique constraint (one message
        # per client_msg_id, one active run per thread): no lookup before the insert.
        with transaction.atomic():
            run_id = uuid.uuid4()
            message = _MESSAGE_ROW.insert(
                thread_id=thread_id,
                role=Message.Role.USER,
                text=text,
                client_msg_id=client_msg_id,
                run_id=run_id,
            )
            now = timezone.now()
            run = _RUN_ROW.insert(
                id=run_id,
                thread_id=thread_id,
                user_id=user.pk,
                message_id=message["id"],
                agent=agent,
                worker_id=worker_id,
                released=released,
                **({} if released else {"status": RunStatus.RUNNING, "started_at": now}),
                created_at=now,
                heartbeat_at=now,
            )
            _ATTEMPT_ROW.insert(
                run_id=run_id,
                number=1,
                worker_id=worker_id,
                reason=RunAttempt.Reason.SUBMITTED,
                created_at=now,
            )
            started = None
            if not released:
                started = event_append(
                    thread_id=thread_id,
                    run_id=run_id,
                    type=EventType.AGENT_STARTED.value,
                    data={"agent": agent, "message_id": str(message["id"])},
                )
    except IntegrityError as exc:
        found = selectors.submit_of(thread_id=thread_id, client_msg_id=client_msg_id)
        if found is not None:
            return found, None
        raise run_in_progress() from exc
    spec = RunSpec(
        run_id=run_id,
        thread_id=thread_id,
        message_id=message["id"],
        assistant_message_id=run["assistant_message_id"],
        user_id=user.pk,
        text=text,
        agent=agent,
        username=user.get_username(),
    )
    result = SubmitResult(message_id=message["id"], run_id=run_id, duplicate=False)
    return result, NewRun(spec, started, selectors.run_history(spec=spec))


def run_mark_running(*, run_id: uuid.UUID, worker_id: str) -> None:
    """Marks a run running (inside agent_started's transaction)."""
    now = timezone.now()
    updated = AgentRun.objects.filter(
        pk=run_id, worker_id=worker_id, status__in=ACTIVE_STATUSES
    ).update(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now)
    if updated != 1:
        raise RunOwnershipLostError(f"run {run_id} is no longer held by {worker_id}")


def run_mark_finished(
    *,
    spec: RunSpec,
    worker_id: str,
    status: str,
    text: str,
    error_code: str = "",
    error_message: str = "",
) -> None:
    """Records a run's end and its answer (inside agent_completed's transaction)."""
    finished_at = AgentRun._meta.get_field("finished_at")
    db = hot_db()
    params = [
        status,
        finished_at.get_db_prep_save(timezone.now(), db),
        error_code,
        error_message[:2000],
        AgentRun._meta.pk.get_db_prep_value(spec.run_id, db),
        worker_id,
        *(active.value for active in ACTIVE_STATUSES),
    ]
    with hot_cursor(db) as cursor:  # the ORM's update, without compiling it each time
        cursor.execute(_FINISH, params)
        updated = cursor.rowcount
    if updated != 1:
        raise RunOwnershipLostError(f"run {spec.run_id} is no longer held by {worker_id}")
    if text:
        _MESSAGE_ROW.insert(
            id=spec.assistant_message_id,
            thread_id=spec.thread_id,
            role=Message.Role.ASSISTANT,
            text=text,
            run_id=spec.run_id,
        )


def run_heartbeat(
    *, run_ids: list[uuid.UUID], worker_id: str
) -> tuple[set[uuid.UUID], set[uuid.UUID], set[uuid.UUID]]:
    """Refreshes the heartbeat of this worker's runs; returns (cancel requested, lost:
    held elsewhere or ended, gone: deleted with their thread)."""
    if not run_ids:
        return set(), set(), set()
    AgentRun.objects.filter(pk__in=run_ids, worker_id=worker_id, status__in=ACTIVE_STATUSES).update(
        heartbeat_at=timezone.now()
    )
    rows = AgentRun.objects.filter(pk__in=run_ids).values_list(
        "id", "worker_id", "status", "cancel_requested"
    )
    held = {rid for rid, wid, status, _ in rows if wid == worker_id and status in ACTIVE_STATUSES}
    cancel = {rid for rid, wid, status, flag in rows if flag and rid in held}
    gone = set(run_ids) - {rid for rid, *_ in rows}
    return cancel, set(run_ids) - held - gone, gone


def run_request_cancel(*, run_id: uuid.UUID, user: Any) -> AgentRun:
    """Flags an active run of the user's for cancellation; raises run_not_active."""
    run = selectors.run_for_user(run_id=run_id, user=user)
    updated = AgentRun.objects.filter(pk=run.pk, status__in=ACTIVE_STATUSES).update(
        cancel_requested=True
    )
    if updated != 1:
        raise run_not_active()
    run.cancel_requested = True
    return run


def run_release(*, run_ids: list[uuid.UUID], worker_id: str) -> int:
    """Releases this worker's active runs for another worker to adopt at once (drain);
    returns how many it released."""
    return AgentRun.objects.filter(
        pk__in=run_ids, worker_id=worker_id, status__in=ACTIVE_STATUSES
    ).update(released=True)


def run_adopt(*, run_id: uuid.UUID, stale_after: float, worker_id: str) -> Adoption | None:
    """Takes over a run that was released or whose heartbeat is older than `stale_after`:
    increments its attempt (fencing its former worker's writes) and records the attempt.
    Returns None if the run came back to life, was taken by someone else, or ended."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    with transaction.atomic():
        run = (
            AgentRun.objects.select_for_update()
            .select_related("message")
            .filter(pk=run_id, status__in=ACTIVE_STATUSES)
            .filter(Q(released=True) | Q(heartbeat_at__lt=cutoff))
            .first()
        )
        if run is None:
            return None
        reason = RunAttempt.Reason.SHUTDOWN if run.released else RunAttempt.Reason.WORKER_LOST
        started = run.started_at is not None
        run.attempt += 1
        run.resumes += 1 if started else 0
        run.worker_id = worker_id
        run.released = False
        run.heartbeat_at = timezone.now()
        run.save(update_fields=["attempt", "resumes", "worker_id", "released", "heartbeat_at"])
        RunAttempt.objects.create(run=run, number=run.attempt, worker_id=worker_id, reason=reason)
    return Adoption(
        spec=RunSpec.of(run),
        reason=str(reason),
        started=started,
        resumes=run.resumes,
        cancel_requested=run.cancel_requested,
    )


def run_request_cancel_thread(*, thread_id: uuid.UUID) -> list[uuid.UUID]:
    """Flags every active run of a thread for cancellation (the thread is being deleted);
    returns their ids."""
    run_ids = selectors.active_run_ids(thread_id=thread_id)
    AgentRun.objects.filter(pk__in=run_ids, status__in=ACTIVE_STATUSES).update(
        cancel_requested=True
    )
    return run_ids
