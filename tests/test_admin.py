"""The admin shows the append-only records (event log, runs, connection state log) read-only:
no add, change or delete, no bulk delete, and a POST changes nothing."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import models
from django.test import Client
from django.utils import timezone

from agents.models import AgentRun, Approval
from chat.models import Connection, ConnectionStateLog, Event, Message
from tests import helpers

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def superuser_client(django_user_model: Any) -> Client:
    """A client logged in as a superuser, who holds every model permission."""
    admin = django_user_model.objects.create_superuser(username="root", password="pw-Root-123")
    client = Client()
    client.force_login(admin)
    return client


def make_records() -> dict[str, models.Model]:
    """One run with one event, and one connection with one state log row."""
    user = helpers.make_user("alice")
    thread = helpers.make_thread(user)
    message = Message.objects.create(thread=thread, role=Message.Role.USER, text="hi")
    run = AgentRun.objects.create(thread=thread, user=user, message=message, agent="builtin")
    event = Event.objects.create(
        thread=thread,
        seq=1,
        run_id=run.id,
        type="agent_started",
        data={},
        created_at=timezone.now(),
    )
    connection = Connection.objects.create(user=user, thread=thread, state="CLOSED")
    ConnectionStateLog.objects.create(
        connection=connection, from_state="CLOSING", to_state="CLOSED", reason="bye"
    )
    approval = Approval.objects.create(
        run=run,
        tool_call_id="call_1",
        tool="send_note",
        args={"text": "hi"},
        reason="Send this note?",
        created_at=timezone.now() - timedelta(minutes=7),
        expires_at=timezone.now() + timedelta(hours=1),
    )
    return {"event": event, "agentrun": run, "connection": connection, "approval": approval}


READ_ONLY = [
    ("chat", "event"),
    ("agents", "agentrun"),
    ("chat", "connection"),
    ("agents", "approval"),
]


def test_the_approvals_list_shows_pending_ones_with_run_user_and_age(
    superuser_client: Client,
) -> None:
    records = make_records()
    run = records["agentrun"]
    assert isinstance(run, AgentRun)
    Approval.objects.create(
        run=run,
        tool_call_id="call_0",
        tool="send_note",
        args={},
        reason="answered long ago",
        expires_at=timezone.now(),
        decision="approved",
    )
    page = superuser_client.get("/admin/agents/approval/")
    assert page.status_code == 200
    text = page.content.decode()
    assert text.index("Send this note?") < text.index("answered long ago"), "pending first"
    assert "alice" in text and "7\xa0minutes" in text and str(run)[:12] in text
    pending = superuser_client.get("/admin/agents/approval/?decision__isnull=True")
    assert "answered long ago" not in pending.content.decode()


@pytest.mark.parametrize(("app", "model"), READ_ONLY)
def test_append_only_records_cannot_be_added(
    superuser_client: Client, app: str, model: str
) -> None:
    make_records()
    url = f"/admin/{app}/{model}/add/"
    assert superuser_client.get(url).status_code == 403
    assert superuser_client.post(url, {}).status_code == 403


@pytest.mark.parametrize(("app", "model"), READ_ONLY)
def test_append_only_records_cannot_be_deleted(
    superuser_client: Client, app: str, model: str
) -> None:
    record = make_records()[model]
    url = f"/admin/{app}/{model}/{record.pk}/delete/"
    assert superuser_client.get(url).status_code == 403
    assert superuser_client.post(url, {"post": "yes"}).status_code == 403
    assert type(record)._default_manager.filter(pk=record.pk).exists()
    assert ConnectionStateLog.objects.count() == 1
    assert Event.objects.count() == 1


@pytest.mark.parametrize(("app", "model"), READ_ONLY)
def test_append_only_records_have_no_bulk_delete(
    superuser_client: Client, app: str, model: str
) -> None:
    record = make_records()[model]
    url = f"/admin/{app}/{model}/"
    page = superuser_client.get(url)
    assert page.status_code == 200
    assert b"delete_selected" not in page.content
    superuser_client.post(
        url, {"action": "delete_selected", "_selected_action": [str(record.pk)], "post": "yes"}
    )
    assert type(record)._default_manager.filter(pk=record.pk).exists()
    assert ConnectionStateLog.objects.count() == 1
    assert Event.objects.count() == 1


@pytest.mark.parametrize(("app", "model"), READ_ONLY)
def test_append_only_records_are_shown_but_not_editable(
    superuser_client: Client, app: str, model: str
) -> None:
    record = make_records()[model]
    url = f"/admin/{app}/{model}/{record.pk}/change/"
    page = superuser_client.get(url)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert page.context["has_delete_permission"] is False
    assert b'name="_save"' not in page.content
    assert b"-DELETE" not in page.content  # no inline row can be marked for deletion
    before = {f.name: getattr(record, f.attname) for f in record._meta.concrete_fields}
    answer = superuser_client.post(url, {"state": "CONNECTED", "status": "queued", "seq": "9"})
    assert answer.status_code == 403
    record.refresh_from_db()
    assert {f.name: getattr(record, f.attname) for f in record._meta.concrete_fields} == before
