"""What the operations page shows: connection states, auth failures, stuck connections,
unpaired tool calls and failed runs, read from the database (sync)."""

from collections import Counter
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, F
from django.utils import timezone

from agents.models import ACTIVE_STATUSES, AgentRun, RunStatus
from chat.models import Connection, ConnectionState, ConnectionStateLog, Event
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
        "now": now,
    }
