"""The floor under a turn's writes: `python -m bench.floor` (SQLite, about 10 seconds).

A turn of the bench's question must leave in the database what netra-chat promises to keep:
the user's message, its run and first attempt, the nine events with their seqs, the run's
end and the answer. This times those writes as the server makes them (agents/services.py,
chat/events.py, in three batches as the pipeline commits them), then runs the very SQL
statements of one such turn, captured, through the bare sqlite3 module on fresh threads:
no ORM, no Django cursor, the same rows, indexes and commits. What is left is the cost of
the writes themselves, which no change short of writing less can take away.
"""

import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

TURNS = 400
QUESTION = "what is 12*7 and 2**10"
ANSWER = "12*7 is 84 and 2**10 is 1024."


def main() -> None:
    """Prints the writes' cost per turn, ours and the floor, in microseconds."""
    workdir = Path(tempfile.mkdtemp(prefix="netra-floor-"))
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'floor.sqlite3'}"
    os.environ["WS_RATE_MESSAGES_PER_MINUTE"] = "0"  # as in the bench: B has no rate check
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "netra_site.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    ours, statements = _ours()
    floor = _floor(statements, workdir / "floor.sqlite3")
    print(f"writes of one turn: {len(statements)} statements")
    print(f"as the server makes them (ORM and chat/events.py): {ours:,.0f} us a turn")
    print(f"the same statements through bare sqlite3:           {floor:,.0f} us a turn")


# A captured statement: its SQL with the values inlined, or an executemany's SQL (with
# SQLite's placeholders) and its parameter lists.
Statement = str | tuple[str, list[list[Any]]]


def _ours() -> tuple[float, list[Statement]]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents import services
    from chat.events import PendingEvent, event_append_many
    from chat.models import Thread

    user = get_user_model().objects.create_user(username="floor")  # no password: no login
    threads = Thread.objects.bulk_create(Thread(owner=user) for _ in range(TURNS + 51))

    def turn(thread: Any) -> None:
        _, new = services.run_create(
            thread_id=thread.id, user=user, text=QUESTION, client_msg_id="q", worker_id="w"
        )
        assert new is not None
        spec = new.spec

        def event(type: str, data: dict[str, Any], then: Any = None) -> PendingEvent:
            return PendingEvent(spec.thread_id, spec.run_id, type, data, then)

        def call(n: str, expression: str) -> PendingEvent:
            args = {"expression": expression}
            return event("tool_executing", {"tool_call_id": n, "tool": "calculator", "args": args})

        def done(n: str, result: int) -> PendingEvent:
            data = {"tool_call_id": n, "tool": "calculator", "status": "ok", "result": result}
            return event("tool_completed", {**data, "duration_ms": 0})

        def finish() -> None:
            services.run_mark_finished(spec=spec, worker_id="w", status="completed", text=ANSWER)

        message = str(spec.assistant_message_id)
        completed = {"status": "completed", "message_id": message, "text": ANSWER}
        event_append_many([event("agent_thinking", {"text": "x", "step": 1}), call("a", "12*7")])
        event_append_many([done("a", 84), call("b", "2**10")])
        event_append_many(
            [
                done("b", 1024),
                event("partial_result", {"message_id": message, "text": ANSWER}),
                event("agent_completed", {**completed, "duration_ms": 1}, finish),
            ]
        )

    for thread in threads[:50]:  # warm
        turn(thread)
    start = time.perf_counter()
    for thread in threads[50:-1]:
        turn(thread)
    ours = (time.perf_counter() - start) / TURNS * 1e6
    many: list[tuple[str, list[Any]]] = []

    def record_many(execute: Any, sql: str, params: Any, is_many: bool, context: Any) -> Any:
        if is_many:
            many.append((sql.replace("%s", "?"), [list(p) for p in params]))
        return execute(sql, params, is_many, context)

    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(record_many):
        turn(threads[-1])
    # An executemany is captured as "N times: <its last statement>": the floor runs the
    # statement with each of its parameter lists instead.
    manies = iter(many)
    statements: list[Statement] = [
        next(manies) if " times: " in q["sql"].split("(")[0] else q["sql"]
        for q in captured.captured_queries
    ]
    connection.close()
    return ours, statements


def _floor(statements: list[Statement], path: Path) -> float:
    """Runs the captured turn's statements on fresh threads through sqlite3 itself (the
    captured SQL has its values inlined, an executemany its parameter lists; the ids of the
    thread, run and messages are replaced for each turn, so every row is new and every
    constraint is checked)."""
    from agents.models import AgentRun
    from chat.models import Thread

    run = AgentRun.objects.order_by("-created_at").first()
    assert run is not None
    ids = [run.thread_id.hex, run.id.hex, run.message_id.hex, run.assistant_message_id.hex]
    owner = run.user_id
    fresh = Thread.objects.bulk_create(Thread(owner_id=owner) for _ in range(TURNS))
    from django.db import connection

    connection.close()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    turns = []
    for thread in fresh:  # the turns' SQL, made before the clock starts
        new = [thread.id.hex, uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex]

        def fresh_ids(text: Any, new: list[str] = new) -> Any:
            if not isinstance(text, str):
                return text
            for old, replacement in zip(ids, new, strict=True):
                text = text.replace(old, replacement)
            return text

        turns.append(
            [
                fresh_ids(statement)
                if isinstance(statement, str)
                else (statement[0], [[fresh_ids(v) for v in row] for row in statement[1]])
                for statement in statements
            ]
        )
    start = time.perf_counter()
    for sql in turns:
        for statement in sql:
            if isinstance(statement, str):
                raw.execute(statement).fetchall()
            else:
                raw.executemany(*statement)
    floor = (time.perf_counter() - start) / TURNS * 1e6
    raw.close()
    return floor


if __name__ == "__main__":
    main()
