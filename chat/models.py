"""Threads, messages, the event log, connections with their state log, and API tokens."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def default_agent() -> str:
    """The agent of a thread created without naming one (NETRA_DEFAULT_AGENT)."""
    return str(settings.NETRA_DEFAULT_AGENT)


class Thread(models.Model):
    """A conversation owned by one user; its events are numbered by `last_seq`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="threads"
    )
    title = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_activity = models.DateTimeField(auto_now_add=True, db_index=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    is_probe = models.BooleanField(default=False, help_text="Internal health-check thread.")
    agent = models.CharField(
        max_length=100, default=default_agent, help_text="The NETRA_AGENTS name answering it."
    )

    class Meta:
        ordering = ["-last_activity"]

    def __str__(self) -> str:
        return self.title or f"Thread {str(self.id)[:8]}"


class Message(models.Model):
    """A user's question or the agent's answer in a thread."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField()
    # NULL, not "", so that the uniqueness below binds only messages that carry an id.
    client_msg_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    run_id = models.UUIDField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "client_msg_id"],
                condition=Q(client_msg_id__isnull=False),
                name="message_unique_client_msg_id",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:40]}"


class Event(models.Model):
    """One run event in the thread's log; `seq` counts from 1 per thread with no gaps."""

    id = models.BigAutoField(primary_key=True)
    # No index of its own: the unique (thread, seq) index below starts with the thread and
    # serves every lookup by thread; a second index on it cost each logged event one more
    # B-tree insert and page write (docs/benchmarks.md, round 9).
    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    run_id = models.UUIDField(db_index=True)
    type = models.CharField(max_length=32)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["thread", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["thread", "seq"], name="event_unique_thread_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class ConnectionState(models.TextChoices):
    CONNECTING = "CONNECTING"
    AUTHENTICATING = "AUTHENTICATING"
    CONNECTED = "CONNECTED"
    CLOSING = "CLOSING"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


class Connection(models.Model):
    """One WebSocket connection, from handshake to close."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="connections",
    )
    thread = models.ForeignKey(
        Thread, null=True, blank=True, on_delete=models.SET_NULL, related_name="connections"
    )
    requested_thread = models.CharField(max_length=64, blank=True)
    token = models.ForeignKey(
        "ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="connections"
    )
    state = models.CharField(
        max_length=16,
        choices=ConnectionState.choices,
        default=ConnectionState.CONNECTING,
        db_index=True,
    )
    opened_at = models.DateTimeField(default=timezone.now, db_index=True)
    state_changed_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.IntegerField(null=True, blank=True)
    client_addr = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    worker_id = models.CharField(max_length=128, blank=True, db_index=True)

    class Meta:
        ordering = ["-opened_at"]

    def __str__(self) -> str:
        return f"{str(self.id)[:8]} {self.state}"


class ConnectionStateLog(models.Model):
    """One transition of a connection's state, with its reason."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="state_log")
    from_state = models.CharField(max_length=16, choices=ConnectionState.choices)
    to_state = models.CharField(max_length=16, choices=ConnectionState.choices)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.from_state} -> {self.to_state}"


class ApiToken(models.Model):
    """A bearer token for API clients; only its SHA-256 digest is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def is_active(self) -> bool:
        """True while the token has not been revoked."""
        return self.revoked_at is None


class ServerProcess(models.Model):
    """A server process that holds sockets; its heartbeat tells the reaper it is alive."""

    worker_id = models.CharField(max_length=128, primary_key=True)
    hostname = models.CharField(max_length=200)
    pid = models.IntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-heartbeat_at"]

    def __str__(self) -> str:
        return self.worker_id


class PruneRecord(models.Model):
    """One prune of the event log and the connection log (docs/operations.md).

    A scheduled prune carries its `slot` (the number of PRUNE_INTERVALs since the epoch);
    the unique slot lets one process of a cluster claim each day's prune.
    """

    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled"
        COMMAND = "command"

    id = models.BigAutoField(primary_key=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    slot = models.BigIntegerField(null=True, blank=True, unique=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    events = models.BigIntegerField(default=0)
    runs = models.BigIntegerField(default=0)
    connections = models.BigIntegerField(default=0)
    batches = models.IntegerField(default=0)
    longest_batch_ms = models.FloatField(default=0.0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"prune {self.started_at:%Y-%m-%d %H:%M} ({self.trigger})"
