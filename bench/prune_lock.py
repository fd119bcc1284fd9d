"""How long the prune holds its locks on a big event log, with a writer appending meanwhile.

`python -m bench.prune_lock [--events 1000000] [--batch-size 2000]` creates a scratch
PostgreSQL database (POSTGRES_URL, default the local server), fills it with old finished
runs (20 events each, 50 runs per thread; each thread's newest run must stay), then runs
`chat.pruning.run_prune` while a writer thread appends events to the same table and to
the threads being pruned. Each prune batch is one DELETE statement in its own transaction,
so the time of a batch is the longest any row lock of the prune is held. It prints the
batch times and the writer's append latency during the prune and before it.
"""

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
EVENTS_PER_RUN = 20
RUNS_PER_THREAD = 50

FILL = """
INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,
                       is_staff, is_active, date_joined)
VALUES ('!', false, 'bench-prune', '', '', '', false, true, now());
INSERT INTO chat_thread (id, owner_id, title, created_at, last_activity, last_seq, is_probe)
SELECT md5('t' || t)::uuid, (SELECT id FROM auth_user WHERE username = 'bench-prune'),
       'bench', now(), now(), {last_seq}, false
FROM generate_series(1, {threads}) AS t;
INSERT INTO chat_event (thread_id, seq, run_id, type, data, created_at)
SELECT md5('t' || t)::uuid, r * {per_run} + i + 1, md5(t || '-' || r)::uuid,
       CASE WHEN i = 0 THEN 'agent_started' WHEN i = {last} THEN 'agent_completed'
            ELSE 'agent_thinking' END,
       jsonb_build_object('text', 'step ' || i, 'step', i),
       now() - interval '45 days' + r * interval '1 minute'
FROM generate_series(1, {threads}) AS t, generate_series(0, {runs} - 1) AS r,
     generate_series(0, {last}) AS i;
ANALYZE chat_event;
"""


def _url(name: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


def create_database(events: int) -> tuple[str, str]:
    """A migrated scratch database holding `events` old events; returns (name, URL)."""
    name = f"netra_bench_prune_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _url(name)
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "1"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    threads = max(1, events // (EVENTS_PER_RUN * RUNS_PER_THREAD))
    statement = FILL.format(
        threads=threads,
        runs=RUNS_PER_THREAD,
        per_run=EVENTS_PER_RUN,
        last=EVENTS_PER_RUN - 1,
        last_seq=RUNS_PER_THREAD * EVENTS_PER_RUN,
    )
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for part in statement.split(";"):
            if part.strip():
                conn.execute(part)
        count = conn.execute("SELECT count(*) FROM chat_event").fetchone()
    print(f"filled {count[0] if count else 0} events in {time.monotonic() - began:.1f} s")
    return name, url


def drop_database(name: str) -> None:
    """Drops the scratch database."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class Writer(threading.Thread):
    """Appends events, one by one, to a pruned thread; records each append's latency."""

    def __init__(self, thread_id: uuid.UUID) -> None:
        super().__init__(daemon=True)
        self.thread_id = thread_id
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        """Appends until stopped."""
        from django.db import connection

        from chat.events import event_append

        run_id = uuid.uuid4()
        step = 0
        while not self.stop.is_set():
            began = time.monotonic()
            event_append(
                thread_id=self.thread_id,
                run_id=run_id,
                type="agent_thinking",
                data={"text": "live", "step": step},
            )
            self.latencies.append((began, time.monotonic() - began))
            step += 1
            time.sleep(0.005)
        connection.close()


def summary(values: list[float]) -> str:
    """Median, 99th percentile and maximum in milliseconds."""
    if not values:
        return "none"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms (n={len(ordered)})"
    )


def measure(url: str, batch_size: int) -> dict[str, Any]:
    """Runs the prune with a writer going; returns the figures."""
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netra_site.settings")
    os.environ.setdefault("DEBUG", "1")
    import django

    django.setup()
    from chat import pruning

    writer = Writer(uuid.UUID(bytes=bytes.fromhex(_md5("t1"))))
    writer.start()
    time.sleep(2.0)
    began = time.monotonic()
    report = pruning.run_prune(batch_size=batch_size)
    took = time.monotonic() - began
    time.sleep(1.0)
    writer.stop.set()
    writer.join()
    before = [s for t, s in writer.latencies if t < began]
    during = [s for t, s in writer.latencies if began <= t < began + took]
    batch_seconds = [seconds for _, _, seconds in report.batches]
    return {
        "pruned": f"{report.events} events of {report.runs} runs in {len(report.batches)} "
        f"batches in {took:.1f} s",
        "batch (lock held)": summary(batch_seconds),
        "append before": summary(before),
        "append during": summary(during),
    }


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the fill's ids, not security


def main() -> None:
    """Parses the options, runs the measurement, prints it, drops the database."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch database.")
    options = parser.parse_args()
    name, url = create_database(options.events)
    try:
        for label, value in measure(url, options.batch_size).items():
            print(f"{label}: {value}")
    finally:
        if not options.keep:
            drop_database(name)


if __name__ == "__main__":
    main()
