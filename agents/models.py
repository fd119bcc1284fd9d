"""Agent runs: one answer of the agent to one user message."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


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
                condition=Q(status__in=["queued", "running"]),
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
