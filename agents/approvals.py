"""Approvals in the database: the writes (each `run_<action>`) and reads of a tool call
that waits for its run's user (docs/protocol.md). The run's side (asking, then going on
after the answer) is in agents/approval_flow.py.

A pending approval's run has the status `waiting`: no worker holds it, nothing
heartbeats it, and neither adoption nor the reaper touches it. Whoever answers first
(a socket frame, the HTTP API, the expiry sweep, a cancel) sets the decision with one
conditional UPDATE and, in the same transaction, takes the run over at the next attempt
(`Adoption`, reason `approval`), to continue it from its journal on that worker.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from agents.models import ACTIVE_STATUSES, AgentRun, Approval, RunAttempt, RunStatus
from agents.selectors import run_for_user
from agents.services import Adoption, RunOwnershipLostError, RunSpec
from chat.errors import approval_not_found, approval_resolved
from chat.events import isoformat

CANCELLED_COMMENT = "run cancelled"
MAX_COMMENT = 2000


def run_request_approval(
    *,
    run_id: uuid.UUID,
    approval_id: uuid.UUID,
    tool_call_id: str,
    tool: str,
    args: Any,
    reason: str,
    expires_at: datetime,
) -> None:
    """Records a pending approval and sets its run `waiting` (inside approval_requested's
    transaction, so the event, the row and the status commit together)."""
    updated = AgentRun.objects.filter(pk=run_id, status__in=ACTIVE_STATUSES).update(
        status=RunStatus.WAITING, released=False
    )
    if updated != 1:
        raise RunOwnershipLostError(f"run {run_id} is no longer active")
    Approval.objects.create(
        id=approval_id,
        run_id=run_id,
        tool_call_id=tool_call_id,
        tool=tool,
        args=args if isinstance(args, dict) else {"value": args},
        reason=reason,
        expires_at=expires_at,
    )


def _take_waiting_run(
    *, run_id: uuid.UUID, worker_id: str, cancel: bool = False
) -> Adoption | None:
    """Takes a waiting run over for `worker_id` at the next attempt (inside the caller's
    transaction); None if the run is not waiting (ended, or still running)."""
    run = (
        AgentRun.objects.select_for_update()
        .select_related("message")
        .filter(pk=run_id, status=RunStatus.WAITING)
        .first()
    )
    if run is None:
        return None
    run.status = RunStatus.RUNNING
    run.attempt += 1
    run.worker_id = worker_id
    run.released = False
    run.heartbeat_at = timezone.now()
    run.cancel_requested = run.cancel_requested or cancel
    run.save(
        update_fields=[
            "status",
            "attempt",
            "worker_id",
            "released",
            "heartbeat_at",
            "cancel_requested",
        ]
    )
    RunAttempt.objects.create(
        run=run, number=run.attempt, worker_id=worker_id, reason=RunAttempt.Reason.APPROVAL
    )
    return Adoption(
        spec=RunSpec.of(run),
        reason=str(RunAttempt.Reason.APPROVAL),
        started=True,
        resumes=run.resumes,
        cancel_requested=run.cancel_requested,
    )


def _decide(approvals: Any, *, decision: str, comment: str, resolved_by: Any, now: datetime) -> int:
    return int(
        approvals.filter(decision__isnull=True).update(
            decision=decision,
            comment=comment[:MAX_COMMENT],
            resolved_at=now,
            resolved_by=resolved_by,
        )
    )


def run_resolve_approval(
    *, approval_id: uuid.UUID, user: Any, decision: str, comment: str, worker_id: str
) -> Adoption | None:
    """Answers the user's approval (`approved` or `denied`) and takes its run over for
    `worker_id`; returns the adoption to continue (None if the run is not waiting).

    Raises approval_not_found for a missing approval and another user's alike, and
    approval_resolved when it was answered (or expired) already."""
    run_id = (
        Approval.objects.filter(pk=approval_id, run__user=user)
        .values_list("run_id", flat=True)
        .first()
    )
    if run_id is None:
        raise approval_not_found()
    with transaction.atomic():
        mine = Approval.objects.filter(pk=approval_id)
        now = timezone.now()
        if not _decide(mine, decision=decision, comment=comment, resolved_by=user, now=now):
            raise approval_resolved()
        return _take_waiting_run(run_id=run_id, worker_id=worker_id)


def run_expire_approvals(*, worker_id: str, now: datetime | None = None) -> list[Adoption]:
    """Resolves every pending approval past its expires_at as `expired` and takes their
    runs over for `worker_id`; returns the adoptions to continue."""
    now = now or timezone.now()
    due = Approval.objects.filter(decision__isnull=True, expires_at__lte=now).values_list(
        "id", "run_id"
    )
    adoptions = []
    for approval_id, run_id in list(due[:100]):
        with transaction.atomic():
            mine = Approval.objects.filter(pk=approval_id)
            if not _decide(mine, decision="expired", comment="", resolved_by=None, now=now):
                continue  # answered a moment ago by someone else
            adoption = _take_waiting_run(run_id=run_id, worker_id=worker_id)
        if adoption is not None:
            adoptions.append(adoption)
    return adoptions


def run_cancel_waiting(*, run_id: uuid.UUID, user: Any, worker_id: str) -> Adoption | None:
    """Cancels the user's waiting run: its pending approvals are denied with the comment
    "run cancelled" and the run is taken over for `worker_id` to end it cancelled.
    Returns None if the run is not waiting; raises run_not_found for another user's."""
    run = run_for_user(run_id=run_id, user=user)
    with transaction.atomic():
        if not AgentRun.objects.filter(pk=run.pk, status=RunStatus.WAITING).exists():
            return None
        pending = Approval.objects.filter(run_id=run.pk)
        _decide(
            pending,
            decision="denied",
            comment=CANCELLED_COMMENT,
            resolved_by=user,
            now=timezone.now(),
        )
        return _take_waiting_run(run_id=run.pk, worker_id=worker_id, cancel=True)


# --- reads ------------------------------------------------------------------------------------


def decisions_of(*, approval_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Returns {approval_id: (decision, comment)} of those answered."""
    rows = Approval.objects.filter(pk__in=approval_ids, decision__isnull=False).values_list(
        "id", "decision", "comment"
    )
    return {str(pk): (str(decision), comment) for pk, decision, comment in rows}


def approval_to_json(approval: Approval) -> dict[str, Any]:
    """Returns a pending approval as `GET /api/threads/<id>/` lists it."""
    return {
        "approval_id": str(approval.id),
        "run_id": str(approval.run_id),
        "tool_call_id": approval.tool_call_id,
        "tool": approval.tool,
        "args": approval.args,
        "reason": approval.reason,
        "expires_at": isoformat(approval.expires_at),
    }


def pending_approvals(*, thread_id: uuid.UUID) -> list[dict[str, Any]]:
    """Returns the thread's pending approvals, oldest first."""
    rows = Approval.objects.filter(run__thread_id=thread_id, decision__isnull=True).order_by(
        "created_at"
    )
    return [approval_to_json(a) for a in rows]


def pending_summary(*, now: datetime | None = None) -> tuple[int, float]:
    """Returns (how many approvals are pending, the age in seconds of the oldest)."""
    now = now or timezone.now()
    pending = Approval.objects.filter(decision__isnull=True)
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return pending.count(), max(age, 0.0)


def expires_at_from_now(seconds: float) -> datetime:
    """The expiry of an approval asked now."""
    return timezone.now() + timedelta(seconds=seconds)
