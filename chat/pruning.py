"""Pruning of the event log and the connection log (the policy is in docs/operations.md).

The event log loses whole finished runs only: a run is finished once its `agent_completed`
is logged, and it is pruned when that is older than EVENT_RETENTION_DAYS, unless it is the
thread's newest logged run. An active run, or one waiting for an approval, has no
`agent_completed` yet, so it is never a candidate. Each batch is one DELETE statement over
whole runs, so no transaction holds a part of a run, and none holds more than about
PRUNE_BATCH_SIZE row locks. Messages and the AgentRun rows stay (the chat history, each
run's status, timing and error); `runs` counts the runs whose events were pruned.

Closed connections older than CONNECTION_LOG_RETENTION_DAYS go with their state log.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, F, OuterRef, QuerySet, Subquery
from django.utils import timezone

from chat import metrics
from chat.models import Connection, ConnectionState, ConnectionStateLog, Event, PruneRecord
from chat.runevents import EventType

logger = logging.getLogger("netra.pruning")

# How many run ids one counting query takes.
COUNT_CHUNK = 500
# The pause of the scheduled prune between two batches, in seconds.
BATCH_PAUSE = 0.05


@dataclass(frozen=True)
class PrunePlan:
    """What a prune would delete now."""

    runs: int
    events: int
    connections: int
    state_log: int

    def lines(self) -> list[str]:
        """One line per kind, as `manage.py prune --dry-run` prints them."""
        return [
            f"events: {self.events} (of {self.runs} finished runs)",
            f"runs: {self.runs} (their events only; the run rows and messages stay)",
            f"connections: {self.connections} (with {self.state_log} state log rows)",
        ]


@dataclass
class PruneReport:
    """What a prune deleted, and each batch: (kind, rows, seconds)."""

    runs: int = 0
    events: int = 0
    connections: int = 0
    state_log: int = 0
    batches: list[tuple[str, int, float]] = field(default_factory=list)

    @property
    def longest_batch_ms(self) -> float:
        """The longest batch transaction, in milliseconds."""
        return max((seconds for _, _, seconds in self.batches), default=0.0) * 1000


def event_cutoff(now: datetime) -> datetime | None:
    """The time before which finished runs are pruned, or None when events are kept."""
    days = settings.EVENT_RETENTION_DAYS
    return None if days <= 0 else now - timedelta(days=days)


def connection_cutoff(now: datetime) -> datetime | None:
    """The time before which closed connections are pruned, or None when they are kept."""
    days = settings.CONNECTION_LOG_RETENTION_DAYS
    return None if days <= 0 else now - timedelta(days=days)


def prunable_run_ids(*, now: datetime) -> list[uuid.UUID]:
    """The finished runs whose events may be pruned: agent_completed before the cutoff,
    not the newest logged run of their thread (a plain read; it takes no lock)."""
    cutoff = event_cutoff(now)
    if cutoff is None:
        return []
    newest = Event.objects.filter(
        thread_id=OuterRef("thread_id"), seq=OuterRef("thread__last_seq")
    ).values("run_id")[:1]
    rows = (
        Event.objects.filter(type=EventType.AGENT_COMPLETED, created_at__lt=cutoff)
        .annotate(newest_run=Subquery(newest))
        .filter(newest_run__isnull=False)
        .exclude(run_id=F("newest_run"))
        .order_by("created_at")
        .values_list("run_id", flat=True)
    )
    return list(dict.fromkeys(rows))


def _event_counts(run_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    counts: dict[uuid.UUID, int] = {}
    for start in range(0, len(run_ids), COUNT_CHUNK):
        chunk = run_ids[start : start + COUNT_CHUNK]
        rows = (
            Event.objects.filter(run_id__in=chunk)
            .values("run_id")
            .annotate(n=Count("id"))
            .values_list("run_id", "n")
        )
        counts.update(rows)
    return {run_id: counts[run_id] for run_id in run_ids if run_id in counts}  # oldest first


def run_batches(counts: dict[uuid.UUID, int], *, batch_size: int) -> Iterator[list[uuid.UUID]]:
    """Groups whole runs into batches of at most `batch_size` events; a run bigger than
    that is a batch of its own."""
    batch: list[uuid.UUID] = []
    size = 0
    for run_id, n in counts.items():
        if batch and size + n > batch_size:
            yield batch
            batch, size = [], 0
        batch.append(run_id)
        size += n
    if batch:
        yield batch


def _closed_connections(*, now: datetime) -> QuerySet[Connection]:
    cutoff = connection_cutoff(now)
    if cutoff is None:
        return Connection.objects.none()
    return Connection.objects.filter(state=ConnectionState.CLOSED, closed_at__lt=cutoff)


def prune_plan(*, now: datetime | None = None) -> PrunePlan:
    """Counts what a prune would delete now, deleting nothing."""
    now = now or timezone.now()
    counts = _event_counts(prunable_run_ids(now=now))
    connections = _closed_connections(now=now)
    return PrunePlan(
        runs=len(counts),
        events=sum(counts.values()),
        connections=connections.count(),
        state_log=ConnectionStateLog.objects.filter(connection__in=connections).count(),
    )


def delete_runs_batch(run_ids: list[uuid.UUID]) -> int:
    """Deletes every event of these runs in one statement; returns how many."""
    deleted, _ = Event.objects.filter(run_id__in=run_ids).delete()
    return deleted


def delete_connections_batch(*, now: datetime, batch_size: int) -> tuple[int, int]:
    """Deletes up to `batch_size` closed, expired connections and their state log in one
    transaction; returns (connections, state log rows)."""
    with transaction.atomic():
        pks = list(
            _closed_connections(now=now)
            .order_by("closed_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not pks:
            return 0, 0
        logged, _ = ConnectionStateLog.objects.filter(connection_id__in=pks).delete()
        _, by_model = Connection.objects.filter(pk__in=pks).delete()
    return by_model.get(Connection._meta.label, 0), logged


def iter_prune(
    report: PruneReport, *, now: datetime | None = None, batch_size: int | None = None
) -> Iterator[None]:
    """Prunes batch by batch into `report`, yielding after each batch so that a caller can
    pause between them (housekeeping does) or stop (sync; database)."""
    now = now or timezone.now()
    batch_size = batch_size or settings.PRUNE_BATCH_SIZE
    counts = _event_counts(prunable_run_ids(now=now))
    for batch in run_batches(counts, batch_size=batch_size):
        began = time.monotonic()
        deleted = delete_runs_batch(batch)
        report.batches.append(("events", deleted, time.monotonic() - began))
        report.runs += len(batch)
        report.events += deleted
        metrics.PRUNED.labels(kind="runs").inc(len(batch))
        metrics.PRUNED.labels(kind="events").inc(deleted)
        yield
    while True:
        began = time.monotonic()
        connections, logged = delete_connections_batch(now=now, batch_size=batch_size)
        if not connections:
            return
        report.batches.append(("connections", connections + logged, time.monotonic() - began))
        report.connections += connections
        report.state_log += logged
        metrics.PRUNED.labels(kind="connections").inc(connections)
        yield


def run_prune(*, now: datetime | None = None, batch_size: int | None = None) -> PruneReport:
    """Prunes everything due, batch by batch, and records it (sync; database)."""
    record = PruneRecord.objects.create(trigger=PruneRecord.Trigger.COMMAND)
    report = PruneReport()
    for _ in iter_prune(report, now=now, batch_size=batch_size):
        continue
    record_finished(record=record, report=report)
    return report


def prune_claim(*, now: datetime | None = None) -> PruneRecord | None:
    """Claims this PRUNE_INTERVAL's scheduled prune; None if a process already has it."""
    now = now or timezone.now()
    slot = int(now.timestamp() // settings.PRUNE_INTERVAL)
    try:
        with transaction.atomic():
            return PruneRecord.objects.create(trigger=PruneRecord.Trigger.SCHEDULED, slot=slot)
    except IntegrityError:
        return None


def run_scheduled_prune(*, stop: threading.Event) -> PruneReport | None:
    """The daily prune of housekeeping: claims this interval's prune (None if another
    process has it), then prunes batch by batch with a pause between batches, so that other
    writers get the database in between; `stop` ends it early (sync; its own thread)."""
    record = prune_claim()
    if record is None:
        return None
    report = PruneReport()
    try:
        for _ in iter_prune(report):
            if stop.wait(BATCH_PAUSE):
                record_finished(record=record, report=report, error="stopped with the process")
                return report
    except DatabaseError as exc:
        logger.warning("prune failed after %d batches: %s", len(report.batches), exc)
        _record_failure(record=record, report=report, exc=exc)
        raise
    record_finished(record=record, report=report)
    return report


def _record_failure(*, record: PruneRecord, report: PruneReport, exc: DatabaseError) -> None:
    try:
        record_finished(record=record, report=report, error=f"{type(exc).__name__}: {exc}")
    except DatabaseError as again:
        logger.warning("could not record the failed prune %s: %s", record.pk, again)


def record_finished(*, record: PruneRecord, report: PruneReport, error: str = "") -> None:
    """Writes what a prune did into its record and logs it."""
    record.finished_at = timezone.now()
    record.events, record.runs, record.connections = report.events, report.runs, report.connections
    record.batches, record.longest_batch_ms = len(report.batches), report.longest_batch_ms
    record.error = error[:2000]
    record.save()
    logger.info(
        "pruned %d events of %d runs and %d connections in %d batches (longest %.1f ms)",
        report.events,
        report.runs,
        report.connections,
        len(report.batches),
        report.longest_batch_ms,
        extra={"prune_id": record.pk, "trigger": record.trigger},
    )


def last_prune() -> PruneRecord | None:
    """The most recent prune that ran (the operations page shows it)."""
    return PruneRecord.objects.order_by("-started_at").first()
