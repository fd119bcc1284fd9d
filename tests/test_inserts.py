"""The hot paths' rows written with SQL compiled once (chat/inserts.py, the run's end in
agents/services.py): the same rows the ORM's create and update left, on SQLite in-process
and on PostgreSQL (native UUIDs and timestamps there) in a subprocess; a project's own
save receivers still see every row."""

import uuid
from typing import Any

import pytest
from django.db.models.signals import post_save, pre_save

from agents import services
from agents.models import AgentRun, RunAttempt
from chat.events import events_after
from chat.inserts import PreparedInsert
from chat.models import Message
from tests import helpers
from tests.cluster import check_on_postgresql

pytestmark = [pytest.mark.django_db(transaction=True)]


def rows_check() -> dict[str, Any]:
    """A question submitted and answered, a retry, a second finish refused: what is stored."""
    owner = helpers.make_user(f"owner-{uuid.uuid4().hex[:6]}")
    thread = helpers.make_thread(owner, agent="builtin")
    result, new = services.run_create(
        thread_id=thread.id, user=owner, text="q", client_msg_id="c1", worker_id="w1"
    )
    assert new is not None
    run = AgentRun.objects.select_related("message").get(pk=result.run_id)
    attempt = RunAttempt.objects.get(run=run)
    started = events_after(thread_id=thread.id, after_seq=0)
    services.run_mark_finished(spec=new.spec, worker_id="w1", status="completed", text="a")
    try:
        services.run_mark_finished(spec=new.spec, worker_id="w1", status="failed", text="b")
    except services.RunOwnershipLostError:
        refused = True
    else:
        refused = False
    retry, again = services.run_create(
        thread_id=thread.id, user=owner, text="q", client_msg_id="c1", worker_id="w1"
    )
    finished = AgentRun.objects.get(pk=run.pk)
    answer = Message.objects.get(pk=new.spec.assistant_message_id)
    return {
        "message": [run.message.role, run.message.text, run.message.client_msg_id],
        "message_run": run.message.run_id == run.id == new.spec.run_id,
        "message_ids": run.message_id == result.message_id == new.spec.message_id,
        "run": [run.agent, run.status, run.worker_id, run.attempt, run.resumes, run.released],
        "run_owner": run.user_id == owner.pk and run.thread_id == thread.id,
        "run_times": run.started_at == run.heartbeat_at == run.created_at is not None
        and run.finished_at is None
        and run.message.created_at is not None,
        "run_flags": [run.cancel_requested, run.error_code, run.error_message],
        "assistant_id": run.assistant_message_id == new.spec.assistant_message_id,
        "attempt": [attempt.number, attempt.worker_id, attempt.reason],
        "started": [(e["type"], e["seq"], e["data"]["message_id"]) for e in started]
        == [("agent_started", 1, str(result.message_id))],
        "finished": [finished.status, finished.finished_at is not None, finished.error_code],
        "answer": [answer.role, answer.text, answer.run_id == run.id, answer.client_msg_id],
        "second_finish_refused": refused,
        "retry": [retry.duplicate, retry.run_id == result.run_id, again is None],
        "messages": Message.objects.filter(thread=thread).count(),
    }


EXPECTED = {
    "message": ["user", "q", "c1"],
    "message_run": True,
    "message_ids": True,
    "run": ["builtin", "running", "w1", 1, 0, False],
    "run_owner": True,
    "run_times": True,
    "run_flags": [False, "", ""],
    "assistant_id": True,
    "attempt": [1, "w1", "submitted"],
    "started": True,
    "finished": ["completed", True, ""],
    "answer": ["assistant", "a", True, None],
    "second_finish_refused": True,
    "retry": [True, True, True],
    "messages": 2,
}


def test_a_submit_and_its_answer_store_the_rows_on_sqlite() -> None:
    assert rows_check() == EXPECTED


def test_a_submit_and_its_answer_store_the_rows_on_postgresql() -> None:
    assert check_on_postgresql("tests.test_inserts", "rows_check") == EXPECTED


def test_a_row_gets_the_fields_defaults_and_its_columns_are_checked() -> None:
    thread = helpers.make_thread(helpers.make_user("defaults"))
    row = PreparedInsert(Message).insert(thread_id=thread.id, role="user", text="hi")
    stored = Message.objects.get(pk=row["id"])
    assert isinstance(row["id"], uuid.UUID)
    assert [stored.text, stored.client_msg_id, stored.run_id] == ["hi", None, None]
    assert stored.created_at == row["created_at"]
    with pytest.raises(TypeError, match=r"Message has no column \['colour'\]"):
        PreparedInsert(Message).insert(thread_id=thread.id, role="user", text="x", colour=1)


def test_a_projects_save_receiver_still_sees_every_row() -> None:
    seen: list[tuple[str, bool]] = []

    def receiver(sender: Any, instance: Message, created: bool, **kwargs: Any) -> None:
        seen.append((instance.text, created))

    owner = helpers.make_user("receiver")
    thread = helpers.make_thread(owner, agent="builtin")
    post_save.connect(receiver, sender=Message, dispatch_uid="test-inserts")
    try:
        _, new = services.run_create(
            thread_id=thread.id, user=owner, text="q", client_msg_id="c", worker_id="w"
        )
        assert new is not None
        services.run_mark_finished(spec=new.spec, worker_id="w", status="completed", text="a")
    finally:
        post_save.disconnect(dispatch_uid="test-inserts", sender=Message)
    assert seen == [("q", True), ("a", True)]
    assert Message.objects.filter(thread=thread).count() == 2


def test_with_a_receiver_the_row_returned_is_the_row_saved() -> None:
    def shout(sender: Any, instance: Message, **kwargs: Any) -> None:
        instance.text = instance.text.upper()

    thread = helpers.make_thread(helpers.make_user("shout"))
    pre_save.connect(shout, sender=Message, dispatch_uid="test-inserts-shout")
    try:
        row = PreparedInsert(Message).insert(thread_id=thread.id, role="user", text="hi")
    finally:
        pre_save.disconnect(dispatch_uid="test-inserts-shout", sender=Message)
    assert row["text"] == Message.objects.get(pk=row["id"]).text == "HI"
