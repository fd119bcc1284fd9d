"""The submit's own reads (agents/selectors.py, written in SQL): the thread's agent for its
owner only, and the history a run is given, oldest first, without its own message. Checked
on SQLite in-process and on PostgreSQL (UUIDs as native values there) in a subprocess. And
where a submit runs (chat/dbthread.py): side by side on PostgreSQL, on the database thread
on SQLite."""

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import pytest

from agents import services
from agents.models import AgentRun
from chat import dbthread
from chat.errors import NetraError
from tests import helpers
from tests.cluster import check_on_postgresql

pytestmark = [pytest.mark.django_db(transaction=True)]


def _refusal(**kwargs: Any) -> str:
    try:
        services.run_create(text="x", worker_id="w", client_msg_id=uuid.uuid4().hex, **kwargs)
    except NetraError as err:
        return err.code
    return "accepted"


def submit_check() -> dict[str, Any]:
    """Three questions in turn on one thread (each answered), then who may submit."""
    owner = helpers.make_user(f"owner-{uuid.uuid4().hex[:6]}")
    other = helpers.make_user(f"other-{uuid.uuid4().hex[:6]}")
    thread = helpers.make_thread(owner, agent="builtin")
    histories: list[list[list[str]]] = []
    for n in range(3):
        _, new = services.run_create(
            thread_id=thread.id, user=owner, text=f"q{n}", client_msg_id=f"c{n}", worker_id="w"
        )
        assert new is not None
        histories.append([[m["role"], m["text"]] for m in new.history])
        services.run_mark_finished(spec=new.spec, worker_id="w", status="completed", text=f"a{n}")
    retry, again = services.run_create(
        thread_id=thread.id, user=owner, text="q0", client_msg_id="c0", worker_id="w"
    )
    return {
        "agent": AgentRun.objects.filter(thread=thread).values_list("agent", flat=True).first(),
        "histories": histories,
        "retry": [retry.duplicate, again is None],
        "other_user": _refusal(thread_id=thread.id, user=other),
        "as_probe": _refusal(thread_id=thread.id, user=owner, probe=True),
        "no_thread": _refusal(thread_id=uuid.uuid4(), user=owner),
    }


EXPECTED = {
    "agent": "builtin",
    "histories": [
        [],
        [["user", "q0"], ["assistant", "a0"]],
        [["user", "q0"], ["assistant", "a0"], ["user", "q1"], ["assistant", "a1"]],
    ],
    "retry": [True, True],
    "other_user": "thread_not_found",
    "as_probe": "thread_not_found",
    "no_thread": "thread_not_found",
}


def test_the_submit_reads_its_thread_and_history() -> None:
    assert json.loads(json.dumps(submit_check())) == EXPECTED


@pytest.mark.postgres
def test_the_submit_reads_its_thread_and_history_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_submit_reads", "submit_check") == EXPECTED


def side_by_side_check() -> dict[str, Any]:
    """Two submits of two threads, each waiting in the database until the other is there
    too: they meet only if they run at once (else the barrier breaks after 5 s)."""
    owner = helpers.make_user(f"pair-{uuid.uuid4().hex[:6]}")
    threads = [helpers.make_thread(owner, agent="builtin") for _ in range(2)]
    barrier = threading.Barrier(2, timeout=5)
    met: list[str] = []

    def meeting(**kwargs: Any) -> Any:
        try:
            barrier.wait()
            met.append(threading.current_thread().name)
        except threading.BrokenBarrierError:
            met.append("alone")
        return services.run_create(**kwargs)

    async def submit_both() -> list[bool]:
        submit = dbthread.on_submit_thread(meeting)
        answers = await asyncio.gather(
            *(
                submit(thread_id=t.id, user=owner, text="hi", client_msg_id="c", worker_id="w")
                for t in threads
            )
        )
        return [answer.duplicate for answer, _ in answers]

    duplicates = asyncio.run(submit_both())
    return {"met": sorted(name.split("_")[0] for name in met), "duplicates": duplicates}


@pytest.mark.postgres
def test_submits_run_side_by_side_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_submit_reads", "side_by_side_check") == {
        "met": ["netra-submit", "netra-submit"],
        "duplicates": [False, False],
    }


async def test_on_sqlite_a_submit_stays_on_the_database_thread(user: Any) -> None:
    """SQLite takes one writer at a time: the submit runs where the log writer does."""

    def where() -> str:
        return threading.current_thread().name

    assert await dbthread.on_submit_thread(where)() == await dbthread.on_database_thread(where)()


@pytest.mark.parametrize(("max_age", "closed"), [(60, True), (0, False)])
def test_a_hot_path_connection_past_its_max_age_is_closed(
    max_age: int, closed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep_usable closes a connection past a positive CONN_MAX_AGE before the next call;
    with 0 (Django's close after each request) it keeps it, as the log writer always did.
    (The suite's in-memory SQLite ignores a close, so the close itself is recorded.)"""
    from django.db import connections

    wrapper = connections["default"]
    wrapper.ensure_connection()
    closes: list[bool] = []
    monkeypatch.setattr(wrapper, "close", lambda: closes.append(True))
    monkeypatch.setitem(wrapper.settings_dict, "CONN_MAX_AGE", max_age)
    monkeypatch.setattr(wrapper, "close_at", time.monotonic() - 1)
    dbthread.keep_usable()
    assert bool(closes) is closed
