"""What the operations page shows: connection states, auth failures, stuck connections,
unpaired tool calls, failed runs, table sizes and the last prune, read from the database
(sync)."""

from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, F
from django.utils import timezone

from agents.models import ACTIVE_STATUSES, AgentRun, RunStatus
from chat.models import Connection, ConnectionState, ConnectionStateLog, Event, Message, Thread
from chat.pruning import last_prune
from chat.runevents import EventType, fold_run

INTERMEDIATE = (
    ConnectionState.CONNECTING,
    ConnectionState.AUTHENTICATING,
    ConnectionState.CLOSING,
    ConnectionState.REJECTED,
    ConnectionState.FAILED,
)


def ops_overview() -> dict[str, Any]:
    """Returns the figures of the operations page."""
    now = timezone.now()
    states = dict(
        Connection.objects.exclude(state=ConnectionState.CLOSED)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    refusals = ConnectionStateLog.objects.filter(
        to_state=ConnectionState.REJECTED, created_at__gte=now - timedelta(hours=1)
    ).values_list("reason", flat=True)
    auth_failures = Counter(reason.split(":", 1)[0] for reason in refusals)
    stuck = list(
        Connection.objects.filter(
            state__in=INTERMEDIATE,
            state_changed_at__lt=now - timedelta(seconds=settings.WS_STUCK_AFTER),
        ).select_related("user")[:50]
    )
    active = list(AgentRun.objects.filter(status__in=ACTIVE_STATUSES).select_related("thread"))
    unpaired = []
    for run in active:
        rows = (
            Event.objects.filter(
                thread_id=run.thread_id,
                run_id=run.id,
                type__in=(EventType.TOOL_EXECUTING, EventType.TOOL_COMPLETED),
            )
            .order_by("seq")
            .values("type", "seq", "data", ts=F("created_at"))
        )
        unpaired += [
            {"run": run, "tool_call_id": call.tool_call_id, "tool": call.tool, "since": call.ts}
            for call in fold_run(rows).open_calls.values()
        ]
    failed = list(AgentRun.objects.filter(status=RunStatus.FAILED).order_by("-finished_at")[:20])
    return {
        "states": states,
        "auth_failures": dict(auth_failures),
        "stuck": stuck,
        "active_runs": active,
        "unpaired": unpaired,
        "failed_runs": failed,
        "tables": table_sizes(),
        "last_prune": last_prune(),
        "retention": {
            "events_days": settings.EVENT_RETENTION_DAYS,
            "connections_days": settings.CONNECTION_LOG_RETENTION_DAYS,
        },
        "now": now,
    }


SIZED = (Thread, Message, AgentRun, Event, Connection, ConnectionStateLog)


def table_sizes() -> list[dict[str, Any]]:
    """Rows (and, on PostgreSQL, bytes) of the tables that grow; on PostgreSQL the row
    count is the planner's estimate, so the page stays cheap on a big event log."""
    tables = [model._meta.db_table for model in SIZED]
    if connection.vendor != "postgresql":
        return [
            {"table": model._meta.db_table, "rows": model._default_manager.count(), "bytes": None}
            for model in SIZED
        ]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, greatest(reltuples, 0)::bigint, pg_total_relation_size(oid) "
            "FROM pg_class WHERE relname = ANY(%s)",
            [tables],
        )
        found = {name: (rows, size) for name, rows, size in cursor.fetchall()}
    return [
        {"table": table, "rows": found.get(table, (0, 0))[0], "bytes": found.get(table, (0, 0))[1]}
        for table in tables
    ]
