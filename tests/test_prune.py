"""Retention: `manage.py prune` takes whole finished runs only, never a thread's newest run
or an active or waiting one, and closed connections with their state log; on SQLite here
and on PostgreSQL in a subprocess; the dry run deletes nothing; batches are bounded."""

import io
import json
import math
import subprocess
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from chat import pruning
from chat.models import Event, PruneRecord
from tests import lifecycle_scenario
from tests.cluster import postgres_database, require_postgres
from tests.servers import PYTHON, ROOT, base_env

pytestmark = [pytest.mark.django_db(transaction=True)]


def pruned_total(kind: str) -> float:
    return REGISTRY.get_sample_value("netra_pruned_total", {"kind": kind}) or 0.0


def assert_pruned_as_planned(plan: dict[str, Any], after: dict[str, Any]) -> None:
    """Whole runs went, the kept runs are whole, messages and run rows all stayed."""
    by_run = after["events_by_run"]
    assert not set(plan["pruned_runs"]) & set(by_run), "a pruned run left events"
    assert {run: by_run.get(run) for run in plan["kept_runs"]} == plan["kept_events"]
    assert after["messages"] == plan["messages"]
    assert after["agent_runs"] == plan["agent_runs"]
    assert not set(plan["pruned_connections"]) & set(after["connections"])
    assert set(plan["kept_connections"]) <= set(after["connections"])
    assert after["state_log"] == 3 * len(plan["kept_connections"])


def test_prune_takes_whole_old_finished_runs_and_keeps_the_rest() -> None:
    plan = lifecycle_scenario.build()
    before = {kind: pruned_total(kind) for kind in ("events", "runs", "connections")}
    report = pruning.run_prune()
    assert (report.runs, report.events) == (len(plan["pruned_runs"]), plan["pruned_events"])
    assert report.connections == len(plan["pruned_connections"])
    assert report.state_log == 3 * len(plan["pruned_connections"])
    assert_pruned_as_planned(plan, lifecycle_scenario.state())
    assert pruned_total("events") - before["events"] == plan["pruned_events"]
    assert pruned_total("runs") - before["runs"] == len(plan["pruned_runs"])
    assert pruned_total("connections") - before["connections"] == 3
    record = pruning.last_prune()
    assert record is not None and record.finished_at is not None
    assert (record.events, record.runs, record.connections) == (
        plan["pruned_events"],
        len(plan["pruned_runs"]),
        3,
    )
    # A second prune finds nothing more: the newest run of a thread is never due.
    assert pruning.run_prune().events == 0


def test_dry_run_prints_per_kind_and_deletes_nothing() -> None:
    plan = lifecycle_scenario.build()
    before = lifecycle_scenario.state()
    out = io.StringIO()
    call_command("prune", "--dry-run", stdout=out)
    text = out.getvalue()
    assert "dry run, nothing is deleted" in text
    assert f"events: {plan['pruned_events']} (of {len(plan['pruned_runs'])} finished runs)" in text
    assert f"runs: {len(plan['pruned_runs'])} " in text
    assert "connections: 3 (with 9 state log rows)" in text
    assert lifecycle_scenario.state() == before
    assert not PruneRecord.objects.exists()
    out = io.StringIO()
    call_command("prune", stdout=out)
    assert f"deleted: events: {plan['pruned_events']} (of 4 runs)" in out.getvalue()


def test_batch_size_is_honoured_and_no_batch_splits_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = lifecycle_scenario.build()
    batch_size = 7  # runs of 6 and 8 events: the one of 8 goes alone
    deleted_batches: list[list[str]] = []
    real = pruning.delete_runs_batch

    def spy(run_ids: list[Any]) -> int:
        deleted_batches.append([str(r) for r in run_ids])
        return real(run_ids)

    monkeypatch.setattr(pruning, "delete_runs_batch", spy)
    with CaptureQueriesContext(connection) as queries:
        report = pruning.run_prune(batch_size=batch_size)
    event_batches = [rows for kind, rows, _ in report.batches if kind == "events"]
    sizes = dict(zip(plan["pruned_runs"], (6, 8, 6, 4), strict=True))
    for run_ids, rows in zip(deleted_batches, event_batches, strict=True):
        assert rows == sum(sizes[r] for r in run_ids)
        assert rows <= batch_size or len(run_ids) == 1
    assert len(deleted_batches) >= math.ceil(plan["pruned_events"] / batch_size)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert sum('FROM "chat_event"' in sql for sql in deletes) == len(deleted_batches)
    assert sorted(r for batch in deleted_batches for r in batch) == sorted(plan["pruned_runs"])


def test_connection_batches_are_bounded(settings: Any) -> None:
    settings.EVENT_RETENTION_DAYS = 0
    for _ in range(5):
        lifecycle_scenario.make_connection(age=lifecycle_scenario.OLD)
    report = pruning.run_prune(batch_size=2)
    assert report.connections == 5
    # Two connections with their 6 state log rows per batch, then the last one with its 3.
    assert [(kind, rows) for kind, rows, _ in report.batches] == [
        ("connections", 8),
        ("connections", 8),
        ("connections", 4),
    ]


def test_retention_zero_keeps_everything(settings: Any) -> None:
    settings.EVENT_RETENTION_DAYS = 0
    settings.CONNECTION_LOG_RETENTION_DAYS = 0
    lifecycle_scenario.build()
    before = lifecycle_scenario.state()
    assert pruning.prune_plan().events == 0
    report = pruning.run_prune()
    assert (report.events, report.connections) == (0, 0)
    assert lifecycle_scenario.state() == before


def test_a_scheduled_prune_runs_once_per_interval_over_the_cluster() -> None:
    now = timezone.now()
    assert pruning.prune_claim(now=now) is not None
    assert pruning.prune_claim(now=now) is None  # another process, same interval
    assert pruning.prune_claim(now=now + timedelta(days=1)) is not None


PG_SCRIPT = """
import json
from chat import pruning
from tests import lifecycle_scenario
plan = lifecycle_scenario.build()
dry = pruning.prune_plan()
report = pruning.run_prune(batch_size=7)
print(json.dumps({"plan": plan, "dry": [dry.runs, dry.events, dry.connections],
                  "report": [report.runs, report.events, report.connections],
                  "batches": [rows for kind, rows, _ in report.batches if kind == "events"],
                  "after": lifecycle_scenario.state()}))
"""


@pytest.mark.postgres
def test_prune_on_postgresql() -> None:
    require_postgres()
    with postgres_database() as url:
        out = subprocess.run(
            [PYTHON, "manage.py", "shell", "-c", PG_SCRIPT],
            cwd=ROOT,
            env=base_env(DATABASE_URL=url),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    plan = result["plan"]
    expected = [len(plan["pruned_runs"]), plan["pruned_events"], 3]
    assert result["dry"] == expected
    assert result["report"] == expected
    assert_pruned_as_planned(plan, result["after"])
    assert sorted(result["batches"]) == [4, 6, 6, 8]  # batch size 7: each run alone


def test_event_log_sizes_after_prune_keep_seq_numbering() -> None:
    """Pruning deletes rows only: the thread's last_seq and the kept seqs do not move."""
    plan = lifecycle_scenario.build()
    kept_seqs = sorted(
        Event.objects.filter(run_id__in=plan["kept_runs"]).values_list("thread_id", "seq")
    )
    pruning.run_prune()
    assert sorted(Event.objects.values_list("thread_id", "seq")) == kept_seqs


async def test_housekeeping_prunes_once_per_interval_in_its_own_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from channels.db import database_sync_to_async

    from chat import housekeeping

    # Another test's housekeeping sweep in this process may have tried this interval.
    monkeypatch.setattr(housekeeping, "_prune_slot", None)
    monkeypatch.setattr(housekeeping, "_prune_task", None)
    plan = await database_sync_to_async(lifecycle_scenario.build)()
    task = housekeeping.maybe_prune()
    assert task is not None
    await task
    assert housekeeping.maybe_prune() is None  # this interval is done in this process
    records = await database_sync_to_async(list)(PruneRecord.objects.all())
    assert [(r.trigger, r.events, r.error) for r in records] == [
        ("scheduled", plan["pruned_events"], "")
    ]
    assert_pruned_as_planned(plan, await database_sync_to_async(lifecycle_scenario.state)())
    await housekeeping.stop()


def test_operations_page_shows_table_sizes_and_the_last_prune() -> None:
    from django.test import Client

    from tests import helpers

    lifecycle_scenario.build()
    pruning.run_prune()
    staff = helpers.make_user("ops-staff")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    html = client.get("/admin/ops/").content.decode()
    assert "Tables and the last prune" in html
    assert f"<td>chat_event</td><td>{Event.objects.count()}</td>" in html
    assert "Last prune (command)" in html and "24 events of 4 runs, 3 connections" in html
