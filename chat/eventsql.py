"""The event log's SQL statements, which chat/events.py runs.

PostgreSQL takes a thread's next seq and inserts the event in one statement (a row lock on
the thread orders concurrent emitters across processes). SQLite, which serialises writers,
takes a block of seqs for one thread (`SEQ_BLOCK`: k events, one UPDATE) and then inserts
the block's rows (`INSERT`, once per row, in one executemany). The fenced variants also
check, in the same statement, that the run is still active at the writer's attempt.
"""

import functools

from django.apps import apps

from chat.models import Event, Thread

THREAD = Thread._meta.db_table
EVENT = Event._meta.db_table
ACTIVE = "('queued', 'running')"

PG_APPEND = (
    f"WITH s AS (UPDATE {THREAD} SET last_seq = last_seq + 1, last_activity = %s "  # noqa: S608
    f"WHERE id = %s RETURNING last_seq) "
    f"INSERT INTO {EVENT} (thread_id, seq, run_id, type, data, created_at) "
    f"SELECT %s, s.last_seq, %s, %s, %s, %s FROM s RETURNING seq"
)
# Parameters: the block's size k, its last event's time, the thread. Returns the block's
# last seq; its events take the k seqs up to it, in order.
SEQ_BLOCK = (
    f"UPDATE {THREAD} SET last_seq = last_seq + %s, last_activity = %s "  # noqa: S608
    f"WHERE id = %s RETURNING last_seq"
)
INSERT = (
    f"INSERT INTO {EVENT} (thread_id, seq, run_id, type, data, created_at) "  # noqa: S608
    f"VALUES (%s, %s, %s, %s, %s, %s)"
)
THREAD_EXISTS = f"SELECT 1 FROM {THREAD} WHERE id = %s"  # noqa: S608


@functools.cache
def fenced_statements() -> tuple[str, str]:
    """The PostgreSQL append and the SQLite seq block that also check the run's attempt
    (parameters after the plain statement's: the run, the attempt); the runs table is the
    agents app's, looked up once, lazily."""
    run_table = apps.get_model("agents", "AgentRun")._meta.db_table
    check = f"SELECT 1 FROM {run_table} WHERE id = %s AND attempt = %s AND status IN {ACTIVE}"  # noqa: S608
    pg = (
        f"WITH r AS ({check} FOR SHARE), "  # noqa: S608
        f"s AS (UPDATE {THREAD} SET last_seq = last_seq + 1, last_activity = %s "
        f"WHERE id = %s AND EXISTS (SELECT 1 FROM r) RETURNING last_seq) "
        f"INSERT INTO {EVENT} (thread_id, seq, run_id, type, data, created_at) "
        f"SELECT %s, s.last_seq, %s, %s, %s, %s FROM s RETURNING seq"
    )
    sqlite = (
        f"UPDATE {THREAD} SET last_seq = last_seq + %s, last_activity = %s "  # noqa: S608
        f"WHERE id = %s AND EXISTS ({check}) RETURNING last_seq"
    )
    return pg, sqlite
