"""Agent runs: one answer of the agent to one user message."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    # Waiting for a human to answer an approval: no worker holds it (docs/protocol.md).
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Held by a worker: heartbeated, adoptable when its worker is gone.
ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
# Not finished: a new message on the thread must wait (one open run per thread).
OPEN_STATUSES = (*ACTIVE_STATUSES, RunStatus.WAITING)


class AgentRun(models.Model):
    """A run of the agent on a thread; at most one is active per thread."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey("chat.Thread", on_delete=models.CASCADE, related_name="runs")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent_runs"
    )
    message = models.OneToOneField(
        "chat.Message", on_delete=models.CASCADE, related_name="triggered_run"
    )
    assistant_message_id = models.UUIDField(default=uuid.uuid4, editable=False)
    agent = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)
    worker_id = models.CharField(max_length=128, blank=True, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # Fencing: adoption by another worker increments it; every event write of the run
    # checks it in the write's transaction (chat.events), so an older attempt cannot write.
    attempt = models.PositiveIntegerField(default=1)
    # How many times the run was continued after its worker was gone (RUN_MAX_RESUMES).
    resumes = models.PositiveIntegerField(default=0)
    # Set by a draining worker: another worker adopts the run at its next reaper sweep.
    released = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["thread"],
                condition=Q(status__in=["queued", "running", "waiting"]),
                name="agentrun_one_active_per_thread",
            )
        ]

    def __str__(self) -> str:
        return f"run {str(self.id)[:8]} {self.status}"

    @property
    def is_active(self) -> bool:
        """True while queued or running."""
        return self.status in ACTIVE_STATUSES


class RunAttempt(models.Model):
    """Which worker ran each part of a run, and why it took the run (for the admin)."""

    class Reason(models.TextChoices):
        SUBMITTED = "submitted"
        SHUTDOWN = "shutdown"
        WORKER_LOST = "worker_lost"
        # Taken by the worker that received an approval's answer (or its expiry).
        APPROVAL = "approval"

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    worker_id = models.CharField(max_length=128)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="runattempt_one_per_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of run {str(self.run_id)[:8]} on {self.worker_id}"


class Approval(models.Model):
    """A tool call waiting for its run's user to say yes or no (docs/protocol.md).

    `decision` is null while pending; it is set once, by one conditional UPDATE
    (agents/approvals.py), whichever worker or request answers first."""

    class Decision(models.TextChoices):
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="approvals")
    tool_call_id = models.CharField(max_length=128)
    tool = models.CharField(max_length=128)
    args = models.JSONField(default=dict)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    # NULL while pending: answering is `UPDATE ... WHERE decision IS NULL` (one winner).
    decision = models.CharField(  # noqa: DJ001 - NULL is the pending state, not ""
        max_length=16, choices=Decision.choices, null=True, blank=True
    )
    comment = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["expires_at"],
                condition=Q(decision__isnull=True),
                name="approval_pending_expiry",
            )
        ]

    def __str__(self) -> str:
        return f"approval {str(self.id)[:8]} of {self.tool} {self.decision or 'pending'}"
